"""Validation benchmark for sip-fhir: the write path's `Validator.validate()` in-process.

The validator is the one the server builds: R4 plus the profiles in `profiles/` (a SIP
CarePlan is checked against the SIP CarePlan profile, as on a real write).

Validates N realistic resources (`benchmarks.dataset.mixed_resources` plus the SIP example
case in examples/sip-case) in one process, no HTTP, and prints:

- the import time, and the table build (`structure.warm_up()`) timed in a fresh subprocess;
- the cold pass (first pass in this process: table build and lazy invariant compilation
  included) and the best of two warm passes, as resources/s per core (CPU time) and wall;
- the mean CPU µs per resource type, cold and warm, and the error/warning issues found;
- the write-path overhead: validate() against parsing + serialising the same resource
  (`fhirjson.loads_resource(bytes)` + `fhirjson.dumps(resource)`), mean CPU µs each.

    .venv/bin/python benchmarks/validate.py [--n 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `fhir_server` importable
    sys.path.insert(0, str(ROOT))

EXAMPLES = ROOT / "examples" / "sip-case"
WARM_PASSES = 2


def clocks() -> tuple[float, float]:
    """(CPU, wall) now, in seconds."""
    return time.process_time(), time.perf_counter()


def since(start: tuple[float, float]) -> tuple[float, float]:
    cpu, wall = clocks()
    return cpu - start[0], wall - start[1]


def warm_up_child() -> None:
    """Run in a fresh interpreter: time the import and the table build alone, print JSON."""
    start = clocks()
    from fhir_server.validation import structure

    imported = since(start)
    start = clocks()
    structure.warm_up()
    built = since(start)
    print(json.dumps({"import": imported, "warm_up": built}))


def warm_up_in_fresh_process() -> dict[str, tuple[float, float]] | None:
    """Import and warm_up() times from a subprocess (this process builds tables in its pass)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--warm-up-only"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"warm-up subprocess failed: {done.stderr[-500:]}", file=sys.stderr)
        return None
    figures: dict[str, tuple[float, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


class CountingHandler(logging.Handler):
    """Counts the engine's log records (e.g. an invariant that could not be evaluated)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.getMessage()[:70]] += 1


def load_examples() -> list[bytes]:
    return [path.read_bytes() for path in sorted(EXAMPLES.glob("*.json"))]


def timed_pass(
    validate: Callable[[Any], list[Any]], resources: list[dict[str, Any]]
) -> tuple[float, float, dict[str, list[int]], Counter[tuple[str, str]], list[Any]]:
    """One validation pass in the given order: totals, per-type CPU ns, issue counts."""
    per_type: dict[str, list[int]] = defaultdict(list)
    issues: Counter[tuple[str, str]] = Counter()
    errors: list[Any] = []
    cpu_ns = time.process_time_ns
    start = clocks()
    for resource in resources:
        t0 = cpu_ns()
        found = validate(resource)
        per_type[resource["resourceType"]].append(cpu_ns() - t0)
        for issue in found:
            key = issue.diagnostics.split(":", 1)[0] if issue.code == "invariant" else issue.code
            if issue.code == "code-invalid":  # the message ends with "[Element.path]"
                key += " " + issue.diagnostics.rsplit(" ", 1)[-1]
            issues[(issue.severity, key)] += 1
            if issue.severity in ("error", "fatal") and len(errors) < 5:
                errors.append((resource["resourceType"], issue))
    cpu, wall = since(start)
    return cpu, wall, per_type, issues, errors


def batch_cpu(function: Callable[[Any], Any], items: list[Any], repeat: int = 3) -> float:
    """Best-of-`repeat` CPU seconds for calling `function` on every item."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for item in items:
            function(item)
        best = min(best, time.process_time() - start)
    return best


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    print(line(header), "-" * len(line(header)), *map(line, rows), sep="\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=10_000, help="resources in the set (default 10000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic data set")
    parser.add_argument("--warm-up-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warm_up_only:
        warm_up_child()
        return 0
    if args.n < 1:
        parser.error("--n must be positive")

    counter = CountingHandler()
    engine_log = logging.getLogger("fhir_server.validation")
    engine_log.addHandler(counter)
    engine_log.propagate = False

    start = clocks()
    from fhir_server import fhirjson
    from fhir_server.config import PROFILES_DIR
    from fhir_server.validation.validator import Validator

    validate = Validator.from_directories([PROFILES_DIR]).validate  # the write path's check
    import_time = since(start)

    from benchmarks.dataset import mixed_resources

    examples = load_examples()
    synthetic = [
        fhirjson.dumps(r) for r in mixed_resources(max(0, args.n - len(examples)), args.seed)
    ]
    bodies = (examples + synthetic)[: args.n]
    n_examples = min(len(examples), args.n)
    # Validate what the write path validates: the body as loads_resource parsed it.
    resources = [fhirjson.loads_resource(body) for body in bodies]
    n = len(resources)
    kinds = Counter(r["resourceType"] for r in resources)

    cold_cpu, cold_wall, cold_types, _, _ = timed_pass(validate, resources)
    warm: list[tuple[float, float, dict[str, list[int]]]] = []
    issues: Counter[tuple[str, str]] = Counter()
    errors: list[Any] = []
    for _ in range(WARM_PASSES):
        cpu, wall, per_type, issues, errors = timed_pass(validate, resources)
        warm.append((cpu, wall, per_type))
    warm_cpu, warm_wall, _ = min(warm, key=lambda w: w[0])
    fresh = warm_up_in_fresh_process()

    print(
        f"sip-fhir validation benchmark  n={n} ({n_examples} example files + "
        f"{n - n_examples} synthetic, seed={args.seed})  python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores"
    )
    print(f"import + Validator built from profiles/: {import_time[0] * 1000:.0f} ms CPU")
    if fresh:
        print(
            f"fresh process: import {fresh['import'][0] * 1000:.0f} ms CPU, "
            f"warm_up() (lookup tables) {fresh['warm_up'][0] * 1000:.0f} ms CPU "
            f"/ {fresh['warm_up'][1] * 1000:.0f} ms wall"
        )
    print()
    table(
        ["pass", "CPU s", "wall s", "resources/s per core (CPU)", "resources/s (wall)"],
        [
            [
                name,
                f"{cpu:.2f}",
                f"{wall:.2f}",
                f"{n / cpu:,.0f}",
                f"{n / wall:,.0f}",
            ]
            for name, cpu, wall in [
                ("cold (tables + lazy invariants)", cold_cpu, cold_wall),
                (f"warm (best of {WARM_PASSES})", warm_cpu, warm_wall),
            ]
        ],
    )
    print()

    # Per-type mean µs: cold pass, and the best warm pass for each type.
    rows = []
    for kind, count in kinds.most_common():
        cold_us = sum(cold_types[kind]) / count / 1000
        warm_us = min(sum(w[2][kind]) for w in warm) / count / 1000
        rows.append([kind, str(count), f"{cold_us:.1f}", f"{warm_us:.1f}"])
    table(["type", "count", "cold mean µs", "warm mean µs"], rows)
    print()

    n_errors = sum(c for (sev, _), c in issues.items() if sev in ("error", "fatal"))
    n_warnings = sum(c for (sev, _), c in issues.items() if sev == "warning")
    found = ", ".join(f"{sev} {key} x{c}" for (sev, key), c in issues.most_common())
    print(f"issues per pass: {n_errors} errors, {n_warnings} warnings ({found or 'none'})")
    for kind, issue in errors:
        print(f"  ERROR in {kind}: {issue.code} {issue.expression} {issue.diagnostics[:100]}")
    if counter.counts:
        logged = ", ".join(f"{k} x{c}" for k, c in counter.counts.most_common())
        print(f"engine log warnings (all passes): {logged}")
    print()

    # Write-path overhead: validate vs parse + serialise, grouped by type, best of 3.
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, resource in enumerate(resources):
        by_type[resource["resourceType"]].append(i)
    rows = []
    totals = [0.0, 0.0]
    for kind, _ in kinds.most_common():
        idx = by_type[kind]
        group_resources = [resources[i] for i in idx]
        group_bodies = [bodies[i] for i in idx]
        v = batch_cpu(validate, group_resources)
        pj = batch_cpu(fhirjson.loads_resource, group_bodies) + batch_cpu(
            fhirjson.dumps, group_resources
        )
        totals[0] += v
        totals[1] += pj
        count = len(idx)
        rows.append(
            [kind, str(count), f"{v / count * 1e6:.1f}", f"{pj / count * 1e6:.1f}", f"{v / pj:.1f}"]
        )
    rows.append(
        [
            "all",
            str(n),
            f"{totals[0] / n * 1e6:.1f}",
            f"{totals[1] / n * 1e6:.1f}",
            f"{totals[0] / totals[1]:.1f}",
        ]
    )
    print("write-path cost per resource (mean CPU µs, best of 3):")
    table(
        ["type", "count", "validate()", "loads_resource + dumps", "validate / (parse+dump)"], rows
    )
    return 1 if n_errors else 0


if __name__ == "__main__":
    sys.exit(main())

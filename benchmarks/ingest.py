"""Ingest benchmark: transaction Bundles of SIP cases into a real uvicorn server.

Each bundle is one discharge-to-SIP case of 20 entries that point at each other by
`urn:uuid:` fullUrls: a Patient and its care unit (conditional creates on personnummer and
HSA-id), an Encounter, a SIP CarePlan, four Goals, four Appointments and eight
Observations. The server validates every entry (R4 plus the SIP profiles), rewrites the
references and stores the bundle atomically. Reported: resources/s (wall), resources per
second of server CPU (the figure per core), and bundle latency p50/p95.

    .venv/bin/python benchmarks/ingest.py --bundles 1000 --concurrency 4
    .venv/bin/python benchmarks/ingest.py --without-process   # the SIP process's share

`--without-process` starts the same server with the SIP process switched off (no gates,
process state or obligations; only for measuring what they cost, not a server setting).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.crud import cpu_seconds, free_port, subprocess_server, wait_ready  # noqa: E402
from benchmarks.dataset import HSA, PNR, _Builder, link  # noqa: E402

HOST = "127.0.0.1"
ENTRIES = 20


def case_bundle(builder: _Builder) -> dict[str, Any]:
    """One SIP case as a transaction of ENTRIES entries."""
    patient = builder.patient()
    pnr = next(i["value"] for i in patient["identifier"] if i["system"] == PNR)
    unit = builder.organization()
    hsa = next(i["value"] for i in unit["identifier"] if i["system"] == HSA)
    patient_url, unit_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    resources = [
        builder.encounter(),
        builder.care_plan(),
        *(builder.goal() for _ in range(4)),
        *(builder.appointment() for _ in range(4)),
        *(builder.observation() for _ in range(7)),
        builder.sip_consent(),  # R-SIP-01: the active plans need it
    ]
    entries = [
        _entry(patient, patient_url, f"identifier={PNR}|{pnr}"),
        _entry(unit, unit_url, f"identifier={HSA}|{hsa}"),
    ]
    for resource in resources:
        linked = link(link(resource, "Patient", patient_url), "Organization", unit_url)
        entries.append(_entry(linked, f"urn:uuid:{uuid.uuid4()}"))
    assert len(entries) == ENTRIES
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _entry(resource: dict[str, Any], full_url: str, if_none_exist: str | None = None) -> dict:
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": full_url, "resource": resource, "request": request}


async def post_all(
    base_url: str, bundles: list[dict[str, Any]], concurrency: int
) -> tuple[list[float], list[str]]:
    """POST every bundle, `concurrency` at a time; bundle latencies (s) and failures."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for bundle in bundles:
        queue.put_nowait(bundle)
    latencies: list[float] = []
    failures: list[str] = []

    async def worker() -> None:
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        async with httpx.AsyncClient(timeout=120, headers=headers) as client:
            while not queue.empty():
                bundle = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post(base_url, json=bundle)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failures


async def bench(args: argparse.Namespace, work: Path) -> int:
    rng = random.Random(args.seed)
    builder = _Builder(rng)
    bundles = [case_bundle(builder) for _ in range(args.bundles + args.warmup)]
    port = free_port()
    base_url = f"http://{HOST}:{port}/fhir"
    db, log = work / "ingest.sqlite3", work / "server.log"
    command = [sys.executable, "-m", "fhir_server.cli", "serve", "--host", HOST]
    command += ["--port", str(port), "--db", str(db), "--log-level", "warning"]
    command += ["--workers", "1"]  # one process: CPU per resource is the figure
    env = dict(os.environ)
    if args.without_process:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(_without_process(work)), env.get("PYTHONPATH")])
        )
    with subprocess_server(command, env, log) as server:
        async with httpx.AsyncClient() as probe:
            await wait_ready(probe, f"{base_url}/metadata", server, log)
        await post_all(base_url, bundles[: args.warmup], args.concurrency)
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        latencies, failures = await post_all(base_url, bundles[args.warmup :], args.concurrency)
        wall = time.perf_counter() - started
        cpu_after = cpu_seconds(server.pid)
    resources = args.bundles * ENTRIES
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))] * 1000
    process = "without the SIP process" if args.without_process else "with the SIP process"
    print(f"sip-fhir ingest  bundles={args.bundles} x {ENTRIES} entries  "
          f"concurrency={args.concurrency}  SQLite, full validation (R4 + profiles/)")  # fmt: skip
    print(process)
    print(f"wall {wall:.1f} s: {resources / wall:,.0f} resources/s, "
          f"{args.bundles / wall:,.1f} bundles/s")  # fmt: skip
    if cpu_before is not None and cpu_after is not None:
        cpu = cpu_after - cpu_before
        print(f"server CPU {cpu:.1f} s: {resources / cpu:,.0f} resources per CPU second "
              f"({cpu / resources * 1000:.2f} ms per resource)")  # fmt: skip
    print(f"bundle latency p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    for failure in failures[:5]:
        print(f"FAILED {failure}")
    return 1 if failures else 0


def _without_process(work: Path) -> Path:
    """A `sitecustomize` that empties the process's resource types in the server process."""
    folder = work / "without-process"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import fhir_server.sip.process as process\nprocess.PROCESS_TYPES = frozenset()\n"
    )
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20, help="untimed bundles first")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--without-process", action="store_true", help="SIP process off")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        return asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())

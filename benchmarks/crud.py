"""CRUD benchmark for sip-fhir: a real uvicorn subprocess, loaded over loopback HTTP/1.1.

Creates N Patients, their SIP consents and N CarePlans (Swedish SIP content), then times N
reads and N updates, and compares read throughput with a bare uvicorn ASGI app serving one
stored Patient's exact bytes: that ratio shows what the server costs on top of uvicorn + this
client on this machine.

    .venv/bin/python benchmarks/crud.py --n 10000 --concurrency 32 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
FHIR_JSON = "application/fhir+json"
PNR = "http://electronichealth.se/identifier/personnummer"
SIP = {"system": "https://fhir.inera.se/CodeSystem/typeofcareplan-cs", "code": "SIP"}
# Name lists as split strings (noqa): a line each rather than a line per name once formatted.
FAMILY = "Andersson Johansson Karlsson Nilsson Eriksson Larsson Olsson Persson Öberg".split()  # noqa: SIM905
FAMILY += "Lundström Nordström Åström Holmgren Lindqvist Forsberg Wikström".split()  # noqa: SIM905
FEMALE = "Anna Eva Maria Karin Sara Elin Ingrid Astrid Linnea Märta Sofia Ebba".split()  # noqa: SIM905
MALE = "Lars Erik Johan Anders Nils Per Olof Gustav Sven Åke Karl Björn".split()  # noqa: SIM905
CITIES = {
    "Luleå": "972 31",
    "Piteå": "941 31",
    "Kiruna": "981 31",
    "Boden": "961 31",
    "Kalix": "952 31",
    "Gällivare": "982 31",
    "Haparanda": "953 31",
    "Älvsbyn": "942 31",
}
STREETS = "Storgatan Kungsgatan Smedjegatan Skeppsbrogatan Köpmangatan Prästgatan".split()  # noqa: SIM905
BASELINE_BODY, BASELINE_HEADERS = "BENCH_BASELINE_BODY", "BENCH_BASELINE_HEADERS"
BASELINE = "read baseline (bare uvicorn)"


def luhn(digits: str) -> int:
    """Swedish personnummer check digit (Luhn over YYMMDDNNN), so values look real."""
    total = sum(sum(divmod(int(d) * (2 - i % 2), 10)) for i, d in enumerate(digits))
    return (10 - total % 10) % 10


def patient(rng: random.Random, seen: set[str]) -> dict[str, Any]:
    """A Norrbotten Patient with a unique personnummer whose serial encodes the gender."""
    for _ in range(10_000):
        birth = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 80))
        serial = rng.randrange(1000)
        pnr = f"{birth:%Y%m%d}{serial:03d}{luhn(f'{birth:%y%m%d}{serial:03d}')}"
        if pnr not in seen:
            break
    else:
        raise RuntimeError("could not find an unused personnummer")
    seen.add(pnr)
    gender, given = ("male", MALE) if serial % 2 else ("female", FEMALE)
    name = {"family": rng.choice(FAMILY), "given": rng.sample(given, k=rng.randint(1, 2))}
    city = rng.choice(list(CITIES))
    line = f"{rng.choice(STREETS)} {rng.randint(1, 60)}"
    address = {"line": [line], "postalCode": CITIES[city], "city": city, "country": "SE"}
    return {
        "resourceType": "Patient",
        "identifier": [{"system": PNR, "value": pnr}],
        "name": [name],
        "gender": gender,
        "birthDate": birth.isoformat(),
        "address": [address],
        "telecom": [phone(rng)],
    }


def phone(rng: random.Random) -> dict[str, str]:
    """A Swedish mobile number; updates replace it."""
    number = f"+46 7{rng.choice('0236')} {rng.randrange(1000):03d} {rng.randrange(10000):04d}"
    return {"system": "phone", "value": number, "use": "mobile"}


def careplan(rng: random.Random, patient_id: str) -> dict[str, Any]:
    """A SIP CarePlan for one Patient."""
    start = date(2024, 1, 1) + timedelta(days=rng.randrange(600))
    return {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [SIP]}],
        "title": "Samordnad individuell plan",
        "description": "Samordning mellan kommun och region efter utskrivning från slutenvården.",
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": start.isoformat()},
        "extension": [  # R-SIP-08: the follow-up, decided when the plan is made
            {
                "url": "http://sip-fhir.se/fhir/StructureDefinition/sip-follow-up",
                "extension": [
                    {"url": "date", "valueDate": (start + timedelta(days=90)).isoformat()},
                    {
                        "url": "responsible",
                        "valueReference": {"reference": "Organization/hemsjukvard"},
                    },
                ],
            }
        ],
        "author": {"display": "Samordningsansvarig, hemsjukvården"},
        "goal": [{"display": "Huvudmål: bo kvar hemma tryggt"}],
        "activity": [
            {
                "detail": {
                    "status": "in-progress",
                    "description": "Hemtjänst morgon och kväll",
                    "performer": [{"display": "Kommunens hemtjänst"}],
                }
            }
        ],
    }


def consent(patient_id: str, when: date) -> dict[str, Any]:
    """The person's consent to a SIP (R-SIP-01): an active SIP CarePlan needs one."""
    kind = "http://sip-fhir.se/fhir/CodeSystem/sip-consent-kind"
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": kind, "code": "sip"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": when.isoformat(),
        "performer": [{"reference": f"Patient/{patient_id}"}],
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {"type": "permit", "period": {"start": when.isoformat()}},
    }


@functools.cache
def baseline_response() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The stored Patient's bytes and content headers, as the benchmark handed them over."""
    body = Path(os.environ[BASELINE_BODY]).read_bytes()
    given: dict[str, str] = orjson.loads(os.environ.get(BASELINE_HEADERS, "{}"))
    headers = {"content-type": FHIR_JSON} | given | {"content-length": str(len(body))}
    return body, [(k.encode(), v.encode()) for k, v in headers.items()]


async def baseline_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Bare ASGI app: GET /fhir/Patient/{id} -> fixed bytes; the ceiling for uvicorn + client."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            baseline_response()
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    ok = scope["method"] == "GET" and scope["path"].startswith("/fhir/Patient/")
    body, headers = baseline_response() if ok else (b"", [(b"content-length", b"0")])
    await send({"type": "http.response.start", "status": 200 if ok else 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def free_port() -> int:
    """A free loopback port (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def subprocess_server(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run a server subprocess and always stop it (SIGTERM, then SIGKILL), even on Ctrl-C."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def wait_ready(
    client: httpx.AsyncClient, url: str, proc: subprocess.Popen, log: Path
) -> None:
    """Poll `url` until 200 (at most ~60 s); fail fast with the log if the process died."""
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get(url)).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready after 60 s:\n{log.read_text()[-3000:]}")


def cpu_seconds(pid: int | None) -> float | None:
    """User+system CPU of a server process and its workers (Linux /proc); None if unknown."""
    if pid is None:
        return None
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        stats = [Path(f"/proc/{p}/stat").read_text() for p in [pid, *kids]]
    except OSError:
        return None
    ticks = sum(int(f[11]) + int(f[12]) for f in (s.rsplit(")", 1)[1].split() for s in stats))
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """One timed load: latencies in ms, failures by reason, wall and CPU times in s."""

    name: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    sample_error: str = ""
    elapsed: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None

    def row(self) -> dict[str, Any]:
        """The figures for the table / JSON (nearest-rank percentiles)."""
        ordered, n = sorted(self.latencies), len(self.latencies) + sum(self.failures.values())
        pct = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
        server_ms = None if self.server_cpu is None else round(1000 * self.server_cpu / n, 2)
        return {
            "operation": self.name,
            "requests": n,
            "concurrency": self.concurrency,
            "throughput": round(n / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": pct(0.50) if ordered else None,
            "p95_ms": pct(0.95) if ordered else None,
            "failed": sum(self.failures.values()),
            "server_cpu_ms_per_req": server_ms,
            "client_cpu_ms_per_req": round(1000 * self.client_cpu / n, 2),
        }


Request = tuple[str, str, bytes | None]


async def run_load(
    clients: list[httpx.AsyncClient],
    name: str,
    requests: list[Request],
    expect: int,
    server_pid: int | None,
) -> tuple[Phase, list[str | None]]:
    """Send `requests` with a worker per client; returns the Phase and each Location header."""
    phase, locations = Phase(name, len(clients)), [None] * len(requests)
    todo = iter(range(len(requests)))  # shared by the workers; safe, asyncio is single-threaded
    headers = {"Content-Type": FHIR_JSON}

    async def worker(client: httpx.AsyncClient) -> None:
        for i in todo:
            method, url, body = requests[i]
            start = time.perf_counter()
            try:
                response = await client.request(
                    method, url, content=body, headers=headers if body else None
                )
            except httpx.HTTPError as exc:
                phase.failures[type(exc).__name__] += 1
                continue
            phase.latencies.append((time.perf_counter() - start) * 1000)
            if response.status_code == expect:
                locations[i] = response.headers.get("location")
            else:
                phase.failures[f"HTTP {response.status_code}"] += 1
                phase.sample_error = phase.sample_error or response.text[:300]

    print(f"... {name}: {len(requests)} requests", file=sys.stderr)
    start, cpu, server_cpu = time.perf_counter(), time.process_time(), cpu_seconds(server_pid)
    await asyncio.gather(*map(worker, clients))
    phase.elapsed, phase.client_cpu = time.perf_counter() - start, time.process_time() - cpu
    if server_cpu is not None and (after := cpu_seconds(server_pid)) is not None:
        phase.server_cpu = after - server_cpu
    return phase, locations


def start_server(
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    work: Path,
    port: int,
    app: str | None = None,
    env_extra: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, Path]:
    """The FHIR server (or, with `app`, the baseline): same uvicorn defaults for both."""
    env, log = os.environ | (env_extra or {}), work / ("baseline.log" if app else "server.log")
    common = f"--host {HOST} --port {port} --log-level warning".split()
    uvicorn = [sys.executable, "-m", "uvicorn", *common, "--workers", str(args.workers)]
    if app:
        cmd = [*uvicorn, "--app-dir", str(ROOT), app]
    else:
        cmd = [sys.executable, "-m", "fhir_server.cli", "serve", *common, "--db", str(args.db)]
        cmd += ["--workers", str(args.workers)]
    return stack.enter_context(subprocess_server(cmd, env, log)), log


async def bench(args: argparse.Namespace, stack: contextlib.ExitStack, work: Path) -> list[Phase]:
    """Start the servers, load data, then time creates, reads, updates and the baseline reads."""
    n, c, rng = args.n, args.concurrency, random.Random(args.seed)
    # httpcore's shared pool slows down sharply with many connections (on this machine, against
    # the bare app: 1 client x 32 connections ~230/s, 32 clients x 1 connection ~520/s), so by
    # default each worker gets its own keep-alive connection; --shared-client for one pool.
    size = c if args.shared_client else 1
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    kwargs: dict[str, Any] = {"limits": limits, "timeout": 60, "headers": {"Accept": FHIR_JSON}}
    pool = [httpx.AsyncClient(**kwargs) for _ in range(c // size)]
    clients, client = pool * size, pool[0]
    try:
        base, pid = args.server_url, None
        if not base:
            port = free_port()
            proc, log = start_server(args, stack, work, port)
            base = f"http://{HOST}:{port}/fhir"
            await wait_ready(client, f"{base}/metadata", proc, log)
            pid = proc.pid
        seen: set[str] = set()
        patients = [patient(rng, seen) for _ in range(n)]
        phases: list[Phase] = []

        async def create(kind: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
            reqs = [("POST", f"{base}/{kind}", orjson.dumps(b)) for b in bodies]
            phase, locations = await run_load(clients, f"create {kind}", reqs, 201, pid)
            phases.append(phase)
            made = [
                b | {"id": loc.split("/")[-3]}
                for b, loc in zip(bodies, locations, strict=True)
                if loc
            ]
            if not made:
                why = f"{dict(phase.failures)} {phase.sample_error}"
                raise RuntimeError(f"no {kind} created: {why}")
            return made

        patients = await create("Patient", patients)
        await create("Consent", [consent(p["id"], date(2024, 1, 1)) for p in patients])
        plans = await create(
            "CarePlan", [careplan(rng, patients[i % len(patients)]["id"]) for i in range(n)]
        )
        created = patients + plans
        picks = [rng.choice(created) for _ in range(n)]
        reads = [("GET", f"{base}/{r['resourceType']}/{r['id']}", None) for r in picks]
        phases.append((await run_load(clients, "read", reads, 200, pid))[0])

        updates: list[Request] = []
        for r in rng.sample(created, k=min(n, len(created))):
            changed = r | (
                {"telecom": [phone(rng)]}
                if r["resourceType"] == "Patient"
                else {"description": f"Reviderad vid SIP-möte {date.today().isoformat()}."}
            )
            updates.append(("PUT", f"{base}/{r['resourceType']}/{r['id']}", orjson.dumps(changed)))
        phases.append((await run_load(clients, "update", updates, 200, pid))[0])

        stored = await client.get(f"{base}/Patient/{patients[0]['id']}")
        stored.raise_for_status()
        phases.append(await baseline_reads(args, stack, work, clients, stored, picks))
    finally:
        await asyncio.gather(*(cl.aclose() for cl in pool))
    return phases


async def baseline_reads(
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    work: Path,
    clients: list[httpx.AsyncClient],
    stored: httpx.Response,
    picks: list[dict[str, Any]],
) -> Phase:
    """The same read load against the bare app serving `stored`'s bytes: uvicorn's ceiling."""
    (work / "patient.json").write_bytes(stored.content)
    names = ("content-type", "etag", "last-modified")
    kept = orjson.dumps({k: stored.headers[k] for k in names if k in stored.headers}).decode()
    env, port = {BASELINE_BODY: str(work / "patient.json"), BASELINE_HEADERS: kept}, free_port()
    proc, log = start_server(args, stack, work, port, "benchmarks.crud:baseline_app", env)
    base = f"http://{HOST}:{port}/fhir"
    await wait_ready(clients[0], f"{base}/Patient/{picks[0]['id']}", proc, log)
    bare = [("GET", f"{base}/Patient/{r['id']}", None) for r in picks]
    return (await run_load(clients, BASELINE, bare, 200, proc.pid))[0]


def report(args: argparse.Namespace, phases: list[Phase], target: str) -> None:
    """Print the aligned table (or JSON), the read/baseline ratio and any failures."""
    rows = [p.row() for p in phases]
    by_name = {r["operation"]: r for r in rows}
    base = by_name.get(BASELINE, {}).get("throughput")
    ratio = round(by_name["read"]["throughput"] / base, 3) if base else None
    cpu = [by_name.get(k, {}).get("server_cpu_ms_per_req") for k in ("read", BASELINE)]
    cpu_ratio = round(cpu[1] / cpu[0], 3) if all(cpu) else None
    failures = {
        p.name: {"counts": dict(p.failures), "sample": p.sample_error} for p in phases if p.failures
    }
    cores = os.cpu_count()
    if args.json:
        figures = {"cores": cores, "target": target, "workers": args.workers, "rows": rows}
        figures |= {"read_baseline_ratio": ratio, "read_baseline_cpu_ratio": cpu_ratio}
        figures["failures"] = failures
        print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
        return
    print(
        f"sip-fhir CRUD benchmark  n={args.n}  concurrency={args.concurrency}  "
        f"uvicorn workers={args.workers}  target={target}"
    )
    print(
        f"machine: {cores} CPU cores; the load generator (httpx, asyncio, {args.concurrency} "
        f"keep-alive connections, {'one shared pool' if args.shared_client else 'a client each'})"
        " runs in this one process and competes with the server(s) for CPU."
    )
    cols = ["operation", "requests", "concurrency", "throughput (/s)", "p50 ms", "p95 ms", "failed"]
    cols += ["server CPU ms/req", "client CPU ms/req"]
    show = lambda v: "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[show(v) for v in r.values()] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(cols)]
    line = lambda vals: "  ".join(  # noqa: E731
        v.ljust(w) if i == 0 else v.rjust(w)
        for i, (v, w) in enumerate(zip(vals, widths, strict=True))
    )
    print(line(cols), "-" * len(line(cols)), *map(line, cells), sep="\n")
    if ratio is not None:
        print(f"read / baseline = {by_name['read']['throughput']} / {base} = {ratio}  (reads/s)")
    if cpu_ratio is not None:
        print(
            f"server CPU per read, baseline / read = {cpu_ratio}  (near 1 = no cost over uvicorn)"
        )
    for name, info in failures.items():
        print(f"FAILURES in {name}: {info['counts']} e.g. {info['sample']!r}")


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the benchmark under a global time limit, clean up, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="resources per type / requests")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--db", type=Path, help="SQLite file (default: a temporary file)")
    parser.add_argument("--server-url", help="running server's base, http://127.0.0.1:8080/fhir")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (both servers)")
    parser.add_argument("--time-limit", type=float, default=1800, help="seconds for the whole run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shared-client", action="store_true", help="one pool for all workers")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.server_url and urlsplit(args.server_url).hostname != HOST:
        parser.error(f"--server-url must be on {HOST}")
    if args.n < 1 or args.concurrency < 1 or args.workers < 1:
        parser.error("--n, --concurrency and --workers must be positive")
    with tempfile.TemporaryDirectory(prefix="crud-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        args.db = args.db or work / "fhir.sqlite3"
        store = "MongoDB ($MONGODB_URI)" if os.environ.get("MONGODB_URI") else args.db
        target = args.server_url or f"started, {store}"
        try:
            phases = asyncio.run(asyncio.wait_for(bench(args, stack, work), args.time_limit))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
            why = str(exc) or f"time limit ({args.time_limit:g} s) reached"
            print(f"benchmark aborted: {type(exc).__name__}: {why}", file=sys.stderr)
            return 2
    report(args, phases, target)
    return 1 if any(p.failures for p in phases) else 0


if __name__ == "__main__":
    sys.exit(main())

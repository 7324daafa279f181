"""Slow figures: does a cheap read stay fast while others send costly or idle traffic?

Starts `fhir_server.cli serve` on a temporary SQLite file, loads Patients, Observations and
Provenance, then times `GET Patient/<id>` one at a time (p50/p99) in three conditions:

1. quiet: nothing else going on;
2. expensive: `--clients` clients keep sending a costly search (`--expensive`), each waiting
   for its answer and sending it again;
3. idle: `--idle` TCP connections are held open without sending a byte.

    .venv/bin/python benchmarks/slow.py                      # 500 reads per condition
    .venv/bin/python benchmarks/slow.py --root /tmp/before   # the server from another tree

Self-contained (httpx, asyncio): it imports nothing from the server, so `--root` can point at
any checkout; the server runs there with PYTHONPATH set to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PNR = "http://electronichealth.se/identifier/personnummer"
LOINC = "http://loinc.org"
HSA = "urn:oid:1.2.752.29.4.19"
# A chain through a reverse chain: each Provenance's targets, and for each of those every
# Provenance pointing at it, and their targets' identifiers. ~5 s on 300 of each at HEAD
# 6df2ed2; `Observation?code=<900 alternatives>` (~5 s) and `Patient?name:contains=<900>`
# (~3 s) are as costly.
EXPENSIVE = "Provenance?target._has:Provenance:target:target.identifier=x"


@dataclass
class Condition:
    name: str
    latencies: list[float] = field(default_factory=list)  # ms per read
    errors: Counter[str] = field(default_factory=Counter)
    background: Counter[str] = field(default_factory=Counter)  # background answers by status
    background_ms: list[float] = field(default_factory=list)
    note: str = ""

    def row(self) -> list[str]:
        if not self.latencies:
            return [self.name, "-", "-", "-", "0", self.summary()]
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        cells = [f"{statistics.median(ordered):.2f}", f"{p99:.2f}", f"{ordered[-1]:.2f}"]
        return [self.name, *cells, str(len(ordered)), self.summary()]

    def summary(self) -> str:
        parts = [f"read errors {dict(self.errors)}"] if self.errors else []
        if self.background:
            statuses = ", ".join(f"{k}×{v}" for k, v in sorted(self.background.items()))
            median = statistics.median(self.background_ms) if self.background_ms else 0
            parts.append(f"background: {statuses}, median {median:.0f} ms")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(root: Path, db: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`fhir-server serve` from `root`'s code, stopped (SIGTERM, then SIGKILL) on exit."""
    env = os.environ | {"PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(port)]
    command += ["--db", str(db), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=out)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("metadata", timeout=2)).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise SystemExit("the server did not start within 60 s")


def patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": PNR, "value": f"19{i % 90 + 10:02d}0101{i % 1000:03d}0"}],
        "name": [{"family": f"Efternamn{i:03d}", "given": ["Förnamn"]}],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"19{i % 90 + 10:02d}-01-01",
    }


def observation(i: int, patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:sip-fhir:bench", "value": f"obs-{i}"}],
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": f"2025-{i % 12 + 1:02d}-{i % 28 + 1:02d}T08:00:00Z",
        "valueQuantity": {
            "value": 60 + i % 40,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def provenance(i: int, target: str, patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}, {"reference": f"Patient/{patient_id}"}],
        "recorded": f"2025-{i % 12 + 1:02d}-{i % 28 + 1:02d}T08:00:00Z",
        "agent": [{"who": {"identifier": {"system": HSA, "value": f"SE2321000230-{i % 50}"}}}],
    }


async def load(client: httpx.AsyncClient, count: int) -> list[str]:
    """`count` each of Patient, Observation and Provenance; the Patient ids."""
    gate = asyncio.Semaphore(8)

    async def create(resource: dict[str, Any]) -> str:
        async with gate:
            response = await client.post(resource["resourceType"], json=resource, timeout=60)
        if response.status_code != 201:
            raise SystemExit(f"load failed: {response.status_code} {response.text[:300]}")
        return response.json()["id"]

    patients = await asyncio.gather(*(create(patient(i)) for i in range(count)))
    observations = await asyncio.gather(
        *(create(observation(i, patients[i])) for i in range(count))
    )
    await asyncio.gather(
        *(
            create(provenance(i, f"Observation/{observations[i]}", patients[i]))
            for i in range(count)
        )
    )
    return list(patients)


async def reads(
    client: httpx.AsyncClient, ids: list[str], n: int, into: Condition, limit: float = 120.0
) -> None:
    """`n` reads, one at a time, of Patients in turn; fewer if they take over `limit` s."""
    deadline = time.monotonic() + limit
    for i in range(n):
        if time.monotonic() > deadline:
            into.errors[f"stopped after {limit:g} s"] += 1
            break
        started = time.perf_counter()
        try:
            response = await client.get(f"Patient/{ids[i % len(ids)]}", timeout=120)
        except httpx.HTTPError as exc:
            into.errors[type(exc).__name__] += 1
            continue
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code == 200:
            into.latencies.append(elapsed)
        else:
            into.errors[str(response.status_code)] += 1


async def while_running(
    background: Callable[[asyncio.Event], Awaitable[None]], measure: Awaitable[None]
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(background(stop))
    try:
        await measure
    finally:
        stop.set()
        await task


def expensive_clients(base: str, query: str, clients: int, into: Condition):
    async def background(stop: asyncio.Event) -> None:
        async def one() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=300) as client:
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        response = await client.get(query)
                        into.background[str(response.status_code)] += 1
                    except httpx.HTTPError as exc:
                        into.background[type(exc).__name__] += 1
                    into.background_ms.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(one() for _ in range(clients)))

    return background


def idle_connections(port: int, count: int, hold: float, into: Condition):
    async def background(stop: asyncio.Event) -> None:
        writers: list[asyncio.StreamWriter] = []
        readers: list[asyncio.StreamReader] = []
        for _ in range(count):
            reader, writer = await asyncio.open_connection(HOST, port)
            readers.append(reader)
            writers.append(writer)
        held = time.monotonic()
        await stop.wait()
        await asyncio.sleep(max(0.0, hold - (time.monotonic() - held)))
        closed = sum(reader.at_eof() for reader in readers)
        into.note = f"{closed} of {count} closed by the server within {hold:g} s"
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return background


async def bench(args: argparse.Namespace, work: Path) -> list[Condition]:
    port = free_port()
    base = f"http://{HOST}:{port}/fhir/"
    headers = {"Accept": "application/fhir+json"}
    with server(args.root, work / "slow.sqlite3", port, work / "server.log") as process:
        async with httpx.AsyncClient(base_url=base, headers=headers) as client:
            await wait_ready(client, process)
            started = time.perf_counter()
            ids = await load(client, args.resources)
            print(f"loaded {3 * args.resources} resources in {time.perf_counter() - started:.1f} s")
            await reads(client, ids, 50, Condition("warm-up"))

            quiet = Condition("quiet")
            await reads(client, ids, args.reads, quiet)

            costly = Condition(f"{args.clients} clients sending the expensive search")
            background = expensive_clients(base, args.expensive, args.clients, costly)
            await while_running(background, reads(client, ids, args.reads, costly, args.limit))

            idle = Condition(f"{args.idle} idle TCP connections held")
            background = idle_connections(port, args.idle, args.hold, idle)
            await while_running(background, reads(client, ids, args.reads, idle))
            # Whether the server still serves once the idle connections are gone.
            after = Condition("quiet again")
            await reads(client, ids, args.reads, after)
    return [quiet, costly, idle, after]


def report(conditions: list[Condition], args: argparse.Namespace) -> None:
    print(f"\nserver code: {args.root}")
    print(f"expensive search: {args.expensive[:100]}{'…' if len(args.expensive) > 100 else ''}")
    header = ["GET Patient/<id> while …", "p50 ms", "p99 ms", "max ms", "reads", "notes"]
    rows = [header, *(c.row() for c in conditions)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print(" | ".join([*cells, row[-1]]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reads", type=int, default=500, help="reads per condition")
    parser.add_argument("--resources", type=int, default=300, help="of each type loaded")
    parser.add_argument("--clients", type=int, default=4, help="expensive-search clients")
    parser.add_argument("--idle", type=int, default=200, help="idle connections held")
    parser.add_argument(
        "--hold", type=float, default=15.0, help="seconds to hold them at least (then counted)"
    )
    parser.add_argument("--expensive", default=EXPENSIVE, help="the costly query")
    parser.add_argument(
        "--limit", type=float, default=120.0, help="seconds at most for the reads under load"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve from")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sip-slow-") as tmp:
        conditions = asyncio.run(bench(args, Path(tmp)))
    report(conditions, args)
    return 1 if any(c.errors for c in conditions) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Notification benchmark: rest-hook subscriptions on loopback, writes at a fixed rate.

The server (`fhir_server.cli serve`, SQLite, its dispatcher in the same process) holds the
example SIP case (examples/sip-case) plus `--subscriptions` municipalities. Each municipality
subscribes to the admission-notice topic for notices addressed to it
(`Communication?recipient=Organization/<its id>`, `id-only`), with its own rest-hook receiver
path on one loopback receiver. The writer then POSTs admission notices at `--rate` per second
for `--seconds`, each addressed to the next municipality in turn, so every write makes one
notification. The notices are spread over `--patients` copies of the case's patient, each
with its own stay and consent, as a region's notices are: one patient's record holds a few
notices and their obligation Tasks, not thousands. Reported:

- commit -> delivery: from the client's receipt of the 201 to the receiver's receipt of the
  notification naming that Communication, p50/p99/max;
- notifications per second delivered, and whether any were lost, duplicated or out of order;
- write throughput (closed loop, `--concurrency` writers, `--writes` notices) without any
  subscription and with them.

    .venv/bin/python benchmarks/notify.py                        # 50 subscriptions, 100/s, 20 s
    .venv/bin/python benchmarks/notify.py --subscriptions 10 --rate 20 --seconds 5
    .venv/bin/python benchmarks/notify.py --dispatcher process   # `fhir-server dispatch` apart
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.crud import free_port, subprocess_server, wait_ready  # noqa: E402
from benchmarks.dataset import _Builder  # noqa: E402

HOST = "127.0.0.1"
CASE = ROOT / "examples" / "sip-case"
TOPIC = "http://sip-fhir.se/fhir/SubscriptionTopic/admission-notice"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
LEAVE_OUT = {"Task", "Communication", "Appointment", "CarePlan"}
PATIENT, STAY = "tolvan-tolvansson", "inpatient-stay"
COPIED = ("Patient", "Encounter", "Consent")  # per patient: who, the stay, the consents


@dataclass
class Receiver:
    """What the loopback receiver saw: per subscription, the event numbers and focus ids."""

    arrivals: dict[str, float] = field(default_factory=dict)  # Communication id -> time
    numbers: dict[str, list[int]] = field(default_factory=dict)  # subscription -> numbers
    handshakes: set[str] = field(default_factory=set)
    duplicates: int = 0

    async def hook(self, request: Request) -> Response:
        now = time.perf_counter()
        bundle = orjson.loads(await request.body())
        status = bundle["entry"][0]["resource"]
        params = {p["name"]: p for p in status.get("parameter", [])}
        subscription = params["subscription"]["valueReference"]["reference"].split("/")[-1]
        kind = params["type"]["valueCode"]
        if kind == "handshake":
            self.handshakes.add(subscription)
        for event in (p for p in status.get("parameter", []) if p["name"] == "notification-event"):
            parts = {part["name"]: part for part in event.get("part", [])}
            number = int(parts["event-number"]["valueString"])
            seen = self.numbers.setdefault(subscription, [])
            if number in seen:
                self.duplicates += 1
                continue
            seen.append(number)
            focus = parts.get("focus", {}).get("valueReference", {}).get("reference", "")
            self.arrivals.setdefault(focus.split("/")[-1], now)
        return Response(status_code=200)


def case_bundle(municipalities: int, patients: int) -> dict[str, Any]:
    """The example case less the acts, plus `municipalities` copies of its municipality and
    `patients` copies of its patient with their stays and consents."""
    entries = []
    for file in sorted(CASE.glob("*.json")):
        resource = json.loads(file.read_text())
        if resource["resourceType"] in LEAVE_OUT:
            continue
        entries.append(resource)
        if resource["id"] == "lulea-municipality":
            entries += [municipality(resource, n) for n in range(municipalities)]
        if resource["resourceType"] in COPIED:
            entries += [patient_copy(resource, k) for k in range(patients)]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in entries
        ],
    }


def municipality(template: dict[str, Any], n: int) -> dict[str, Any]:
    copied = copy.deepcopy(template)
    copied["id"] = f"bench-municipality-{n}"
    copied["name"] = f"Kommun {n}"
    copied.pop("text", None)
    for identifier in copied.get("identifier", []):
        if identifier.get("system") != "urn:oid:2.5.4.97":  # the HSA-id: unique per copy
            identifier["value"] = f"{identifier['value']}-B{n}"
    copied["identifier"] = [
        i for i in copied["identifier"] if i.get("system") != "urn:oid:2.5.4.97"
    ]
    return copied


def patient_copy(resource: dict[str, Any], k: int) -> dict[str, Any]:
    """A copy of the case's patient (or of its stay or consent) as patient `k`."""
    text = json.dumps(resource)
    text = text.replace(f"Patient/{PATIENT}", f"Patient/bench-patient-{k}")
    text = text.replace(f"Encounter/{STAY}", f"Encounter/bench-stay-{k}")
    copied = json.loads(text)
    copied["id"] = f"bench-{copied['id']}-{k}"
    if copied["resourceType"] == "Patient":
        copied["id"] = f"bench-patient-{k}"
        _, _, _, _, pnr = _Builder(random.Random(k)).person()
        copied["identifier"] = [dict(copied["identifier"][0], value=pnr)]
        copied.pop("link", None)
    elif copied["resourceType"] == "Encounter":
        copied["id"] = f"bench-stay-{k}"
    copied.pop("text", None)
    return copied


_NOTICE = json.loads((CASE / "Communication-admission-notice.json").read_text())


def admission_notice(recipient: str, patient: int) -> dict[str, Any]:
    """A notice to `recipient` of patient `patient`'s admission."""
    notice = json.loads(json.dumps(_NOTICE))
    notice.pop("id", None)
    notice["recipient"] = [{"reference": f"Organization/{recipient}"}]
    notice["subject"] = {"reference": f"Patient/bench-patient-{patient}"}
    notice["encounter"] = {"reference": f"Encounter/bench-stay-{patient}"}
    return notice


def subscription(n: int, endpoint: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{BACKPORT}backport-subscription"]},
        "status": "requested",
        "reason": f"Admission notices for municipality {n}",
        "criteria": TOPIC,
        "_criteria": {
            "extension": [
                {
                    "url": f"{BACKPORT}backport-filter-criteria",
                    "valueString": f"Communication?recipient=Organization/bench-municipality-{n}",
                }
            ]
        },
        "channel": {
            "type": "rest-hook",
            "endpoint": f"{endpoint}/{n}",
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [
                    {"url": f"{BACKPORT}backport-payload-content", "valueCode": "id-only"}
                ]
            },
        },
    }


async def closed_loop(
    client: httpx.AsyncClient, base: str, n: int, patients: int, writers: int, count: int
) -> float:
    """Writes per second with `writers` concurrent writers of `count` notices."""
    todo = list(range(count))

    async def writer() -> None:
        while todo:
            i = todo.pop()
            response = await client.post(
                f"{base}/Communication",
                json=admission_notice(f"bench-municipality-{i % n}", i % patients),
            )
            assert response.status_code == 201, response.text[:300]

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return count / (time.perf_counter() - started)


async def bench(args: argparse.Namespace, work: Path) -> int:
    receiver = Receiver()
    receiver_port = free_port()
    hook_app = Starlette(routes=[Route("/hook/{n}", receiver.hook, methods=["POST"])])
    hook_server = uvicorn.Server(
        uvicorn.Config(hook_app, host=HOST, port=receiver_port, log_level="warning")
    )
    hook_task = asyncio.create_task(hook_server.serve())
    port = free_port()
    base = f"http://{HOST}:{port}/fhir"
    command = [
        sys.executable,
        "-m",
        "fhir_server.cli",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    command += ["--db", str(work / "notify.sqlite3"), "--log-level", "warning"]
    command += ["--workers", str(args.workers)]
    env = {**os.environ, "FHIR_SUBSCRIPTION_ALLOWED_HOSTS": json.dumps([HOST])}
    dispatch = [sys.executable, "-m", "fhir_server.cli", "dispatch", "--log-level", "warning"]
    dispatch += ["--db", str(work / "notify.sqlite3")]

    def dispatcher() -> contextlib.AbstractContextManager[Any]:
        """`fhir-server dispatch` beside a server that does not (with --dispatcher process)."""
        if args.dispatcher != "process":
            return contextlib.nullcontext()
        return subprocess_server(dispatch, {**env, "FHIR_DISPATCH": "true"}, work / "d.log")

    if args.dispatcher == "process":
        env["FHIR_DISPATCH"] = "false"
    n = args.subscriptions
    catch_up = None
    try:
        with subprocess_server(command, env, work / "server.log") as server:
            running = contextlib.ExitStack()
            running.enter_context(dispatcher())
            async with httpx.AsyncClient(timeout=60, headers=HEADERS) as client:
                await wait_ready(client, f"{base}/metadata", server, work / "server.log")
                loaded = await client.post(base, json=case_bundle(n, args.patients))
                assert loaded.status_code == 200, loaded.text[:500]
                without = await closed_loop(
                    client, base, n, args.patients, args.concurrency, args.writes
                )
                endpoint = f"http://{HOST}:{receiver_port}/hook"
                ids = []
                for i in range(n):
                    made = await client.post(f"{base}/Subscription", json=subscription(i, endpoint))
                    assert made.status_code == 201, made.text[:500]
                    ids.append(made.json()["id"])
                await _until(lambda: len(receiver.handshakes) >= n, 30, "handshakes")
                await _until(lambda: _all_active(client, base, ids), 30, "active subscriptions")
                with_subs = await closed_loop(
                    client, base, n, args.patients, args.concurrency, args.writes
                )
                await _until(lambda: len(receiver.arrivals) >= args.writes, 60, "warm-up events")
                receiver.arrivals.clear()
                committed = await fixed_rate(
                    client, base, n, args.patients, args.rate, args.seconds
                )
                await _until(lambda: len(receiver.arrivals) >= len(committed), 60, "deliveries")
                if args.dispatcher == "process":
                    running.close()  # the backlog builds while no dispatcher runs
                    catch_up = await drain(client, base, args, receiver, running, dispatcher)
            running.close()
    finally:
        hook_server.should_exit = True
        await hook_task
    report(args, receiver, committed, without, with_subs)
    if catch_up is not None:
        print(f"catch-up: {args.writes} notifications waiting, delivered at {catch_up:,.0f}/s "
              "(first to last arrival) once the dispatcher started")  # fmt: skip
    return 1 if lost(receiver, committed) else 0


async def drain(
    client: httpx.AsyncClient,
    base: str,
    args: argparse.Namespace,
    receiver: Receiver,
    running: contextlib.ExitStack,
    dispatcher: Any,
) -> float:
    """The dispatcher's own pace: `--writes` notices committed while it is stopped, then
    delivered by a new dispatcher process with no writes competing; notifications/s."""
    n = args.subscriptions
    await closed_loop(client, base, n, args.patients, args.concurrency, args.writes)
    before = set(receiver.arrivals)
    running.enter_context(dispatcher())
    await _until(lambda: len(receiver.arrivals) - len(before) >= args.writes, 120, "backlog")
    times = sorted(t for i, t in receiver.arrivals.items() if i not in before)
    return (len(times) - 1) / max(times[-1] - times[0], 1e-9)


async def fixed_rate(
    client: httpx.AsyncClient, base: str, n: int, patients: int, rate: float, seconds: float
) -> dict[str, float]:
    """POST notices on a fixed schedule; each Communication id -> time its 201 arrived."""
    committed: dict[str, float] = {}
    started = time.perf_counter()
    tasks = []

    async def one(i: int) -> None:
        notice = admission_notice(f"bench-municipality-{i % n}", i % patients)
        response = await client.post(f"{base}/Communication", json=notice)
        assert response.status_code == 201, response.text[:300]
        committed[response.json()["id"]] = time.perf_counter()

    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return committed


async def _all_active(client: httpx.AsyncClient, base: str, ids: list[str]) -> bool:
    found = await client.get(f"{base}/Subscription", params={"status": "active", "_count": 1000})
    return {e["resource"]["id"] for e in found.json().get("entry", [])} >= set(ids)


async def _until(check: Any, seconds: float, what: str) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def report(
    args: argparse.Namespace,
    receiver: Receiver,
    committed: dict[str, float],
    without: float,
    with_subs: float,
) -> None:
    latencies = sorted(
        max(0.0, receiver.arrivals[i] - t) for i, t in committed.items() if i in receiver.arrivals
    )
    lost = len(committed) - len(latencies)
    gaps = sum(
        1 for numbers in receiver.numbers.values() if numbers != list(range(1, len(numbers) + 1))
    )
    p = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000  # noqa: E731
    print(f"sip-fhir notify  subscriptions={args.subscriptions}  rate={args.rate}/s  "
          f"seconds={args.seconds}  dispatcher={args.dispatcher}  workers={args.workers}  "
          "SQLite, rest-hook on loopback, id-only")  # fmt: skip
    print(f"commit -> delivery: p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms, max {p(1.0):.0f} ms "
          f"({len(latencies)} events)")  # fmt: skip
    first = min(committed.values(), default=0.0)  # the first 201
    last_commit = max(committed.values(), default=first)
    last_arrival = max((receiver.arrivals.get(i, first) for i in committed), default=first)
    print(f"writes committed at {len(committed) / max(last_commit - first, 1e-9):,.0f}/s "
          f"(offered {args.rate:,.0f}/s)")  # fmt: skip
    rate = len(latencies) / max(last_arrival - first, 1e-9)
    print(f"delivered {rate:,.0f} notifications/s; lost {lost}, "
          f"duplicates {receiver.duplicates}, out of order or with gaps {gaps}")  # fmt: skip
    print(f"write throughput ({args.concurrency} writers, {args.writes} notices): "
          f"{without:,.0f}/s without subscriptions, {with_subs:,.0f}/s with "
          f"({with_subs / without:.2f}x)")  # fmt: skip


def lost(receiver: Receiver, committed: dict[str, float]) -> bool:
    """Whether a notification was lost, repeated or out of order (the exit status)."""
    gaps = any(n != list(range(1, len(n) + 1)) for n in receiver.numbers.values())
    return gaps or receiver.duplicates > 0 or any(i not in receiver.arrivals for i in committed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=50)
    parser.add_argument("--rate", type=float, default=100.0, help="writes per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--writes", type=int, default=500, help="closed-loop writes per phase")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--patients", type=int, default=500, help="patients the notices concern")
    parser.add_argument(
        "--dispatcher",
        choices=("server", "process"),
        default="server",
        help="the server's own dispatcher, or `fhir-server dispatch` in a process of its own",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (`serve --workers`)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
        return asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())

"""Several server processes on one database (`fhir-server serve --workers N`, issue 15).

Real `fhir-server serve` processes on one SQLite file (tests.conftest.LiveServer): with
`--workers 2` the start-up work (re-index, publishing `profiles/`) runs once, in the parent,
before two workers serve one port; two servers on one file (two workers whose requests the
test can address one by one) give exactly one winner per version to concurrent If-Match
writers; a websocket bound on the process that does not dispatch gets its notifications;
and a conformance resource written through one process is stored for every process and
enforced by none, as the README says. Waiting is polling with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

from tests import test_subscriptions_durability as durability
from tests.conftest import LiveServer
from tests.sip_case import ACTS, load_case
from tests.test_subscriptions_rest_hook import (
    event_numbers,
    notice,
    notification_type,
    send_notice,
    status_parameters,
    subscribe,
    subscription,
    wait_active,
)

ENV = {
    "FHIR_SUBSCRIPTION_POLL_INTERVAL": "0.05",
    "FHIR_SUBSCRIPTION_LEASE": "3",
    "FHIR_OBLIGATION_SWEEP_INTERVAL": "3600",
}
WAIT = 20.0
servers = durability.servers  # LiveServers a test starts, stopped at its end
client_of = durability.client_of


def start(servers: list[LiveServer], db: Path, **options: Any) -> LiveServer:
    server = LiveServer(db, ENV, **options)
    server.start()
    servers.append(server)
    return server


def patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def workers_of(pid: int) -> list[int]:
    """The worker processes multiprocessing spawned for `pid` (not its resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    spawned = []
    for child in map(int, out.split()):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                spawned.append(child)
    return spawned


async def test_two_workers_serve_one_port_and_start_up_work_runs_once(
    tmp_path: Path, servers: list[LiveServer]
) -> None:
    db = tmp_path / "fhir.sqlite3"
    first = start(servers, db)
    async with client_of(first) as http:
        for family in ("Ek", "Gran", "Tall"):
            assert (await http.post("/Patient", json=patient(family))).status_code == 201
    first.stop()
    servers.remove(first)
    with sqlite3.connect(db) as conn:  # as after an upgrade that brings new search parameters
        conn.execute("UPDATE meta SET value = 'stale' WHERE key = 'search-index-version'")

    log = tmp_path / "serve.log"
    server = start(servers, db, workers=2, log=log)
    assert server.process is not None
    assert len(workers_of(server.process.pid)) == 2
    async with client_of(server) as http:
        # Many new connections reach both workers; every one of them answers.
        for _ in range(20):
            async with client_of(server) as fresh:
                found = await fresh.get("/Patient", params={"family": "Gran"})
                assert found.status_code == 200
                assert [e["resource"]["name"][0]["family"] for e in found.json()["entry"]] == [
                    "Gran"
                ]
        published = await http.get("/StructureDefinition/_history", params={"_count": "1000"})
        versions = [e["resource"]["meta"]["versionId"] for e in published.json()["entry"]]
        assert versions and set(versions) == {"1"}  # published once, not once per process
    text = log.read_text()
    assert text.count("re-indexed ") == 1, text
    assert text.count("start-up work done in process") == 1, text
    assert text.count("Application startup complete") == 2, text


async def test_concurrent_if_match_writers_on_two_processes_get_one_winner_per_version(
    tmp_path: Path, servers: list[LiveServer]
) -> None:
    db = tmp_path / "fhir.sqlite3"
    one, two = start(servers, db), start(servers, db)
    async with client_of(one) as a, client_of(two) as b:
        created = await a.put("/Patient/race", json={**patient("Start"), "id": "race"})
        assert created.status_code == 201
        for version in range(1, 9):
            attempts = [
                http.put(
                    "/Patient/race",
                    json={**patient(f"{name}{version}-{n}"), "id": "race"},
                    headers={"If-Match": f'W/"{version}"'},
                )
                for n in range(4)
                for name, http in (("A", a), ("B", b))
            ]
            answers = await asyncio.gather(*attempts)
            codes = sorted(r.status_code for r in answers)
            assert codes.count(200) == 1, codes
            assert set(codes) - {200} <= {409, 412}, [r.text for r in answers]
            winner = next(r for r in answers if r.status_code == 200).json()
            assert winner["meta"]["versionId"] == str(version + 1)
            for http in (a, b):  # both processes read the winner's version
                current = (await http.get("/Patient/race")).json()
                assert current["name"] == winner["name"]
        history = (await b.get("/Patient/race/_history", params={"_count": "100"})).json()
        numbers = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
        assert numbers == list(range(1, 10))


async def test_a_websocket_bound_on_the_process_that_does_not_dispatch_gets_its_events(
    tmp_path: Path, servers: list[LiveServer]
) -> None:
    db = tmp_path / "fhir.sqlite3"
    holder = start(servers, db)
    async with client_of(holder) as a:
        await load_case(a, leave_out=ACTS)
        id = await subscribe(a, subscription("", channel="websocket", payload="id-only"))
        await wait_active(a, id)  # the holder's dispatcher activated it
        other = start(servers, db)
        assert holder.process is not None
        with sqlite3.connect(db) as conn:
            (owner,) = conn.execute(
                "SELECT owner FROM leases WHERE name = 'subscriptions'"
            ).fetchone()
        assert f":{holder.process.pid}:" in owner

        token = await a.get(f"/Subscription/{id}/$get-ws-binding-token")  # issued by the holder
        parameters = {p["name"]: p for p in token.json()["parameter"]}
        url = parameters["websocket-url"]["valueUrl"].replace(str(holder.port), str(other.port))
        async with connect(url) as socket:  # bound on the other process
            await socket.send(f"bind-with-token {parameters['token']['valueString']}")
            handshake = orjson.loads(await asyncio.wait_for(socket.recv(), WAIT))
            assert notification_type(handshake) == "handshake"
            await send_notice(a, notice())  # written through the holder
            event = orjson.loads(await asyncio.wait_for(socket.recv(), WAIT))
            assert notification_type(event) == "event-notification"
            assert event_numbers(event) == [1]

        async with client_of(other) as b:
            deadline = time.monotonic() + WAIT
            while True:  # the other process recorded the delivery
                status = status_parameters((await b.get(f"/Subscription/{id}/$status")).json())
                if status["events-since-subscription-start"][0]["valueString"] == "1":
                    break
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.05)


async def test_a_profile_written_through_one_process_is_stored_for_all_and_enforced_by_none(
    tmp_path: Path, servers: list[LiveServer]
) -> None:
    """The documented limit (README, "Several processes"): only FHIR_PROFILE_DIRS are
    enforced; a StructureDefinition written through the API is a resource like any other."""
    db = tmp_path / "fhir.sqlite3"
    one, two = start(servers, db), start(servers, db)
    url = "http://example.org/fhir/StructureDefinition/patient-with-birth-date"
    profile = {
        "resourceType": "StructureDefinition",
        "url": url,
        "name": "PatientWithBirthDate",
        "status": "draft",
        "kind": "resource",
        "abstract": False,
        "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "derivation": "constraint",
        "differential": {
            "element": [{"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1}]
        },
    }
    async with client_of(one) as a, client_of(two) as b:
        created = await a.post("/StructureDefinition", json=profile)
        assert created.status_code == 201, created.text
        found = await b.get("/StructureDefinition", params={"url": url})
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [created.json()["id"]]
        claiming = {**patient("Utan"), "meta": {"profile": [url]}}
        for http in (a, b):  # birthDate is missing, and neither process refuses it
            answer = await http.post("/Patient", json=claiming)
            assert answer.status_code == 201, answer.text

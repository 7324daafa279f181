"""Against a real uvicorn process: the third-party client fhirpy, and crash durability."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx
from fhirpy import AsyncFHIRClient

from tests.conftest import LiveServer
from tests.resources import PERSONNUMMER, patient


async def test_fhirpy_client_round_trip(live_server: LiveServer) -> None:
    client = AsyncFHIRClient(
        live_server.base_url, extra_headers={"Accept": "application/fhir+json"}
    )
    created = client.resource("Patient", **patient())
    await created.save()
    assert created.id
    fetched = await client.reference("Patient", created.id).to_resource()
    assert fetched["name"][0]["family"] == "Tolvansson"

    fetched["gender"] = "female"
    await fetched.save()
    assert fetched["meta"]["versionId"] == "2"

    found = await client.resources("Patient").search(_id=created.id).fetch_all()
    assert [r.id for r in found] == [created.id]

    search = client.resources("Patient").search(identifier=f"{PERSONNUMMER}|191212121212")
    again, was_created = await search.get_or_create(client.resource("Patient", **patient()))
    assert (again.id, was_created) == (created.id, False)
    other, was_created = (
        await client.resources("Patient")
        .search(identifier=f"{PERSONNUMMER}|191010101010")
        .get_or_create(client.resource("Patient", **patient("191010101010")))
    )
    assert was_created and other.id != created.id

    await fetched.delete()
    response = httpx.get(f"{live_server.base_url}/Patient/{created.id}")
    assert response.status_code == 410


def test_sigkill_right_after_201_loses_nothing(live_server: LiveServer) -> None:
    """Durability: SQLite in WAL mode with synchronous=FULL; a 201 is on disk."""
    response = httpx.post(f"{live_server.base_url}/Patient", json=patient())
    assert response.status_code == 201
    id = response.json()["id"]
    live_server.kill()
    live_server.start()
    read = httpx.get(f"{live_server.base_url}/Patient/{id}")
    assert read.status_code == 200
    assert read.json() == response.json()


def test_server_survives_bad_input_over_the_wire(live_server: LiveServer) -> None:
    url = f"{live_server.base_url}/Patient"
    headers = {"Content-Type": "application/fhir+json"}
    big = b'{"resourceType":"Patient","name":[{"family":"' + b"x" * (50 * 1024 * 1024) + b'"}]}'
    for body in [b'{"resourceType":', b"\xff\xfe", b"[" * 10_000, big]:
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=60)
        except httpx.HTTPError:
            continue  # the server may close the connection on an oversized upload
        assert 400 <= response.status_code < 500
        assert response.json()["resourceType"] == "OperationOutcome"
    assert httpx.get(f"{live_server.base_url}/metadata").status_code == 200
    assert httpx.get(f"{live_server.base_url}/Patient/_history").json()["total"] == 0


def write_locked(db: Path) -> bool:
    """Whether a writer holds the SQLite file's write lock (a unit of work is under way)."""
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()


def test_sigkill_during_a_large_transaction_stores_all_or_none(live_server: LiveServer) -> None:
    """The server is killed (SIGKILL) while it works through a 5,000-entry transaction; after
    a restart the database holds none of it (the commit never came) and serves as before."""
    marker = "urn:sip-fhir:crash-test"
    entries = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": patient(f"19{i:010d}", identifier=[{"system": marker, "value": str(i)}]),
            "request": {"method": "POST", "url": "Patient"},
        }
        for i in range(5000)
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    versions_before = httpx.get(f"{live_server.base_url}/_history").json()["total"]
    outcome: dict[str, object] = {}

    def send() -> None:
        try:
            outcome["status"] = httpx.post(
                live_server.base_url, json=bundle, timeout=120
            ).status_code
        except httpx.TransportError as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 60
    while not write_locked(live_server.db) and time.monotonic() < deadline:
        time.sleep(0.005)  # polling for the transaction to start, not waiting for a time
    live_server.kill()  # inside the transaction: 5,000 validated creates take a second or more
    sender.join()
    assert "error" in outcome, f"the transaction finished before the kill: {outcome}"
    live_server.start()
    found = httpx.get(
        f"{live_server.base_url}/Patient", params={"identifier": f"{marker}|", "_summary": "count"}
    ).json()
    assert found["total"] == 0
    history = httpx.get(f"{live_server.base_url}/_history").json()
    assert history["total"] == versions_before
    created = httpx.post(f"{live_server.base_url}/Patient", json=patient())
    assert created.status_code == 201

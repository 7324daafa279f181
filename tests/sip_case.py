"""The example discharge and SIP case (examples/sip-case), as the SIP process tests load it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.sip.clock import FixedClock
from fhir_server.storage.port import Storage
from tests.conftest import app_client

CASE = Path(__file__).resolve().parent.parent / "examples" / "sip-case"


def example(name: str) -> dict[str, Any]:
    """One example resource by file name (without `.json`)."""
    return json.loads((CASE / f"{name}.json").read_text())


async def load_case(client: httpx.AsyncClient, leave_out: Iterable[str] = ()) -> None:
    """Every example resource (less the types in `leave_out`) in one transaction of PUTs."""
    skipped = set(leave_out)
    entries = []
    for file in sorted(CASE.glob("*.json")):
        resource = json.loads(file.read_text())
        if resource["resourceType"] in skipped:
            continue
        url = f"{resource['resourceType']}/{resource['id']}"
        entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text


# -- What the process tests share ------------------------------------------------------------

OBLIGATION = "http://sip-fhir.se/fhir/CodeSystem/sip-obligation-type"
PATIENT = "Patient/tolvan-tolvansson"
HEALTH_CENTRE = "Organization/ornaset-health-centre"
MUNICIPALITY = "Organization/lulea-municipality"
HOME_CARE = "Organization/lulea-home-care"
WARD = "Organization/sunderby-medical-ward"
ACTS = ("Task", "Communication", "Appointment", "CarePlan")  # what the tests send themselves


@asynccontextmanager
async def case_client(
    store: Storage, settings: Settings, clock: FixedClock, leave_out: Iterable[str] | None = ACTS
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on `store` with `clock` (no sweep timer in the way), the example case loaded
    less `leave_out` (None: nothing loaded)."""
    settings = settings.model_copy(update={"obligation_sweep_interval": 3600.0})
    async with app_client(settings, store, clock) as http:
        if leave_out is not None:
            await load_case(http, leave_out=leave_out)
        yield http


@pytest.fixture(name="client")
async def case_without_acts(
    store: Storage, settings: Settings, clock: FixedClock
) -> AsyncIterator[httpx.AsyncClient]:
    """The case without its Tasks, Communications, meetings and plan: the tests send those.
    A test module that imports it has it as its `client` fixture."""
    async with case_client(store, settings, clock) as http:
        yield http


async def put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    url = f"/{resource['resourceType']}/{resource['id']}"
    response = await client.put(url, json=resource)
    assert response.status_code in (200, 201), response.text


async def tasks(client: httpx.AsyncClient, code: str, **criteria: str) -> list[dict[str, Any]]:
    """The obligation Tasks of `code` matching `criteria`, by deadline."""
    params = {"code": f"{OBLIGATION}|{code}", "_sort": "deadline", **criteria}
    response = await client.get("/Task", params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def owners(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["owner"]["reference"]: t for t in found}


def deadline(task: dict[str, Any]) -> str:
    return task["restriction"]["period"]["end"]

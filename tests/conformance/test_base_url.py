"""The base of absolute URLs: configured (`FHIR_BASE_URL`) or an allowed `Host`, never a
client's choice. `Host: evil.example` must not reach `Location`, `fullUrl` or Bundle links,
which other clients follow.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from fhir_server.config import Settings
from tests.conftest import app_client
from tests.engines import make_storage
from tests.resources import patient

EVIL = {"Host": "evil.example"}
OWN_BASE = "http://testserver/fhir"  # the ASGI transport's scope["server"] is testserver:80
CONFIGURED = "https://fhir.region.se/fhir"


@pytest.fixture
def engine() -> str:
    """The base URL is built in the API layer; one engine shows it."""
    return "sqlite"


async def _client(settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, make_storage("sqlite", tmp_path)) as http:
        yield http


@pytest.fixture
async def configured(settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A server with `FHIR_BASE_URL` set."""
    async for http in _client(settings.model_copy(update={"base_url": CONFIGURED}), tmp_path):
        yield http


def _urls(bundle: dict) -> list[str]:
    links = [link["url"] for link in bundle.get("link", [])]
    return links + [entry["fullUrl"] for entry in bundle.get("entry", []) if "fullUrl" in entry]


def _assert_clean(response: httpx.Response) -> None:
    assert "evil.example" not in response.text
    assert all("evil.example" not in value for value in response.headers.values())


async def _create_patients(client: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for i in range(count):
        created = await client.post("/Patient", json=patient(f"19121212{i:04d}"), headers=EVIL)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    return ids


async def test_foreign_host_is_not_in_location(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=patient(), headers=EVIL)
    assert created.status_code == 201
    _assert_clean(created)
    assert created.headers["location"].startswith(f"{OWN_BASE}/Patient/")
    updated = await client.put(
        f"/Patient/{created.json()['id']}", json=created.json(), headers=EVIL
    )
    _assert_clean(updated)


async def test_foreign_host_is_not_in_search_links_or_full_urls(
    client: httpx.AsyncClient,
) -> None:
    await _create_patients(client, 3)
    page = await client.get("/Patient", params={"_count": "1"}, headers=EVIL)
    assert page.status_code == 200
    _assert_clean(page)
    bundle = page.json()
    relations = {link["relation"] for link in bundle["link"]}
    assert {"self", "next"} <= relations
    assert all(url.startswith(OWN_BASE) for url in _urls(bundle))
    system = await client.get("", params={"_count": "1", "_type": "Patient"}, headers=EVIL)
    _assert_clean(system)


async def test_foreign_host_is_not_in_history_bundles(client: httpx.AsyncClient) -> None:
    [id] = await _create_patients(client, 1)
    for path in [f"/Patient/{id}/_history", "/Patient/_history", "/_history"]:
        history = await client.get(path, params={"_count": "1"}, headers=EVIL)
        assert history.status_code == 200
        _assert_clean(history)
        assert all(url.startswith(OWN_BASE) for url in _urls(history.json()))


async def test_foreign_host_is_not_in_a_transaction_response(client: httpx.AsyncClient) -> None:
    urn = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": urn, "resource": patient(), "request": {"method": "POST", "url": "Patient"}}
        ],
    }
    response = await client.post("", json=bundle, headers=EVIL)
    assert response.status_code == 200, response.text
    _assert_clean(response)
    for entry in response.json()["entry"]:
        location = entry["response"].get("location", "")
        assert "://" not in location or location.startswith(OWN_BASE)


async def test_foreign_host_is_not_in_the_capability_statement(
    client: httpx.AsyncClient,
) -> None:
    statement = await client.get("/metadata", headers=EVIL)
    _assert_clean(statement)


async def test_allowed_host_is_echoed_with_its_port(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=patient(), headers={"Host": "localhost:8443"})
    assert created.headers["location"].startswith("http://localhost:8443/fhir/Patient/")


async def test_a_host_with_more_than_name_and_port_is_not_echoed(
    client: httpx.AsyncClient,
) -> None:
    for host in ["localhost@evil.example", "localhost:80/evil.example", "localhost:x"]:
        created = await client.post("/Patient", json=patient(), headers={"Host": host})
        assert created.headers["location"].startswith(f"{OWN_BASE}/Patient/"), host


async def test_allowed_hosts_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings
) -> None:
    monkeypatch.setenv("FHIR_ALLOWED_HOSTS", '["fhir.example"]')
    allowed = Settings(sqlite_path=settings.sqlite_path, profile_dirs=settings.profile_dirs)
    async for http in _client(allowed, tmp_path):
        echoed = await http.post("/Patient", json=patient(), headers={"Host": "fhir.example"})
        assert echoed.headers["location"].startswith("http://fhir.example/fhir/Patient/")
        local = await http.post("/Patient", json=patient(), headers={"Host": "localhost"})
        assert local.headers["location"].startswith(f"{OWN_BASE}/Patient/")


async def test_configured_base_url_is_the_base_of_every_url(
    configured: httpx.AsyncClient,
) -> None:
    created = await configured.post("/Patient", json=patient(), headers={"Host": "localhost"})
    assert created.headers["location"].startswith(f"{CONFIGURED}/Patient/")
    await configured.post("/Patient", json=patient("191010101010"), headers=EVIL)
    for path in ["/Patient", "/Patient/_history", "/_history"]:
        bundle = (await configured.get(path, params={"_count": "1"}, headers=EVIL)).json()
        urls = _urls(bundle)
        assert urls and all(url.startswith(f"{CONFIGURED}/") or url == CONFIGURED for url in urls)
    statement = (await configured.get("/metadata")).json()
    assert statement["implementation"]["url"] == CONFIGURED


async def test_configured_base_url_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FHIR_BASE_URL", CONFIGURED + "/")
    assert Settings().base_url == CONFIGURED + "/"
    monkeypatch.setenv("FHIR_BASE_URL", "fhir.region.se/fhir")
    with pytest.raises(ValidationError):
        Settings()

"""Content negotiation: _format, Accept, Content-Type; /metadata."""

from __future__ import annotations

import httpx
import pytest

from tests.resources import patient, stored_data


@pytest.mark.parametrize(
    "fmt", ["json", "application/json", "application/fhir+json", "application/json+fhir"]
)
async def test_json_formats_are_served(client: httpx.AsyncClient, fmt: str) -> None:
    response = await client.get("/metadata", params={"_format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")


@pytest.mark.parametrize("fmt", ["xml", "application/fhir+xml", "ttl", "text/html", "bogus"])
async def test_other_formats_are_406(client: httpx.AsyncClient, fmt: str) -> None:
    response = await client.get("/metadata", params={"_format": fmt})
    assert response.status_code == 406
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/fhir+json", 200),
        ("application/json", 200),
        ("*/*", 200),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", 200),
        ("application/fhir+json; fhirVersion=4.0", 200),
        ("application/fhir+xml", 406),
        ("application/fhir+json; fhirVersion=3.0", 406),
        ("application/fhir+json;q=0, application/xml", 406),
    ],
)
async def test_accept_header(client: httpx.AsyncClient, accept: str, status: int) -> None:
    response = await client.get("/metadata", headers={"Accept": accept})
    assert response.status_code == status


@pytest.mark.parametrize(
    "content_type", ["application/fhir+xml", "text/plain", "application/x-www-form-urlencoded"]
)
async def test_non_json_body_is_415_and_stores_nothing(
    client: httpx.AsyncClient, content_type: str
) -> None:
    body = b'{"resourceType":"Patient"}'
    response = await client.post("/Patient", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 415
    assert response.json()["resourceType"] == "OperationOutcome"
    assert await stored_data(client) == []


async def test_json_content_types_are_accepted(client: httpx.AsyncClient) -> None:
    for content_type in ("application/fhir+json", "application/json; charset=utf-8"):
        response = await client.post(
            "/Patient",
            content=b'{"resourceType":"Patient"}',
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 201


async def test_unsupported_route_and_method_are_operation_outcomes(
    client: httpx.AsyncClient,
) -> None:
    not_found = await client.get("/Patient/1/_history/1/extra")
    assert not_found.status_code == 404
    assert not_found.json()["resourceType"] == "OperationOutcome"
    not_allowed = await client.put("/Patient/1/_history/1", json={})  # versions are immutable
    assert not_allowed.status_code == 405
    assert not_allowed.json()["resourceType"] == "OperationOutcome"


async def test_capability_statement_states_what_is_served(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    rest = statement["rest"][0]
    assert [i["code"] for i in rest["interaction"]] == [
        "batch",
        "history-system",
        "search-system",
        "transaction",
    ]
    types = {r["type"]: r for r in rest["resource"]}
    assert len(types) == 146
    patient_caps = types["Patient"]
    codes = {i["code"] for i in patient_caps["interaction"]}
    assert codes == {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "create",
        "search-type",
        "history-instance",
        "history-type",
    }
    assert patient_caps["conditionalCreate"] is True
    assert patient_caps["conditionalDelete"] == "single"
    names = {p["name"] for p in patient_caps["searchParam"]}
    assert {"identifier", "name", "family", "gender", "birthdate", "address-city"} <= names
    common = {p["name"] for p in rest["searchParam"]}
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} <= common


async def test_capability_statement_is_a_valid_resource(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    statement.pop("id", None)
    response = await client.post("/CapabilityStatement", json=statement)
    assert response.status_code == 201, response.text


async def test_patient_round_trip_keeps_unicode(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=patient(family="Åström"))
    read = await client.get(f"/Patient/{created.json()['id']}")
    assert read.json()["name"][0]["family"] == "Åström"

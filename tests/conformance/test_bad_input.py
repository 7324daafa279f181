"""Bad input gets a 4xx OperationOutcome, stores nothing, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from tests.resources import patient, stored_data

JSON = {"Content-Type": "application/fhir+json"}


async def _assert_refused(client: httpx.AsyncClient, response: httpx.Response, status: int):
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] in ("error", "fatal")
    assert await stored_data(client) == []
    assert (await client.post("/Patient", json=patient())).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType":"Patient","name":[{"family":"Tolv',  # truncated
        b"",
        b"[]",
        b'"Patient"',
        b'{"resourceType":"Patient","active":NaN}',
        b'{"resourceType":"Patient"}{"resourceType":"Patient"}',
    ],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/Patient", content=body, headers=JSON)
    await _assert_refused(client, response, 400)


async def test_non_utf8_is_400(client: httpx.AsyncClient) -> None:
    body = '{"resourceType":"Patient","name":[{"family":"Åström"}]}'.encode("latin-1")
    response = await client.post("/Patient", content=body, headers=JSON)
    await _assert_refused(client, response, 400)


async def test_deeply_nested_json_is_400(client: httpx.AsyncClient) -> None:
    depth = 10_000
    body = b'{"resourceType":"Patient","extension":' + b"[" * depth + b"]" * depth + b"}"
    response = await client.post("/Patient", content=body, headers=JSON)
    await _assert_refused(client, response, 400)


async def test_50_mb_body_is_413(client: httpx.AsyncClient) -> None:
    filler = "x" * (50 * 1024 * 1024)
    body = ('{"resourceType":"Patient","name":[{"family":"' + filler + '"}]}').encode()
    response = await client.post("/Patient", content=body, headers=JSON)
    await _assert_refused(client, response, 413)


async def test_unknown_element_names_its_path(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json=patient(favouriteColour="blå"))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.favouriteColour"]
    await _assert_refused_after(client)


async def test_wrong_type_names_its_path(client: httpx.AsyncClient) -> None:
    bad = patient()
    bad["name"][0]["given"] = ["Tolvan", 12]
    response = await client.post("/Patient", json=bad)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.name[0].given[1]"]
    await _assert_refused_after(client)


async def test_missing_required_element_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/CarePlan",
        json={"resourceType": "CarePlan", "intent": "plan", "subject": {"reference": "Patient/1"}},
    )
    assert response.status_code == 422
    assert ["CarePlan.status"] in [i["expression"] for i in response.json()["issue"]]
    await _assert_refused_after(client)


async def test_missing_resource_type_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json={"name": [{"family": "X"}]})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["resourceType"]


async def test_unknown_resource_type_in_body_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put("/Patient/x", json={"resourceType": "Patientt", "id": "x"})
    assert response.status_code == 400


async def _assert_refused_after(client: httpx.AsyncClient) -> None:
    assert await stored_data(client) == []


async def test_duplicate_json_keys_are_400(client: httpx.AsyncClient) -> None:
    body = b'{"resourceType":"Patient","gender":"male","gender":"female"}'
    response = await client.post("/Patient", content=body, headers=JSON)
    await _assert_refused(client, response, 400)
    assert "gender" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType":"Patient","multipleBirthInteger":99999999999999999999}',
        b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}',
        b'{"resourceType":"Patient","active":null}',
        b'{"resourceType":"Patient","birthDate":"2020-02-30"}',
    ],
)
async def test_values_json_allows_but_fhir_does_not_are_400(
    client: httpx.AsyncClient, body: bytes
) -> None:
    response = await client.post("/Patient", content=body, headers=JSON)
    await _assert_refused(client, response, 400)

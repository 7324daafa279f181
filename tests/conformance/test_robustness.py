"""Hostile and buggy input: never a 5xx, always an OperationOutcome, and a refused request
changes nothing. Each test is a reproduction of a request that once answered 500."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.resources import patient, stored_data

JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def assert_outcome(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    assert outcome["issue"], outcome
    return outcome


async def created(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    response = await client.post("/Patient", json=patient(**extra))
    assert response.status_code == 201, response.text
    return response.json()


def cursor(position: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


# -- integers from the request ------------------------------------------------------------


@pytest.mark.parametrize(
    "etag",
    ['W/"²"'.encode(), b'W/"' + b"9" * 5000 + b'"', b'W/"99999999999999999999"', b'W/" 1"'],
)
async def test_if_match_that_is_no_version_number_is_400(
    client: httpx.AsyncClient, etag: bytes
) -> None:
    stored = await created(client)
    body = json.dumps({**stored, "gender": "other"})
    url = f"/Patient/{stored['id']}"
    for method in ("PUT", "PATCH", "DELETE"):
        headers = {**JSON, "If-Match": etag} if method == "PUT" else {"If-Match": etag}
        content: str | None = body
        if method == "PATCH":
            headers["Content-Type"] = JSON_PATCH["Content-Type"]
            content = '[{"op":"replace","path":"/gender","value":"other"}]'
        elif method == "DELETE":
            content = None
        response = await client.request(method, url, headers=headers, content=content)
        outcome = assert_outcome(response, 400)
        assert outcome["issue"][0]["expression"] == ["If-Match"]
    assert (await client.get(url)).json() == stored


@pytest.mark.parametrize("count", ["%C2%B2", "%D9%A3", "9" * 5000, "1_0", "-1", "+1"])
async def test_count_that_is_no_ascii_number_is_400(client: httpx.AsyncClient, count: str) -> None:
    for path in ("/Patient", "/Patient/_history", "/_history"):
        response = await client.get(f"{path}?_count={count}")
        assert_outcome(response, 400)


async def test_count_of_many_digits_is_400_not_an_overflow(client: httpx.AsyncClient) -> None:
    assert_outcome(await client.get("/Patient?_count=99999999999999999999"), 400)
    response = await client.get("/Patient?_count=999999999999")  # huge but a number: capped
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("vid", ["99999999999999999999", "²", "9" * 5000, "1e3"])
async def test_history_version_beyond_any_stored_is_404(
    client: httpx.AsyncClient, vid: str
) -> None:
    stored = await created(client)
    response = await client.get(f"/Patient/{stored['id']}/_history/{vid}")
    assert_outcome(response, 404)


@pytest.mark.parametrize("version", [2**63, 2**64 - 1, 2**70, -1])
async def test_history_cursor_with_a_huge_version_is_400(
    client: httpx.AsyncClient, version: int
) -> None:
    position = cursor(["2026-01-01T00:00:00.000000Z", "Patient", "x", version])
    assert_outcome(await client.get(f"/_history?_cursor={position}"), 400)


async def test_content_length_of_unicode_digits_is_not_a_crash(client: httpx.AsyncClient) -> None:
    body = json.dumps(patient()).encode()
    for length in ("²", "9" * 100, "9" * 5000, "-1"):
        request = client.build_request("POST", "/Patient", content=body, headers=JSON)
        request.headers["Content-Length"] = length
        response = await client.send(request)
        assert response.status_code < 500, response.text
    assert await stored_data(client) == []


# -- dates from the request -----------------------------------------------------------------


@pytest.mark.parametrize(
    "since",
    [
        "0001-01-01T00:00:00%2B01:00",
        "0001-01-01T00:00:00%2B14:00",
        "9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59-14:00",
    ],
)
async def test_since_at_the_ends_of_time_is_answered(client: httpx.AsyncClient, since: str) -> None:
    await created(client)
    response = await client.get(f"/Patient/_history?_since={since}")
    assert response.status_code == 200, response.text
    expected = 1 if since.startswith("0001") else 0
    assert response.json()["total"] == expected


@pytest.mark.parametrize(
    ("header", "modified"),
    [
        ("Mon, 01 Jan 0001 00:00:00 -0000", True),
        ("Tue, 15 Nov 1994 08:12:31 -0000", True),
        ("Fri, 31 Dec 9999 23:59:59 -0000", False),
        ("Fri, 31 Dec 9999 23:59:59 +1400", False),
    ],
)
async def test_if_modified_since_with_an_unknown_zone_is_read_as_utc(
    client: httpx.AsyncClient, header: str, modified: bool
) -> None:
    stored = await created(client)
    response = await client.get(f"/Patient/{stored['id']}", headers={"If-Modified-Since": header})
    assert response.status_code == (200 if modified else 304), response.text


# -- bodies ---------------------------------------------------------------------------------


async def test_search_form_body_that_is_not_utf8_is_400(client: httpx.AsyncClient) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post("/Patient/_search", content=b"name=\xff\xfe", headers=form)
    assert_outcome(response, 400)


async def test_identifier_system_as_an_array_is_400(client: httpx.AsyncClient) -> None:
    identifier = {"system": ["http://electronichealth.se/identifier/personnummer"], "value": "1"}
    response = await client.post("/Patient", json=patient(identifier=[identifier]))
    outcome = assert_outcome(response, 400)
    assert outcome["issue"][0]["expression"] == ["Patient.identifier[0].system"]
    assert await stored_data(client) == []


def nested_extension(levels: int) -> dict[str, Any]:
    root: dict[str, Any] = {"url": "http://example.org/nested"}
    node = root
    for _ in range(levels):
        child: dict[str, Any] = {"url": "http://example.org/nested"}
        node["extension"] = [child]
        node = child
    node["valueString"] = "deep"
    return root


@pytest.mark.parametrize("path", ["/Patient", "/Patient/$validate"])
async def test_json_nested_past_the_serializer_limit_is_400(
    client: httpx.AsyncClient, path: str
) -> None:
    body = {"resourceType": "Patient", "extension": [nested_extension(126)]}
    outcome = assert_outcome(await client.post(path, json=body), 400)
    assert outcome["issue"][0]["code"] == "too-costly"
    assert await stored_data(client) == []


async def test_nesting_within_the_limit_is_stored_and_served(client: httpx.AsyncClient) -> None:
    stored = await created(client, extension=[nested_extension(90)])
    response = await client.get(f"/Patient?_id={stored['id']}&_elements=extension&_pretty=true")
    assert response.status_code == 200, response.text


async def test_patch_that_nests_past_the_limit_is_refused(client: httpx.AsyncClient) -> None:
    stored = await created(client, extension=[nested_extension(90)])
    deep_path = "/extension/0" + "/extension/0" * 90 + "/extension"
    operation = {"op": "add", "path": deep_path, "value": [nested_extension(20)]}
    response = await client.patch(f"/Patient/{stored['id']}", json=[operation], headers=JSON_PATCH)
    assert_outcome(response, 400, 422)
    assert (await client.get(f"/Patient/{stored['id']}")).json() == stored


async def test_integer_past_64_bits_is_kept_as_written(client: httpx.AsyncClient) -> None:
    body = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'
        b'"valueQuantity":{"value":123456789012345678901234567890}}'
    )
    response = await client.post("/Observation", content=body, headers=JSON)
    assert response.status_code == 201, response.text
    read = await client.get(f"/Observation/{response.json()['id']}")
    assert b'"value":123456789012345678901234567890' in read.content


async def test_integer_element_past_64_bits_is_400(client: httpx.AsyncClient) -> None:
    body = b'{"resourceType":"Patient","multipleBirthInteger":-99999999999999999999}'
    assert_outcome(await client.post("/Patient", content=body, headers=JSON), 400)
    assert await stored_data(client) == []


async def test_integer_of_5000_digits_is_refused_by_validation(client: httpx.AsyncClient) -> None:
    body = b'{"resourceType":"Patient","multipleBirthInteger":' + b"9" * 5000 + b"}"
    outcome = assert_outcome(await client.post("/Patient", content=body, headers=JSON), 400)
    assert outcome["issue"][0]["expression"] == ["Patient.multipleBirthInteger"]


@pytest.mark.parametrize(
    "sort", ["", "birthdate", "-_lastUpdated", "name", "_id", "birthdate,name"]
)
@pytest.mark.parametrize(
    "position",
    [
        {"key": [[1], [2]], "offset": 0},
        {"key": [{"a": 1}, "x"], "offset": 0},
        {"key": ["x"], "offset": 2**63},
        {"offset": 2**64 - 1},
        {"offset": -5},
        {"key": [2**64 - 1, "a"]},
        {"before": "x" * 5000},
        {"before": ["x"]},
        "x" * 5000,
        "Patient/../x",
        [1, 2],
    ],
)
async def test_tampered_search_cursor_is_400(
    client: httpx.AsyncClient, sort: str, position: object
) -> None:
    await created(client, birthDate="1990-01-01")
    params = {"_count": "1", "_cursor": cursor(position)}
    if sort:
        params["_sort"] = sort
    assert_outcome(await client.get("/Patient", params=params), 400)


async def test_sort_by_a_composite_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/Observation", params={"_sort": "code-value-quantity"})
    assert assert_outcome(response, 400)["issue"][0]["code"] == "not-supported"


async def test_revinclude_on_a_page_of_1000_is_answered(client: httpx.AsyncClient) -> None:
    """1,000 matches make a 1,000-term OR of references: once past the engine's expression
    depth (SQLite: 1,000) and a 500."""
    entries = []
    for i in range(1000):
        entries.append({"resource": {"resourceType": "Patient", "id": f"p{i}"},
                        "request": {"method": "PUT", "url": f"Patient/p{i}"}})  # fmt: skip
    for i in range(0, 1000, 100):
        observation = {"resourceType": "Observation", "status": "final", "code": {"text": "Vikt"},
                       "subject": {"reference": f"Patient/p{i}"}}  # fmt: skip
        entries.append(
            {"resource": observation, "request": {"method": "POST", "url": "Observation"}}
        )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    assert (await client.post("", json=bundle)).status_code == 200
    params = {"_count": "1000", "_revinclude": "Observation:subject"}
    response = await client.get("/Patient", params=params)
    assert response.status_code == 200, response.text
    modes = [e["search"]["mode"] for e in response.json()["entry"]]
    assert modes.count("match") == 1000 and modes.count("include") == 10


@pytest.mark.parametrize(
    "parameters",
    [
        5,
        {"name": "resource"},
        [{"name": "mode", "valueCode": ["create"]}, {"name": "resource", "resource": {}}],
        [{"name": "profile", "valueUri": {"a": 1}}, {"name": "resource", "resource": {}}],
    ],
)
async def test_validate_parameters_of_the_wrong_shape_are_400(
    client: httpx.AsyncClient, parameters: object
) -> None:
    body = {"resourceType": "Parameters", "parameter": parameters}
    assert_outcome(await client.post("/Patient/$validate", json=body), 400)

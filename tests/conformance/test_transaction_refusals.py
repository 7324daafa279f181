"""A refused transaction changes nothing: for each entry kind and each way it can fail, the
bundle is answered with a 4xx OperationOutcome naming the entry, and the database (every
version in history, every type's count) is as it was. GET/HEAD entries are checked before the
writes commit, so no transaction answers an error after it has stored something."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.resources import patient

GOOD_WRITES: list[dict[str, Any]] = [
    {
        "fullUrl": "urn:uuid:0b9a7c1e-7d3f-4c59-9d1a-3e0c2b6f4a11",
        "resource": patient(name=[{"family": "Nyström"}]),
        "request": {"method": "POST", "url": "Patient"},
    },
    {
        "resource": {"resourceType": "Patient", "id": "fresh", "gender": "female"},
        "request": {"method": "PUT", "url": "Patient/fresh"},
    },
]


def json_patch(operations: list[dict[str, Any]]) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(operations).encode()).decode()
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


def request(method: str, url: str, resource: dict[str, Any] | None = None, **extra: Any):
    entry: dict[str, Any] = {"request": {"method": method, "url": url, **extra}}
    if resource is not None:
        entry["resource"] = resource
    return entry


FAILING: dict[str, tuple[dict[str, Any], int]] = {
    # POST
    "post-invalid": (request("POST", "Patient", {"resourceType": "Patient", "gender": "x"}), 422),
    "post-if-none-exist-several": (
        request("POST", "Patient", patient(), ifNoneExist="family=Dubbel"),
        412,
    ),
    "post-if-none-exist-unknown-param": (
        request("POST", "Patient", patient(), ifNoneExist="colour=blue"),
        400,
    ),
    "post-named-id": (request("POST", "Patient/abc", patient()), 400),
    # PUT
    "put-invalid": (request("PUT", "Patient/p1", {"resourceType": "Patient", "id": "p1",
                                                  "birthDate": "1990-13-40"}), 400),
    "put-if-match-stale": (
        request("PUT", "Patient/p1", {"resourceType": "Patient", "id": "p1"}, ifMatch='W/"7"'),
        412,
    ),
    "put-if-match-not-a-number": (
        request("PUT", "Patient/p1", {"resourceType": "Patient", "id": "p1"}, ifMatch='W/"²"'),
        400,
    ),
    "put-id-differs": (request("PUT", "Patient/p1", {"resourceType": "Patient", "id": "p2"}), 400),
    "put-conditional-several": (
        request("PUT", "Patient?family=Dubbel", {"resourceType": "Patient"}),
        412,
    ),
    # PATCH
    "patch-not-found": (
        request("PATCH", "Patient/nobody", json_patch([{"op": "remove", "path": "/gender"}])),
        404,
    ),
    "patch-test-fails": (
        request("PATCH", "Patient/p1", json_patch([{"op": "test", "path": "/gender",
                                                    "value": "female"}])),
        422,
    ),
    "patch-invalid-result": (
        request("PATCH", "Patient/p1", json_patch([{"op": "add", "path": "/gender",
                                                    "value": "neither"}])),
        422,
    ),
    "patch-bad-document": (request("PATCH", "Patient/p1", {"resourceType": "Basic"}), 400),
    # DELETE
    "delete-if-match-stale": (request("DELETE", "Patient/p1", ifMatch='W/"9"'), 412),
    "delete-conditional-several": (request("DELETE", "Patient?family=Dubbel"), 412),
    "delete-conditional-bad-criteria": (request("DELETE", "Patient?birthdate=notadate"), 400),
    # GET and HEAD: checked before the commit
    "get-version-out-of-range": (
        request("GET", "Patient/p1/_history/99999999999999999999"),
        404,
    ),
    "get-unknown-parameter": (request("GET", "Patient?colour=blue"), 400),
    "get-count-not-a-number": (request("GET", "Patient?_count=%C2%B2"), 400),
    "head-bad-date": (request("HEAD", "Patient?birthdate=ge1990-99"), 400),
    "get-bad-summary": (request("GET", "Patient?_summary=maybe"), 400),
    "get-bad-id": (request("GET", "Patient/not$an$id"), 400),
    # the entry itself
    "unknown-method": (request("TRACE", "Patient"), 400),
    "unknown-type": (request("GET", "Patientt/p1"), 400),
    "unresolved-placeholder": (
        request("POST", "Observation", {
            "resourceType": "Observation", "status": "final", "code": {"text": "Vikt"},
            "subject": {"reference": "urn:uuid:5f1d7c2e-0000-4000-8000-000000000000"}}),
        400,
    ),
    "conditional-reference-none": (
        request("POST", "Observation", {
            "resourceType": "Observation", "status": "final", "code": {"text": "Vikt"},
            "subject": {"reference": "Patient?family=Ingen"}}),
        400,
    ),
}  # fmt: skip


async def snapshot(client: httpx.AsyncClient) -> tuple[Any, ...]:
    history = (await client.get("/_history", params={"_count": "1000"})).json()
    versions = sorted(
        (e["fullUrl"], e["response"]["etag"]) for e in history.get("entry", [])
    )  # fmt: skip
    counts = []
    for type in ("Patient", "Observation"):
        found = (await client.get(f"/{type}", params={"_summary": "count"})).json()
        counts.append(found["total"])
    return history["total"], tuple(versions), tuple(counts)


@pytest.fixture
async def existing(client: httpx.AsyncClient) -> None:
    """Patient/p1 (male, version 1) and two Patients named Dubbel (criteria match several)."""
    put = await client.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1",
                                                "gender": "male"})  # fmt: skip
    assert put.status_code == 201, put.text
    for _ in range(2):
        response = await client.post("/Patient", json=patient(name=[{"family": "Dubbel"}]))
        assert response.status_code == 201, response.text


@pytest.mark.parametrize("failure", sorted(FAILING))
@pytest.mark.usefixtures("existing")
async def test_a_failing_entry_leaves_the_database_unchanged(
    client: httpx.AsyncClient, failure: str
) -> None:
    failing, status = FAILING[failure]
    before = await snapshot(client)
    for position in (0, len(GOOD_WRITES)):  # the failing entry first, and last
        entries = list(GOOD_WRITES)
        entries.insert(position, failing)
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        response = await client.post("", json=bundle)
        assert response.status_code == status, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        issue = outcome["issue"][0]
        assert issue["severity"] in ("error", "fatal")
        assert any(e.startswith(f"Bundle.entry[{position}]") for e in issue["expression"]), issue
        assert await snapshot(client) == before


@pytest.mark.usefixtures("existing")
async def test_get_entries_that_find_nothing_answer_in_place_after_the_commit(
    client: httpx.AsyncClient,
) -> None:
    """A well-formed read of a missing resource is not an error of the bundle: the writes
    commit and the entry says 404 (as a batch would)."""
    entries = [*GOOD_WRITES, request("GET", "Patient/nobody"), request("GET", "Patient/p1")]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "201 Created", "404 Not Found", "200 OK"]


async def test_too_many_searches_in_one_bundle_are_413(client: httpx.AsyncClient) -> None:
    limit = client._transport.app.state.settings.max_batch_searches  # type: ignore[attr-defined]
    entries = [request("GET", f"Patient?family=n{i}") for i in range(limit + 1)]
    for kind in ("batch", "transaction"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [*GOOD_WRITES, *entries]}
        response = await client.post("", json=bundle)
        assert response.status_code == 413, response.text
        assert response.json()["issue"][0]["code"] == "too-costly"
    assert (await client.get("/Patient", params={"_summary": "count"})).json()["total"] == 0


BATCH_ONLY_TRANSACTION_RULES = {"unresolved-placeholder", "conditional-reference-none"}
"""Failures of references between entries: a batch rewrites no references, so these are not
failures there."""


@pytest.mark.parametrize("failure", sorted(set(FAILING) - BATCH_ONLY_TRANSACTION_RULES))
@pytest.mark.usefixtures("existing")
async def test_a_failing_batch_entry_is_answered_in_place_and_changes_nothing(
    client: httpx.AsyncClient, failure: str
) -> None:
    failing, status = FAILING[failure]
    before = await snapshot(client)
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [failing, *GOOD_WRITES]}
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text
    answers = response.json()["entry"]
    assert answers[0]["response"]["status"].startswith(str(status)), answers[0]
    assert answers[0]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert [a["response"]["status"] for a in answers[1:]] == ["201 Created", "201 Created"]
    after = await snapshot(client)
    assert after[0] == before[0] + 2  # the two good writes' versions, nothing of the failing one
    assert after[2] == (before[2][0] + 2, before[2][1])

"""Batch and transaction Bundles (`POST [base]`), on both engines, over HTTP.

A transaction is all or nothing: after a failing entry there is no resource, no history
version and no search index row of any of its entries. References between entries
(`urn:uuid:`) and conditional references (`Patient?identifier=…`) are rewritten to
`Type/id` wherever they sit in a resource.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.config import PROFILES_DIR, Settings
from tests.conftest import TEST_PROFILES
from tests.resources import PERSONNUMMER, care_plan, patient

LIMIT = 50
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A small entry limit, so the 413 needs no huge bundle."""
    return Settings(
        sqlite_path=tmp_path / "fhir.sqlite3",
        profile_dirs=[PROFILES_DIR, TEST_PROFILES],
        max_bundle_entries=LIMIT,
    )


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def entry(resource: dict[str, Any] | None, method: str, url: str, **extra: Any) -> dict:
    out: dict[str, Any] = {"request": {"method": method, "url": url, **extra}}
    if resource is not None:
        out["resource"] = resource
    return out


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def encounter(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": ACT_CODE, "code": "IMP"},
        "subject": {"reference": subject},
        **extra,
    }


async def snapshot(client: httpx.AsyncClient) -> tuple[int, dict[str, int]]:
    """How many history versions exist, and how many resources each type's search finds."""
    history = (await client.get("/_history", params={"_count": "1000"})).json()
    counts = {}
    for type in ("Patient", "Encounter", "CarePlan", "Communication"):
        found = (await client.get(f"/{type}", params={"_summary": "count"})).json()
        counts[type] = found["total"]
    return len(history.get("entry", [])), counts


def location_id(response_entry: dict[str, Any]) -> str:
    return response_entry["response"]["location"].split("/")[1]


async def test_transaction_rewrites_urn_uuid_references_however_deeply_nested(
    client: httpx.AsyncClient,
) -> None:
    patient_url, encounter_url = urn(), urn()
    plan = care_plan(
        patient_url,
        encounter={"reference": encounter_url},
        activity=[{"detail": {"status": "scheduled", "performer": [{"reference": patient_url}]}}],
        extension=[
            {
                "url": "http://example.org/fhir/ext/origin",
                "valueReference": {"reference": encounter_url},
            }
        ],
    )
    response = await client.post(
        "/",
        json=transaction(
            {"fullUrl": encounter_url, **entry(encounter(patient_url), "POST", "Encounter")},
            {"fullUrl": urn(), **entry(plan, "POST", "CarePlan")},
            {"fullUrl": patient_url, **entry(patient(), "POST", "Patient")},
        ),
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created"] * 3
    for e in result["entry"]:
        assert e["response"]["etag"] == 'W/"1"'
        assert e["response"]["lastModified"]
        assert e["response"]["location"].endswith("/_history/1")
    encounter_id, plan_id, patient_id = (location_id(e) for e in result["entry"])
    stored = (await client.get(f"/CarePlan/{plan_id}")).json()
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"
    assert stored["encounter"]["reference"] == f"Encounter/{encounter_id}"
    assert stored["activity"][0]["detail"]["performer"][0]["reference"] == f"Patient/{patient_id}"
    assert stored["extension"][0]["valueReference"]["reference"] == f"Encounter/{encounter_id}"
    found = (await client.get("/CarePlan", params={"subject": f"Patient/{patient_id}"})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [plan_id]


async def test_failing_last_entry_leaves_no_trace(client: httpx.AsyncClient) -> None:
    before = await snapshot(client)
    patient_url = urn()
    bad = encounter(patient_url, status="bogus")
    response = await client.post(
        "/",
        json=transaction(
            {"fullUrl": patient_url, **entry(patient("191111111111"), "POST", "Patient")},
            entry(care_plan(patient_url), "POST", "CarePlan"),
            {"fullUrl": urn(), **entry(bad, "POST", "Encounter")},
        ),
    )
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[2].resource.status"]
    assert issue["diagnostics"].startswith("Bundle.entry[2]: ")
    assert await snapshot(client) == before
    search = await client.get("/Patient", params={"identifier": f"{PERSONNUMMER}|191111111111"})
    assert search.json().get("entry", []) == []


async def test_reference_to_a_placeholder_no_entry_has_fails_the_transaction(
    client: httpx.AsyncClient,
) -> None:
    before = await snapshot(client)
    response = await client.post(
        "/", json=transaction(entry(encounter(urn()), "POST", "Encounter"))
    )
    assert response.status_code == 400, response.text
    assert "names no entry" in response.json()["issue"][0]["diagnostics"]
    assert await snapshot(client) == before


async def test_processing_order_is_delete_post_put_then_get(client: httpx.AsyncClient) -> None:
    """The GET entry comes first in the bundle but sees the writes; the DELETE runs before
    the PUT that creates a resource of the same identifier."""
    old = (await client.post("/Patient", json=patient("191212121212"))).json()
    response = await client.post(
        "/",
        json=transaction(
            entry(None, "GET", f"Patient?identifier={PERSONNUMMER}|191313131313"),
            entry(patient("191313131313", id="put-1"), "PUT", "Patient/put-1"),
            entry(None, "DELETE", f"Patient/{old['id']}"),
        ),
    )
    assert response.status_code == 200, response.text
    got, put, deleted = response.json()["entry"]
    assert [e["resource"]["id"] for e in got["resource"]["entry"]] == ["put-1"]
    assert put["response"]["status"] == "201 Created"
    assert deleted["response"]["status"] == "204 No Content"
    assert (await client.get(f"/Patient/{old['id']}")).status_code == 410


async def test_conditional_references_resolve_one_and_refuse_none_or_several(
    client: httpx.AsyncClient,
) -> None:
    one = (await client.post("/Patient", json=patient("191414141414"))).json()
    for _ in range(2):
        await client.post("/Patient", json=patient("191515151515", "Tvilling"))
    by_pnr = f"Patient?identifier={PERSONNUMMER}|"

    resolved = await client.post(
        "/", json=transaction(entry(care_plan(by_pnr + "191414141414"), "POST", "CarePlan"))
    )
    assert resolved.status_code == 200, resolved.text
    plan = (await client.get(f"/CarePlan/{location_id(resolved.json()['entry'][0])}")).json()
    assert plan["subject"]["reference"] == f"Patient/{one['id']}"

    before = await snapshot(client)
    none = await client.post(
        "/", json=transaction(entry(care_plan(by_pnr + "190000000000"), "POST", "CarePlan"))
    )
    assert none.status_code == 400, none.text
    assert "matches no resource" in none.json()["issue"][0]["diagnostics"]
    several = await client.post(
        "/", json=transaction(entry(care_plan(by_pnr + "191515151515"), "POST", "CarePlan"))
    )
    assert several.status_code == 412, several.text
    assert several.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert await snapshot(client) == before


async def test_conditional_create_update_and_delete_inside_a_transaction(
    client: httpx.AsyncClient,
) -> None:
    existing = (await client.post("/Patient", json=patient("191616161616"))).json()
    gone = (await client.post("/Patient", json=patient("191717171717"))).json()
    criteria = f"identifier={PERSONNUMMER}|"
    response = await client.post(
        "/",
        json=transaction(
            entry(
                patient("191616161616"), "POST", "Patient", ifNoneExist=criteria + "191616161616"
            ),
            entry(
                patient("191818181818", gender="female"), "PUT", f"Patient?{criteria}191818181818"
            ),
            entry(None, "DELETE", f"Patient?{criteria}191717171717"),
        ),
    )
    assert response.status_code == 200, response.text
    create, update, delete = response.json()["entry"]
    assert create["response"]["status"] == "200 OK"
    assert location_id(create) == existing["id"]
    assert update["response"]["status"] == "201 Created"
    assert delete["response"]["status"] == "204 No Content"
    assert (await client.get(f"/Patient/{gone['id']}")).status_code == 410
    history = (await client.get(f"/Patient/{existing['id']}/_history")).json()
    assert len(history["entry"]) == 1  # the conditional create wrote nothing


async def test_if_match_per_entry(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient("191919191919"))).json()
    changed = {**created, "gender": "female"}
    url = f"Patient/{created['id']}"
    before = await snapshot(client)
    stale = await client.post(
        "/",
        json=transaction(
            entry(patient("192020202020"), "POST", "Patient"),
            entry(changed, "PUT", url, ifMatch='W/"2"'),
        ),
    )
    assert stale.status_code == 412, stale.text
    assert stale.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert await snapshot(client) == before
    fresh = await client.post("/", json=transaction(entry(changed, "PUT", url, ifMatch='W/"1"')))
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["entry"][0]["response"]["etag"] == 'W/"2"'


@pytest.mark.parametrize(
    ("entries", "status", "where"),
    [
        (  # the same fullUrl twice
            [
                {
                    "fullUrl": "urn:uuid:0b3e1e52-5a5e-4d0e-9a57-3b1d7e0d1c11",
                    **entry(patient(), "POST", "Patient"),
                },
                {
                    "fullUrl": "urn:uuid:0b3e1e52-5a5e-4d0e-9a57-3b1d7e0d1c11",
                    **entry(patient(), "POST", "Patient"),
                },
            ],
            400,
            "Bundle.entry[1].fullUrl",
        ),
        (  # two entries writing one resource
            [
                entry(patient(id="same"), "PUT", "Patient/same"),
                entry(None, "DELETE", "Patient/same"),
            ],
            400,
            "Bundle.entry[1].request.url",
        ),
        ([entry(patient(), "POST", "Patient")] * (LIMIT + 1), 413, "Bundle.entry"),
        ([entry(patient(), "POST", "Observation")], 400, "Bundle.entry[0].resource.resourceType"),
        ([entry(patient(), "FETCH", "Patient")], 400, "Bundle.entry[0].request.method"),
        ([entry(None, "PUT", "Patient/x")], 400, "Bundle.entry[0].resource"),
        ([entry(None, "PUT", "Patient")], 400, "Bundle.entry[0].request.url"),
        ([entry(None, "GET", "NoSuchType/1")], 400, "Bundle.entry[0].request.url"),
    ],
    ids=["fullUrl", "same-resource", "limit", "type", "method", "no-resource", "no-id", "url"],
)
async def test_malformed_transactions_are_refused_whole(
    client: httpx.AsyncClient, entries: list[dict], status: int, where: str
) -> None:
    before = await snapshot(client)
    response = await client.post("/", json=transaction(*entries))
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert where in response.json()["issue"][0]["expression"]
    assert await snapshot(client) == before


async def test_batch_entries_succeed_or_fail_on_their_own(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient("192121212121"))).json()
    response = await client.post(
        "/",
        json=transaction(
            entry(patient("192222222222"), "POST", "Patient"),
            entry(patient(gender="x"), "POST", "Patient"),
            entry(None, "GET", f"Patient/{created['id']}"),
            entry(None, "GET", "Patient/missing"),
            entry(None, "FETCH", "Patient"),
            kind="batch",
        ),
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == [
        "201 Created", "422 Unprocessable Entity", "200 OK", "404 Not Found", "400 Bad Request"
    ]  # fmt: skip
    assert result["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert result["entry"][2]["resource"]["id"] == created["id"]
    new_id = location_id(result["entry"][0])
    assert (await client.get(f"/Patient/{new_id}")).status_code == 200


async def test_only_batch_and_transaction_bundles_are_processed(client: httpx.AsyncClient) -> None:
    for body in ({"resourceType": "Bundle", "type": "collection"}, patient()):
        response = await client.post("/", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["resourceType"] == "OperationOutcome"


async def test_capability_statement_lists_batch_and_transaction(client: httpx.AsyncClient) -> None:
    rest = (await client.get("/metadata")).json()["rest"][0]
    codes = {i["code"] for i in rest["interaction"]}
    assert {"batch", "transaction"} <= codes


def fhirpath_operation(type: str, path: str, name: str, value: dict[str, Any]) -> dict:
    return {
        "name": "operation",
        "part": [
            {"name": "type", "valueCode": type},
            {"name": "path", "valueString": path},
            {"name": "name", "valueString": name},
            {"name": "value", **value},
        ],
    }


async def test_patch_entries_fhirpath_and_json_patch_with_a_new_entry_referenced(
    client: httpx.AsyncClient,
) -> None:
    """A FHIRPath Patch adds a reference to a Practitioner the same transaction creates (its
    urn:uuid rewritten inside the patch); a JSON Patch in a Binary changes the gender."""
    created = (await client.post("/Patient", json=patient("192323232323"))).json()
    practitioner_url = urn()
    add_gp = fhirpath_operation(
        "add", "Patient", "generalPractitioner", {"valueReference": {"reference": practitioner_url}}
    )
    json_patch = base64.b64encode(
        json.dumps([{"op": "replace", "path": "/gender", "value": "female"}]).encode()
    ).decode()
    other = (await client.post("/Patient", json=patient("192424242424"))).json()
    response = await client.post(
        "/",
        json=transaction(
            {
                "fullUrl": practitioner_url,
                **entry({"resourceType": "Practitioner", "active": True}, "POST", "Practitioner"),
            },
            entry(
                {"resourceType": "Parameters", "parameter": [add_gp]},
                "PATCH",
                f"Patient/{created['id']}",
            ),
            entry(
                {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": json_patch,
                },
                "PATCH",
                f"Patient/{other['id']}",
                ifMatch='W/"1"',
            ),
        ),
    )
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "200 OK", "200 OK"]
    practitioner_id = location_id(response.json()["entry"][0])
    patched = (await client.get(f"/Patient/{created['id']}")).json()
    assert patched["generalPractitioner"] == [{"reference": f"Practitioner/{practitioner_id}"}]
    assert patched["meta"]["versionId"] == "2"
    assert (await client.get(f"/Patient/{other['id']}")).json()["gender"] == "female"


async def test_patch_entry_producing_an_invalid_resource_fails_the_transaction(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post("/Patient", json=patient("192525252525"))).json()
    bad = base64.b64encode(
        json.dumps([{"op": "replace", "path": "/gender", "value": "x"}]).encode()
    ).decode()
    before = await snapshot(client)
    response = await client.post(
        "/",
        json=transaction(
            entry(patient("192626262626"), "POST", "Patient"),
            entry(
                {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": bad,
                },
                "PATCH",
                f"Patient/{created['id']}",
            ),
        ),
    )
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.gender"]
    assert await snapshot(client) == before

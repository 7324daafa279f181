"""`$validate`: the write path's verdict, returned as an OperationOutcome, nothing stored."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conformance.test_profiles import TEST_APPOINTMENT, appointment
from tests.resources import care_plan, patient, stored_data


def _errors(outcome: dict[str, Any]) -> list[tuple[list[str], str]]:
    return [(i["expression"], i["code"]) for i in outcome["issue"] if i["severity"] == "error"]


async def test_valid_resource_gives_200_and_no_errors(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient/$validate", json=patient())
    assert response.status_code == 200
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert _errors(outcome) == []
    assert await stored_data(client) == []


async def test_invalid_resource_gives_200_with_the_write_paths_errors(
    client: httpx.AsyncClient,
) -> None:
    plan = care_plan("Patient/p1", status="bogus")
    checked = await client.post("/CarePlan/$validate", json=plan)
    assert checked.status_code == 200
    assert _errors(checked.json()) == [(["CarePlan.status"], "code-invalid")]
    written = await client.post("/CarePlan", json=plan)
    assert written.status_code == 422
    assert _errors(written.json()) == _errors(checked.json())
    assert await stored_data(client) == []


async def test_parameters_with_resource_and_profile(client: httpx.AsyncClient) -> None:
    unclaimed = appointment()
    unclaimed.pop("meta")
    unclaimed["priority"] = 3
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": unclaimed},
            {"name": "profile", "valueUri": TEST_APPOINTMENT},
        ],
    }
    response = await client.post("/Appointment/$validate", json=body)
    assert response.status_code == 200
    assert _errors(response.json()) == [(["Appointment.priority"], "processing")]
    without_profile = await client.post("/Appointment/$validate", json=unclaimed)
    assert _errors(without_profile.json()) == []


async def test_profile_as_query_parameter(client: httpx.AsyncClient) -> None:
    unclaimed = appointment()
    unclaimed.pop("meta")
    unclaimed.pop("identifier")
    response = await client.post(
        "/Appointment/$validate", params={"profile": TEST_APPOINTMENT}, json=unclaimed
    )
    assert _errors(response.json()) == [(["Appointment.identifier"], "required")]


async def test_mode_update_needs_the_instance_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient/$validate", params={"mode": "update"}, json=patient())
    assert _errors(response.json()) == [(["Patient.id"], "required")]
    other = patient(id="other")
    response = await client.post("/Patient/p1/$validate", params={"mode": "update"}, json=other)
    assert _errors(response.json()) == [(["Patient.id"], "invalid")]
    response = await client.post(
        "/Patient/p1/$validate", params={"mode": "update"}, json=patient(id="p1")
    )
    assert _errors(response.json()) == []


async def test_mode_delete_of_an_existing_and_a_missing_resource(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.put("/Patient/p1", json=patient(id="p1"))).status_code == 201
    response = await client.get("/Patient/p1/$validate", params={"mode": "delete"})
    assert response.status_code == 200
    assert [i["severity"] for i in response.json()["issue"]] == ["information"]
    missing = await client.get("/Patient/nobody/$validate", params={"mode": "delete"})
    assert missing.status_code == 404


async def test_unusable_requests_are_400(client: httpx.AsyncClient) -> None:
    bad_mode = await client.post("/Patient/$validate", params={"mode": "x"}, json=patient())
    assert bad_mode.status_code == 400
    assert bad_mode.json()["issue"][0]["expression"] == ["mode"]
    no_resource = await client.post(
        "/Patient/$validate", json={"resourceType": "Parameters", "parameter": []}
    )
    assert no_resource.status_code == 400
    wrong_type = await client.post("/Patient/$validate", json=care_plan("Patient/p1"))
    assert wrong_type.status_code == 200
    assert _errors(wrong_type.json()) == [(["resourceType"], "invalid")]

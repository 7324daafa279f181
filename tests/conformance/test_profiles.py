"""Profiles from `profiles/` (and the feature-test profiles in `tests/profiles/`) on writes.

Each profile feature has a negative case asserting the exact element location and the
profile element named in the message, and the fully valid resource is the positive case.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.resources import patient

BASE = "http://sip-fhir.se/fhir"
TEST_APPOINTMENT = f"{BASE}/StructureDefinition/test-appointment"
MEETING_FORM = f"{BASE}/StructureDefinition/test-meeting-form"
SIP_CAREPLAN = f"{BASE}/StructureDefinition/sip-careplan"
INERA_PLAN_TYPE = "https://fhir.inera.se/CodeSystem/typeofcareplan-cs"
FOLLOW_UP = {  # R-SIP-08: the follow-up date and who answers for it
    "url": f"{BASE}/StructureDefinition/sip-follow-up",
    "extension": [
        {"url": "date", "valueDate": "2027-01-19"},
        {"url": "responsible", "valueReference": {"reference": "PractitionerRole/coordinator"}},
    ],
}
FORM_SYSTEM = f"{BASE}/CodeSystem/test-meeting-form"


def appointment() -> dict[str, Any]:
    """Valid against the test-appointment profile."""
    return {
        "resourceType": "Appointment",
        "meta": {"profile": [TEST_APPOINTMENT]},
        "extension": [
            {"url": MEETING_FORM, "valueCoding": {"system": FORM_SYSTEM, "code": "digitalt"}}
        ],
        "identifier": [{"system": "urn:test:booking", "value": "B-1"}],
        "status": "booked",
        "serviceType": [{"coding": [{"system": "urn:test:purpose", "code": "sip"}]}],
        "appointmentType": {"coding": [{"system": FORM_SYSTEM, "code": "fysiskt"}]},
        "priority": 5,
        "start": "2026-12-01T09:00:00+01:00",
        "end": "2026-12-01T10:00:00+01:00",
        "participant": [
            {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
            {"actor": {"reference": "PractitionerRole/r1"}, "status": "accepted"},
        ],
    }


def sip_care_plan() -> dict[str, Any]:
    """Valid against the SIP CarePlan profile, which its category triggers."""
    return {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [{"system": INERA_PLAN_TYPE, "code": "SIP"}]}],
        "extension": [FOLLOW_UP],
        "subject": {"reference": "Patient/p1"},
        "author": {"reference": "PractitionerRole/coordinator"},
        "goal": [{"reference": "Goal/main"}],
        "activity": [
            {
                "detail": {
                    "status": "scheduled",
                    "description": "Hemtjänst morgon och kväll",
                    "performer": [{"reference": "Organization/home-care"}],
                }
            }
        ],
    }


def _changed(resource: dict[str, Any], change: Any) -> dict[str, Any]:
    changed = copy.deepcopy(resource)
    change(changed)
    return changed


def _drop(key: str) -> Any:
    return lambda r: r.pop(key)


def _set(key: str, value: Any) -> Any:
    return lambda r: r.__setitem__(key, value)


def _string_meeting_form(resource: dict[str, Any]) -> None:
    extension = resource["extension"][0]
    extension.pop("valueCoding")
    extension["valueString"] = "digitalt"


async def _rejected(client: httpx.AsyncClient, resource: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 422, response.text
    return response.json()["issue"]


async def test_valid_profiled_appointment_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/Appointment", json=appointment())
    assert response.status_code == 201, response.text


# fmt: off
APPOINTMENT_NEGATIVE = [  # (id, change, expression, profile element named in the message)
    ("min-cardinality", lambda r: r["participant"].pop(), "Appointment.participant",
     "Appointment.participant"),
    ("max-zero", _set("description", "Not allowed"), "Appointment.description",
     "Appointment.description"),
    ("nested-min", lambda r: r["participant"][1].pop("actor"), "Appointment.participant[1].actor",
     "Appointment.participant.actor"),
    ("target-profile", lambda r: r["participant"][1].__setitem__(
        "actor", {"reference": "Practitioner/x"}), "Appointment.participant[1].actor",
     "Appointment.participant.actor"),
    ("fixed-value", _set("priority", 3), "Appointment.priority", "Appointment.priority"),
    ("local-binding", _set("appointmentType", {"coding": [{"system": FORM_SYSTEM,
                                                           "code": "brev"}]}),
     "Appointment.appointmentType", "Appointment.appointmentType"),
    ("pattern-slice-missing", _set("serviceType", [{"text": "annat"}]),
     "Appointment.serviceType", "Appointment.serviceType:sip"),
    ("value-slice-missing", _set("identifier", [{"system": "urn:other", "value": "1"}]),
     "Appointment.identifier", "Appointment.identifier:booking"),
    ("slice-child-min", lambda r: r["identifier"][0].pop("value"),
     "Appointment.identifier[0].value", "Appointment.identifier:booking.value"),
    ("extension-slice-missing", _drop("extension"), "Appointment.extension",
     "Appointment.extension:meetingForm"),
    ("extension-value-type", lambda r: _string_meeting_form(r),
     "Appointment.extension[0].valueString", "Extension.value[x]"),
    ("extension-binding", lambda r: r["extension"][0]["valueCoding"].__setitem__("code", "brev"),
     "Appointment.extension[0].valueCoding", "Extension.value[x]"),
    ("added-constraint", _set("end", "2026-12-01T08:00:00+01:00"), "Appointment",
     "test-apt-1"),
]
# fmt: on


@pytest.mark.parametrize(
    ("change", "expression", "named"),
    [case[1:] for case in APPOINTMENT_NEGATIVE],
    ids=[case[0] for case in APPOINTMENT_NEGATIVE],
)
async def test_profile_rule_violations_are_422_at_the_element(
    client: httpx.AsyncClient, change: Any, expression: str, named: str
) -> None:
    issues = await _rejected(client, _changed(appointment(), change))
    hits = [i for i in issues if i["expression"] == [expression] and named in i["diagnostics"]]
    assert hits, issues
    assert all(i["severity"] == "error" for i in hits)


async def test_unclaimed_profile_is_not_enforced(client: httpx.AsyncClient) -> None:
    resource = _changed(appointment(), _set("priority", 3))
    resource.pop("meta")
    response = await client.post("/Appointment", json=resource)
    assert response.status_code == 201, response.text


async def test_unknown_claimed_profile_is_a_warning_not_a_rejection(
    client: httpx.AsyncClient,
) -> None:
    resource = patient(meta={"profile": ["http://example.org/StructureDefinition/unknown"]})
    response = await client.post("/Patient/$validate", json=resource)
    issues = response.json()["issue"]
    [issue] = [i for i in issues if i["expression"] == ["Patient.meta.profile[0]"]]
    assert (issue["severity"], issue["code"]) == ("warning", "not-found")
    assert all(i["severity"] == "warning" for i in issues)
    assert (await client.post("/Patient", json=resource)).status_code == 201


async def test_sip_care_plan_conforming_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/CarePlan", json=sip_care_plan())
    assert response.status_code == 201, response.text


async def test_sip_category_triggers_the_profile_without_a_claim(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-03: a SIP cannot be slipped in unprofiled, e.g. without its coordinator."""
    issues = await _rejected(client, _changed(sip_care_plan(), _drop("author")))
    [issue] = issues
    assert issue["expression"] == ["CarePlan.author"]
    assert "SIPCarePlan CarePlan.author: minimum 1" in issue["diagnostics"]


async def test_sip_care_plan_states_goals_and_interventions(client: httpx.AsyncClient) -> None:
    """R-SIP-07: an active SIP has goals and interventions (constraint sip-careplan-1)."""
    issues = await _rejected(client, _changed(sip_care_plan(), _drop("goal")))
    assert [i["expression"] for i in issues] == [["CarePlan"]]
    assert "sip-careplan-1" in issues[0]["diagnostics"]


async def test_sip_intervention_names_its_responsible_actor(client: httpx.AsyncClient) -> None:
    """R-SIP-11: each intervention has a responsible performer (constraint sip-careplan-2)."""
    plan = _changed(sip_care_plan(), lambda r: r["activity"][0]["detail"].pop("performer"))
    issues = await _rejected(client, plan)
    assert [i["expression"] for i in issues] == [["CarePlan.activity[0]"]]
    assert "sip-careplan-2" in issues[0]["diagnostics"]


async def test_sip_care_plan_subject_must_be_a_patient(client: httpx.AsyncClient) -> None:
    plan = _changed(sip_care_plan(), _set("subject", {"reference": "Group/g1"}))
    issues = await _rejected(client, plan)
    assert [i["expression"] for i in issues] == [["CarePlan.subject"]]


async def test_other_care_plans_are_checked_against_the_base_only(
    client: httpx.AsyncClient,
) -> None:
    plan = _changed(sip_care_plan(), _drop("author"))
    plan["category"] = [{"coding": [{"system": INERA_PLAN_TYPE, "code": "VP"}]}]
    response = await client.post("/CarePlan", json=plan)
    assert response.status_code == 201, response.text


async def test_profiles_are_readable_at_their_canonical_url(client: httpx.AsyncClient) -> None:
    response = await client.get("/StructureDefinition", params={"url": SIP_CAREPLAN})
    assert response.status_code == 200
    [entry] = response.json()["entry"]
    assert entry["resource"]["url"] == SIP_CAREPLAN
    for kind, url in [
        ("ValueSet", f"{BASE}/ValueSet/test-meeting-form"),
        ("CodeSystem", FORM_SYSTEM),
    ]:
        found = (await client.get(f"/{kind}", params={"url": url})).json()
        assert [e["resource"]["url"] for e in found["entry"]] == [url]


async def test_capability_statement_lists_supported_profiles(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    [care_plan] = [r for r in statement["rest"][0]["resource"] if r["type"] == "CarePlan"]
    assert SIP_CAREPLAN in care_plan["supportedProfile"]
    assert {
        "name": "validate",
        "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    } in care_plan["operation"]

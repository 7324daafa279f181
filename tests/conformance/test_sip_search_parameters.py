"""The SIP SearchParameters in `profiles/` (`SearchParameter-sip-*.json`), end to end.

Each one is loaded at start-up, published, advertised in the CapabilityStatement, compiled to
the native FHIRPath subset (no fhirpathpy fallback on the write path) and searchable through
HTTP on both engines: resources that match and resources that do not, `:missing`, and `_sort`
on a date parameter.  The resources are built here with the team's extensions and claim no
profile.  Not defined, on purpose: a Task `obligation` (the R4 `code` with
`:in=ValueSet/sip-obligation-type` does it) and a Communication `message-type` (the R4
`category` with `system|code` or `:in=ValueSet/sip-message-type` does it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.config import PROFILES_DIR
from fhir_server.search.extract import compile_expression
from fhir_server.search.registry import search_params

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sip-case"
SIP = "http://sip-fhir.se/fhir"
EXT = f"{SIP}/StructureDefinition"
MESSAGE_TYPE = f"{SIP}/CodeSystem/sip-message-type"
OBLIGATION = f"{SIP}/CodeSystem/sip-obligation-type"

PARAMETERS = {  # code -> (base, type)
    "participant-organization": ("Appointment", "reference"),
    "deadline": ("Task", "date"),
    "follow-up-date": ("CarePlan", "date"),
    "follow-up-responsible": ("CarePlan", "reference"),
    "participating-organization": ("EpisodeOfCare", "reference"),
    "ready-for-discharge": ("Encounter", "date"),
    "estimated-discharge-date": ("Encounter", "date"),
}


def definition(code: str) -> dict[str, Any]:
    path = PROFILES_DIR / f"SearchParameter-sip-{code}.json"
    return json.loads(Path(path).read_text(encoding="utf-8"))


async def create(client: httpx.AsyncClient, resource: dict[str, Any], id_: str) -> None:
    response = await client.put(f"/{resource['resourceType']}/{id_}", json={**resource, "id": id_})
    assert response.status_code == 201, response.text


async def found(client: httpx.AsyncClient, path: str, **params: str) -> list[str]:
    """Ids of the matches, in the order the server returns them."""
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


# -- the definitions -------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(PARAMETERS))
def test_definition_names_its_rules_and_compiles_natively(code: str) -> None:
    sp = definition(code)
    base, type_ = PARAMETERS[code]
    assert sp["url"] == f"{SIP}/SearchParameter/sip-{code}"
    assert sp["id"] == f"sip-{code}" and sp["code"] == code
    assert (sp["base"], sp["type"], sp["status"]) == ([base], type_, "active")
    assert "R-" in sp["description"]
    assert compile_expression(sp["expression"], base, type_).native, sp["expression"]


@pytest.mark.parametrize("code", sorted(PARAMETERS))
async def test_parameter_is_published_and_advertised(client: httpx.AsyncClient, code: str) -> None:
    base, type_ = PARAMETERS[code]
    url = f"{SIP}/SearchParameter/sip-{code}"
    assert await found(client, "/SearchParameter", url=url) == [f"sip-{code}"]
    assert search_params(base)[code].url == url
    statement = (await client.get("/metadata")).json()
    resource = next(r for r in statement["rest"][0]["resource"] if r["type"] == base)
    advertised = {p["name"]: p for p in resource["searchParam"]}
    assert advertised[code]["definition"] == url
    assert advertised[code]["type"] == type_


def test_redundant_parameters_are_not_defined() -> None:
    """Task `code` and Communication `category` already search obligation and message type."""
    assert "obligation" not in search_params("Task") and "code" in search_params("Task")
    assert "message-type" not in search_params("Communication")
    assert search_params("Communication")["category"].expression == "Communication.category"


# -- Appointment?participant-organization ----------------------------------------------------


def appointment(*participants: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": "booked",
        "description": "SIP-möte",
        "start": "2026-11-26T09:00:00+01:00",
        "end": "2026-11-26T10:00:00+01:00",
        "participant": [{"status": "accepted", **p} for p in participants],
    }


def represents(organization: str) -> list[dict[str, Any]]:
    return [{"url": f"{EXT}/sip-participant-organization", "valueReference": ref(organization)}]


async def test_participant_organization(client: httpx.AsyncClient) -> None:
    """R-SIP-04, R-ACC-01: a unit finds the invitations in which it takes part through a
    participant who represents it (R4 allows no Organization as participant actor); other
    meetings are not found."""
    one = {"actor": ref("Practitioner/p1"), "extension": represents("Organization/o1")}
    two = {"actor": ref("PractitionerRole/r2"), "extension": represents("Organization/o2")}
    await create(client, appointment(one, {"actor": ref("Patient/pat")}), "o1")
    await create(client, appointment(one, two), "o1-and-o2")
    await create(client, appointment(two), "o2")
    await create(client, appointment({"actor": ref("Practitioner/p1")}), "no-org")

    param = "participant-organization"
    hits = await found(client, "/Appointment", **{param: "Organization/o1"})
    assert sorted(hits) == ["o1", "o1-and-o2"]
    assert sorted(await found(client, "/Appointment", **{param: "o2"})) == ["o1-and-o2", "o2"]
    assert await found(client, "/Appointment", **{param: "o9"}) == []
    assert await found(client, "/Appointment", **{f"{param}:missing": "true"}) == ["no-org"]


async def test_participant_organization_ignores_actors(client: httpx.AsyncClient) -> None:
    """Only the represented organisation counts, not a participant's own id."""
    await create(client, appointment({"actor": ref("Practitioner/o1")}), "person")
    assert await found(client, "/Appointment", **{"participant-organization": "o1"}) == []


# -- Task?deadline ---------------------------------------------------------------------------


def task(deadline: str | None, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "description": "Uppgift",
        **extra,
    }
    if deadline is not None:
        resource["restriction"] = {"period": {"end": deadline}}
    return resource


async def test_deadline(client: httpx.AsyncClient) -> None:
    """R-DIS-05, R-IND-01: obligations due by a day are found by their deadline
    (`Task.restriction.period.end`), sorted by it, and those without one by `:missing`."""
    await create(client, task("2026-11-20T12:00:00+01:00"), "noon-20th")
    await create(client, task("2026-11-19T12:00:00+01:00"), "noon-19th")
    await create(client, task("2026-11-25"), "the-25th")
    await create(client, task(None), "no-deadline")

    assert sorted(await found(client, "/Task", deadline="le2026-11-20")) == [
        "noon-19th",
        "noon-20th",
    ]
    assert await found(client, "/Task", deadline="gt2026-11-20") == ["the-25th"]
    assert await found(client, "/Task", deadline="2026-11-19") == ["noon-19th"]
    assert await found(client, "/Task", **{"deadline:missing": "true"}) == ["no-deadline"]
    dated = {"deadline:missing": "false"}
    assert await found(client, "/Task", **dated, _sort="deadline") == [
        "noon-19th",
        "noon-20th",
        "the-25th",
    ]
    assert await found(client, "/Task", **dated, _sort="-deadline") == [
        "the-25th",
        "noon-20th",
        "noon-19th",
    ]


async def test_obligation_is_task_code(client: httpx.AsyncClient) -> None:
    """R-DIS-05: overdue obligations are `code:in` the obligation ValueSet plus `deadline`; no
    `obligation` parameter is needed."""
    coding = {"system": OBLIGATION, "code": "kvittera-meddelande"}
    obligation = {  # what the SIP obligation profile asks for besides the code
        "code": {"coding": [coding]},
        "focus": ref("Communication/admission-notice"),
        "for": ref("Patient/pat"),
        "owner": ref("Organization/o1"),
    }
    await create(client, task("2026-11-20T12:00:00+01:00", **obligation), "ack")
    await create(client, task("2026-11-19T12:00:00+01:00", code={"text": "Annat"}), "other")
    params = {"code:in": f"{SIP}/ValueSet/sip-obligation-type", "deadline": "lt2026-11-21"}
    assert await found(client, "/Task", **params) == ["ack"]
    assert await found(client, "/Task", code=f"{OBLIGATION}|kvittera-meddelande") == ["ack"]


# -- CarePlan?follow-up-date, follow-up-responsible -------------------------------------------


def plan(follow_up: tuple[str, str] | None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "title": "Plan",
        "subject": ref("Patient/pat"),
    }
    if follow_up is not None:
        date, responsible = follow_up
        resource["extension"] = [
            {
                "url": f"{EXT}/sip-follow-up",
                "extension": [
                    {"url": "date", "valueDate": date},
                    {"url": "responsible", "valueReference": ref(responsible)},
                ],
            }
        ]
    return resource


async def test_follow_up(client: httpx.AsyncClient) -> None:
    """R-SIP-08, R-SIP-09: plans due for follow-up, and who follows them up."""
    await create(client, plan(("2027-06-01", "PractitionerRole/r1")), "june")
    await create(client, plan(("2027-01-15", "Organization/o1")), "january")
    await create(client, plan(None), "no-follow-up")

    assert await found(client, "/CarePlan", **{"follow-up-date": "lt2027-02-01"}) == ["january"]
    assert await found(client, "/CarePlan", **{"follow-up-date": "2027-06"}) == ["june"]
    assert await found(client, "/CarePlan", **{"follow-up-date": "2027-03"}) == []
    sorted_ = await found(
        client, "/CarePlan", **{"follow-up-date:missing": "false"}, _sort="follow-up-date"
    )
    assert sorted_ == ["january", "june"]
    missing = await found(client, "/CarePlan", **{"follow-up-date:missing": "true"})
    assert missing == ["no-follow-up"]

    by = "follow-up-responsible"
    assert await found(client, "/CarePlan", **{by: "Organization/o1"}) == ["january"]
    assert await found(client, "/CarePlan", **{f"{by}:PractitionerRole": "r1"}) == ["june"]
    assert await found(client, "/CarePlan", **{by: "Organization/r1"}) == []
    assert await found(client, "/CarePlan", **{f"{by}:missing": "true"}) == ["no-follow-up"]


# -- EpisodeOfCare?participating-organization ------------------------------------------------


def episode(managing: str | None, *participating: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "patient": ref("Patient/pat"),
    }
    if managing is not None:
        resource["managingOrganization"] = ref(managing)
    if participating:
        url = f"{EXT}/sip-participating-organization"
        resource["extension"] = [{"url": url, "valueReference": ref(o)} for o in participating]
    return resource


async def test_participating_organization(client: httpx.AsyncClient) -> None:
    """R-ACC-01, R-DIS-02: the processes an organisation takes part in, as manager or as a
    participating organisation."""
    await create(client, episode("Organization/o1", "Organization/o2"), "both")
    await create(client, episode("Organization/o2"), "managed-by-o2")
    await create(client, episode(None, "Organization/o3", "Organization/o4"), "participants")
    await create(client, episode(None), "none")

    param = "participating-organization"
    assert sorted(await found(client, "/EpisodeOfCare", **{param: "Organization/o2"})) == [
        "both",
        "managed-by-o2",
    ]
    assert await found(client, "/EpisodeOfCare", **{param: "Organization/o1"}) == ["both"]
    assert await found(client, "/EpisodeOfCare", **{param: "o4"}) == ["participants"]
    assert await found(client, "/EpisodeOfCare", **{param: "o9"}) == []
    assert await found(client, "/EpisodeOfCare", **{f"{param}:missing": "true"}) == ["none"]


# -- Encounter?ready-for-discharge, estimated-discharge-date ----------------------------------


def stay(ready: str | None, estimated: str | None) -> dict[str, Any]:
    extensions = []
    if ready is not None:
        extensions.append({"url": f"{EXT}/sip-ready-for-discharge", "valueDateTime": ready})
    if estimated is not None:
        extensions.append({"url": f"{EXT}/sip-estimated-discharge-date", "valueDate": estimated})
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP",
        },
        "subject": ref("Patient/pat"),
        # what the SIP Encounter profile (triggered by the extensions) asks for
        "episodeOfCare": [ref("EpisodeOfCare/process")],
        "period": {"start": "2026-11-16T08:00:00+01:00"},
        "serviceProvider": ref("Organization/ward"),
    }
    if extensions:
        resource["extension"] = extensions
    return resource


async def test_ready_for_discharge(client: httpx.AsyncClient) -> None:
    """R-DIS-08, R-DIS-09: stays judged ready for discharge, by when; the not-yet-ready ones by
    `:missing`."""
    await create(client, stay("2026-11-18T09:30:00+01:00", "2026-11-20"), "ready-18th")
    await create(client, stay("2026-11-20T13:05:00+01:00", None), "ready-20th")
    await create(client, stay(None, "2026-11-25"), "not-ready")

    param = "ready-for-discharge"
    assert await found(client, "/Encounter", **{param: "2026-11-18"}) == ["ready-18th"]
    assert await found(client, "/Encounter", **{param: "ge2026-11-19"}) == ["ready-20th"]
    assert await found(client, "/Encounter", **{param: "lt2026-11-18"}) == []
    assert await found(client, "/Encounter", **{f"{param}:missing": "true"}) == ["not-ready"]
    newest_first = await found(
        client, "/Encounter", **{f"{param}:missing": "false"}, _sort="-" + param
    )
    assert newest_first == ["ready-20th", "ready-18th"]


async def test_estimated_discharge_date(client: httpx.AsyncClient) -> None:
    """R-DIS-03: stays by their preliminary discharge date."""
    await create(client, stay("2026-11-18T09:30:00+01:00", "2026-11-20"), "the-20th")
    await create(client, stay(None, "2026-11-25"), "the-25th")
    await create(client, stay(None, None), "unknown")

    param = "estimated-discharge-date"
    assert await found(client, "/Encounter", **{param: "le2026-11-21"}) == ["the-20th"]
    assert await found(client, "/Encounter", **{param: "ge2026-11-21"}) == ["the-25th"]
    assert await found(client, "/Encounter", **{param: "2026-11-25"}) == ["the-25th"]
    assert await found(client, "/Encounter", **{f"{param}:missing": "true"}) == ["unknown"]


# -- Communication: message type is `category` -----------------------------------------------


async def test_message_type_is_communication_category(client: httpx.AsyncClient) -> None:
    """R-DIS-01: admission notices are `category=<sip-message-type>|inskrivningsmeddelande`; the
    R4 parameter suffices, so no `message-type` is defined."""
    for name in ("admission-notice", "ready-for-discharge"):
        await create(client, example(f"Communication-{name}.json"), name)
    await create(client, {"resourceType": "Communication", "status": "completed"}, "plain")

    admission = f"{MESSAGE_TYPE}|inskrivningsmeddelande"
    assert await found(client, "/Communication", category=admission) == ["admission-notice"]
    any_sip = {"category:in": f"{SIP}/ValueSet/sip-message-type"}
    assert sorted(await found(client, "/Communication", **any_sip)) == [
        "admission-notice",
        "ready-for-discharge",
    ]
    assert await found(client, "/Communication", category=f"{MESSAGE_TYPE}|kallelse") == []


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))

"""SIP process and message profiles: EpisodeOfCare, Encounter, Communication (one profile per
message type), Task (legal obligations), Questionnaire and QuestionnaireResponse.

The valid cases are the example files in `examples/sip-case/`; each negative case changes one
thing and asserts the exact element location and the profile element (or constraint key) named
in the message. Case ids carry the rule id (R-…) they prove.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.resources import same_verdict_from_validate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sip-case"
BASE = "http://sip-fhir.se/fhir"
SD = f"{BASE}/StructureDefinition/"
MESSAGE_TYPE = f"{BASE}/CodeSystem/sip-message-type"
OBLIGATION = f"{BASE}/CodeSystem/sip-obligation-type"
EDD = SD + "sip-estimated-discharge-date"
RFD = SD + "sip-ready-for-discharge"
TRACK = SD + "sip-care-track"
PARTICIPANT = SD + "sip-participating-organization"

Change = Callable[[dict[str, Any]], Any]


def example(name: str) -> dict[str, Any]:
    """An example resource from examples/sip-case, without its id (to POST it)."""
    resource: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    resource.pop("id", None)
    return resource


def unclaimed(resource: dict[str, Any]) -> dict[str, Any]:
    resource.pop("meta", None)
    return resource


def message(code: str, **fields: Any) -> dict[str, Any]:
    """A minimal valid SIP message of one type, claiming nothing (its category triggers it)."""
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": MESSAGE_TYPE, "code": code}]}],
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/stay"},
        "sent": "2026-11-02T15:05:00+01:00",
        "recipient": [{"reference": "Organization/health-centre"}],
        "sender": {"reference": "Organization/ward"},
    }
    resource.update(fields)
    return resource


def invitation() -> dict[str, Any]:
    return message(
        "kallelse",
        encounter=None,
        about=[{"reference": "Appointment/sip-meeting"}, {"reference": "EpisodeOfCare/process"}],
        recipient=[{"reference": "Patient/p1"}, {"reference": "Organization/home-care"}],
        sender={"reference": "PractitionerRole/fast-vardkontakt"},
    )


def general_message() -> dict[str, Any]:
    return message(
        "generellt-meddelande",
        encounter=None,
        about=[{"reference": "EpisodeOfCare/process"}],
        payload=[{"contentString": "Hemtjänsten börjar måndag."}],
    )


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if v is not None}


VALID: dict[str, Callable[[], dict[str, Any]]] = {
    "episodeofcare": lambda: example("EpisodeOfCare-discharge-and-sip.json"),
    "encounter": lambda: example("Encounter-inpatient-stay.json"),
    "admission-notice": lambda: example("Communication-admission-notice.json"),
    "planning-basis-message": lambda: example("Communication-planning-basis-message.json"),
    "ready-for-discharge": lambda: example("Communication-ready-for-discharge.json"),
    "discharge-notice": lambda: example("Communication-discharge-notice.json"),
    "acknowledgement": lambda: example("Communication-admission-notice-acknowledgement.json"),
    "invitation": lambda: _clean(invitation()),
    "general-message": lambda: _clean(general_message()),
    "obligation": lambda: example("Task-acknowledge-admission-notice.json"),
    "obligation-open": lambda: example("Task-establish-sip.json"),
    "questionnaire-planeringsunderlag": lambda: example("Questionnaire-planeringsunderlag.json"),
    "questionnaire-kartlaggning": lambda: example("Questionnaire-kartlaggning.json"),
    "response-planning-basis": lambda: example("QuestionnaireResponse-planning-basis.json"),
    "response-needs-mapping": lambda: example("QuestionnaireResponse-needs-mapping.json"),
}


async def _post(client: httpx.AsyncClient, resource: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/{resource['resourceType']}", json=resource)


async def _rejected(client: httpx.AsyncClient, resource: dict[str, Any]) -> list[dict[str, Any]]:
    response = await _post(client, resource)
    assert response.status_code == 422, response.text
    await same_verdict_from_validate(client, resource, response.json()["issue"])
    return response.json()["issue"]


async def test_valid_process_resources_are_accepted_claimed_and_unclaimed(
    client: httpx.AsyncClient,
) -> None:
    """Each valid case is accepted as is, and again without `meta.profile` (then its trigger
    selects the profile)."""
    for name, make in VALID.items():
        response = await _post(client, make())
        assert response.status_code == 201, (name, response.text)
        response = await _post(client, unclaimed(make()))
        assert response.status_code == 201, (name, response.text)


def _drop(key: str) -> Change:
    return lambda r: r.pop(key)


def _set(key: str, value: Any) -> Change:
    return lambda r: r.__setitem__(key, value)


def _drop_extension(url: str) -> Change:
    def change(r: dict[str, Any]) -> None:
        r["extension"] = [e for e in r.get("extension", []) if e["url"] != url]
        if not r["extension"]:
            r.pop("extension")

    return change


def _replace_extension(url: str, new: dict[str, Any]) -> Change:
    def change(r: dict[str, Any]) -> None:
        r["extension"] = [{"url": url, **new} if e["url"] == url else e for e in r["extension"]]

    return change


def _add_extension(extension: dict[str, Any]) -> Change:
    return lambda r: r.setdefault("extension", []).append(extension)


def _message_code(code: str) -> Change:
    def change(r: dict[str, Any]) -> None:
        for category in r["category"]:
            for coding in category.get("coding", []):
                if coding.get("system") == MESSAGE_TYPE:
                    coding["code"] = code

    return change


def _no_message_type(r: dict[str, Any]) -> None:
    r["category"] = [c for c in r["category"] if c["coding"][0]["system"] != MESSAGE_TYPE]


def _finished_without_end(r: dict[str, Any]) -> None:
    r["status"] = "finished"
    r["period"].pop("end", None)


def _deadline_without_end(r: dict[str, Any]) -> None:
    r["restriction"]["period"].pop("end")


def _obligation_code(code: str) -> Change:
    return lambda r: r["code"]["coding"][0].__setitem__("code", code)


def _nested(*keys: Any, value: Any) -> Change:
    def change(r: dict[str, Any]) -> None:
        node = r
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


# fmt: off
NEGATIVE = [  # (id naming the rule, valid case, change, expression, profile element or key)
    # EpisodeOfCare -------------------------------------------------------------------------
    ("R-SIP-03-process-managing-organization", "episodeofcare", _drop("managingOrganization"),
     "EpisodeOfCare.managingOrganization", "EpisodeOfCare.managingOrganization"),
    ("R-SIP-03-process-managed-by-an-organization", "episodeofcare",
     _set("managingOrganization", {"reference": "Practitioner/x"}),
     "EpisodeOfCare.managingOrganization", "EpisodeOfCare.managingOrganization"),
    ("process-patient-is-a-patient", "episodeofcare",
     _set("patient", {"reference": "Group/x"}), "EpisodeOfCare.patient",
     "EpisodeOfCare.patient"),
    ("R-IND-01-R-DIS-13-process-status-history", "episodeofcare", _drop("statusHistory"),
     "EpisodeOfCare.statusHistory", "EpisodeOfCare.statusHistory"),
    ("process-type-SPU-or-SIP", "episodeofcare", _set("type", [{"text": "Process"}]),
     "EpisodeOfCare", "sip-episodeofcare-1"),
    ("R-DIS-13-R-SIP-10-closed-process-has-an-end", "episodeofcare", _set("status", "finished"),
     "EpisodeOfCare", "sip-episodeofcare-2"),
    ("R-ACC-01-participating-organization-is-an-organization", "episodeofcare",
     _replace_extension(PARTICIPANT, {"valueReference": {"reference": "Patient/x"}}),
     "EpisodeOfCare.extension[0].valueReference", "Extension.value[x]"),
    ("R-MTG-02-care-track-code", "episodeofcare",
     _add_extension({"url": TRACK, "valueCoding": {
         "system": f"{BASE}/CodeSystem/sip-care-track", "code": "gront-spar"}}),
     "EpisodeOfCare.extension[4].valueCoding", "Extension.value[x]"),
    ("R-MTG-03-care-track-at-most-once", "episodeofcare",
     lambda r: [_add_extension({"url": TRACK, "valueCoding": {
         "system": f"{BASE}/CodeSystem/sip-care-track", "code": "rott-spar"}})(r)
         for _ in range(2)],
     "EpisodeOfCare.extension", "EpisodeOfCare.extension:careTrack"),
    # Encounter -----------------------------------------------------------------------------
    ("inpatient-stay-class-IMP", "encounter", _nested("class", "code", value="AMB"),
     "Encounter.class", "Encounter.class"),
    ("inpatient-stay-subject", "encounter", _drop("subject"), "Encounter.subject",
     "Encounter.subject"),
    ("inpatient-stay-service-provider", "encounter", _drop("serviceProvider"),
     "Encounter.serviceProvider", "Encounter.serviceProvider"),
    ("inpatient-stay-admission-time", "encounter", lambda r: r["period"].pop("start"),
     "Encounter.period.start", "Encounter.period.start"),
    ("inpatient-stay-in-a-process", "encounter", _drop("episodeOfCare"),
     "Encounter.episodeOfCare", "Encounter.episodeOfCare"),
    ("R-DIS-12-finished-stay-has-date-of-going-home", "encounter", _finished_without_end,
     "Encounter", "sip-encounter-1"),
    ("R-DIS-03-estimated-discharge-date-is-a-date", "encounter",
     _replace_extension(EDD, {"valueDateTime": "2026-11-09T12:00:00+01:00"}),
     "Encounter.extension[0].valueDateTime", "Extension.value[x]"),
    ("R-DIS-03-estimated-discharge-date-at-most-once", "encounter",
     _add_extension({"url": EDD, "valueDate": "2026-11-10"}),
     "Encounter.extension", "Encounter.extension:estimatedDischargeDate"),
    ("R-DIS-08-ready-for-discharge-is-a-datetime", "encounter",
     _replace_extension(RFD, {"valueString": "idag"}),
     "Encounter.extension[1].valueString", "Extension.value[x]"),
    # Communication: every message type ------------------------------------------------------
    ("message-subject-is-a-patient", "admission-notice", _drop("subject"),
     "Communication.subject", "Communication.subject"),
    ("message-sender", "discharge-notice", _drop("sender"), "Communication.sender",
     "Communication.sender"),
    ("message-recipient", "general-message", _drop("recipient"), "Communication.recipient",
     "Communication.recipient"),
    ("R-DIS-05-R-DIS-09-message-sent-time", "ready-for-discharge", _drop("sent"),
     "Communication.sent", "Communication.sent"),
    ("message-type-code-from-sip-message-type", "general-message",
     lambda r: r["category"][0]["coding"][0].__setitem__("code", "brev"),
     "Communication.category[0]", "Communication.category:messageType"),
    ("message-belongs-to-stay-or-process", "general-message",
     _set("about", [{"reference": "CarePlan/sip"}]), "Communication", "sip-communication-1"),
    # Admission notice (R-DIS-01..04)
    ("R-DIS-03-admission-notice-states-estimated-discharge-date", "admission-notice",
     _drop_extension(EDD), "Communication.extension",
     "Communication.extension:estimatedDischargeDate"),
    ("R-DIS-01-admission-notice-names-the-stay", "admission-notice", _drop("encounter"),
     "Communication.encounter", "Communication.encounter"),
    ("R-DIS-02-admission-notice-goes-to-units", "admission-notice",
     lambda r: r["recipient"].append({"reference": "Patient/x"}), "Communication.recipient[2]",
     "Communication.recipient"),
    ("admission-notice-claimed-but-other-type", "admission-notice",
     _message_code("generellt-meddelande"), "Communication.category",
     "Communication.category:messageType"),
    ("message-claimed-without-message-type", "admission-notice", _no_message_type,
     "Communication.category", "Communication.category:messageType"),
    # Planning basis (R-DIS-06)
    ("R-DIS-06-planning-basis-message-has-payload", "planning-basis-message", _drop("payload"),
     "Communication.payload", "Communication.payload"),
    ("R-DIS-06-planning-basis-payload-is-a-reference", "planning-basis-message",
     _set("payload", [{"contentString": "se bifogat"}]),
     "Communication.payload[0].contentString", "Communication.payload.content[x]"),
    ("R-DIS-06-planning-basis-payload-is-a-questionnaireresponse", "planning-basis-message",
     _set("payload", [{"contentReference": {"reference": "DocumentReference/x"}}]),
     "Communication.payload[0].contentReference", "Communication.payload.content[x]"),
    # Ready for discharge (R-DIS-08)
    ("R-DIS-08-ready-for-discharge-notice-states-the-date", "ready-for-discharge",
     _drop_extension(RFD), "Communication.extension",
     "Communication.extension:readyForDischarge"),
    ("R-DIS-08-ready-for-discharge-notice-names-the-stay", "ready-for-discharge",
     _drop("encounter"), "Communication.encounter", "Communication.encounter"),
    ("R-DIS-08-ready-for-discharge-notice-carries-responsibilities", "ready-for-discharge",
     _drop("payload"), "Communication.payload", "Communication.payload"),
    # Discharge notice (R-DIS-12)
    ("R-DIS-12-discharge-notice-names-the-stay", "discharge-notice", _drop("encounter"),
     "Communication.encounter", "Communication.encounter"),
    ("R-DIS-12-discharge-notice-states-going-home", "discharge-notice", _drop("payload"),
     "Communication.payload", "Communication.payload"),
    # Invitation (R-SIP-04)
    ("R-SIP-04-invitation-is-about-an-appointment", "invitation",
     _set("about", [{"reference": "EpisodeOfCare/process"}]), "Communication",
     "sip-invitation-letter-1"),
    # General message (R-MTG-04)
    ("R-MTG-04-general-message-is-text", "general-message",
     _set("payload", [{"contentReference": {"reference": "DocumentReference/journal"}}]),
     "Communication.payload[0].contentReference", "Communication.payload.content[x]"),
    # Acknowledgement (R-DIS-05)
    ("R-DIS-05-acknowledgement-names-the-notice", "acknowledgement", _drop("inResponseTo"),
     "Communication.inResponseTo", "Communication.inResponseTo"),
    ("R-DIS-05-acknowledgement-of-one-notice", "acknowledgement",
     lambda r: r["inResponseTo"].append({"reference": "Communication/other"}),
     "Communication.inResponseTo", "Communication.inResponseTo"),
    ("R-DIS-05-acknowledgement-answers-a-communication", "acknowledgement",
     _set("inResponseTo", [{"reference": "Task/x"}]), "Communication.inResponseTo[0]",
     "Communication.inResponseTo"),
    # Task: legal obligation ---------------------------------------------------------------
    ("R-DIS-05-obligation-code-from-sip-obligation-type", "obligation",
     _obligation_code("kvittera-senare"), "Task.code", "Task.code"),
    ("R-DIS-05-obligation-deadline", "obligation", _deadline_without_end,
     "Task.restriction.period.end", "Task.restriction.period.end"),
    ("R-DIS-14-obligation-deadline-period", "obligation-open",
     _set("restriction", {"repetitions": 1}), "Task.restriction.period",
     "Task.restriction.period"),
    ("R-SIP-02-obligation-has-a-deadline", "obligation", _drop("restriction"),
     "Task.restriction", "Task.restriction"),
    ("obligation-for-a-patient", "obligation", _set("for", {"reference": "Group/x"}),
     "Task.for", "Task.for"),
    ("obligation-owner", "obligation", _drop("owner"), "Task.owner", "Task.owner"),
    ("obligation-owner-is-a-unit-or-role", "obligation",
     _set("owner", {"reference": "Patient/x"}), "Task.owner", "Task.owner"),
    ("obligation-focus", "obligation", _drop("focus"), "Task.focus", "Task.focus"),
    ("R-IND-01-completed-obligation-records-when", "obligation", _drop("executionPeriod"),
     "Task", "sip-obligation-1"),
    # Questionnaire ------------------------------------------------------------------------
    ("R-DIS-06-form-has-questions", "questionnaire-planeringsunderlag", _drop("item"),
     "Questionnaire.item", "Questionnaire.item"),
    ("form-questions-have-text", "questionnaire-kartlaggning",
     lambda r: r["item"][0].pop("text"), "Questionnaire.item[0].text",
     "Questionnaire.item.text"),
    ("form-is-about-the-patient", "questionnaire-planeringsunderlag",
     _set("subjectType", ["Practitioner"]), "Questionnaire.subjectType[0]",
     "Questionnaire.subjectType"),
    ("form-has-a-title", "questionnaire-kartlaggning", _drop("title"), "Questionnaire.title",
     "Questionnaire.title"),
    ("form-has-a-url", "questionnaire-kartlaggning", _drop("url"), "Questionnaire.url",
     "Questionnaire.url"),
    ("R-DIS-06-response-names-its-form", "response-needs-mapping", _drop("questionnaire"),
     "QuestionnaireResponse.questionnaire", "QuestionnaireResponse.questionnaire"),
    ("process-has-a-type", "episodeofcare", _drop("type"), "EpisodeOfCare.type",
     "EpisodeOfCare.type"),
    ("R-SIP-04-invitation-is-about-the-meeting", "invitation", _drop("about"),
     "Communication.about", "Communication.about"),
    ("form-is-one-of-ours", "questionnaire-kartlaggning",
     _set("url", "http://example.org/Questionnaire/kartlaggning"), "Questionnaire",
     "sip-questionnaire-1"),
    # QuestionnaireResponse ----------------------------------------------------------------
    ("R-DIS-06-planning-basis-answers-our-form", "response-planning-basis",
     _set("questionnaire", "http://example.org/Questionnaire/other"), "QuestionnaireResponse",
     "sip-questionnaireresponse-1"),
    ("R-DIS-06-planning-basis-authored", "response-planning-basis", _drop("authored"),
     "QuestionnaireResponse.authored", "QuestionnaireResponse.authored"),
    ("R-DIS-06-planning-basis-author", "response-planning-basis", _drop("author"),
     "QuestionnaireResponse.author", "QuestionnaireResponse.author"),
    ("response-subject-is-a-patient", "response-needs-mapping",
     _set("subject", {"reference": "Group/x"}), "QuestionnaireResponse.subject",
     "QuestionnaireResponse.subject"),
]
# fmt: on


@pytest.mark.parametrize(
    ("case", "change", "expression", "named"),
    [case[1:] for case in NEGATIVE],
    ids=[case[0] for case in NEGATIVE],
)
async def test_process_profile_violations_are_422_at_the_element(
    client: httpx.AsyncClient, case: str, change: Change, expression: str, named: str
) -> None:
    resource = VALID[case]()
    change(resource)
    issues = await _rejected(client, resource)
    hits = [i for i in issues if i["expression"] == [expression] and named in i["diagnostics"]]
    assert hits, issues
    assert all(i["severity"] == "error" for i in hits)


async def test_R_DIS_05_acknowledgement_triggered_by_its_message_type(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-05: a kvittens that claims no profile is still held to the acknowledgement
    profile (its exact category coding triggers it), and to the SIP message base."""
    resource = unclaimed(VALID["acknowledgement"]())
    resource.pop("inResponseTo")
    resource.pop("sender")
    issues = await _rejected(client, resource)
    named = {(i["expression"][0], i["diagnostics"].split(" ", 1)[0]) for i in issues}
    assert ("Communication.inResponseTo", "SIPAcknowledgement") in named, issues
    assert ("Communication.sender", "SIPCommunication") in named, issues


@pytest.mark.parametrize(
    ("profile", "code"),
    [
        ("sip-admission-notice", "inskrivningsmeddelande"),
        ("sip-planning-basis-message", "planeringsunderlag"),
        ("sip-ready-for-discharge-notice", "utskrivningsklar"),
        ("sip-discharge-notice", "utskrivningsmeddelande"),
        ("sip-invitation-letter", "kallelse"),
        ("sip-general-message", "generellt-meddelande"),
        ("sip-acknowledgement", "kvittens"),
    ],
)
async def test_each_message_type_triggers_its_profile(
    client: httpx.AsyncClient, profile: str, code: str
) -> None:
    """A bare message of each type (no encounter, no process) fails the SIP message base
    constraint, reported once, under the derived profile the category selected."""
    resource = message(code, encounter=None)
    issues = await _rejected(client, _clean(resource))
    hits = [i for i in issues if "sip-communication-1" in i["diagnostics"]]
    assert len(hits) == 1, issues
    assert hits[0]["expression"] == ["Communication"]


async def test_R_DIS_04_minimal_admission_notice_without_reason_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-04: without consent the admission notice carries only the estimated discharge
    date (with name, personnummer and address on the Patient); the reason for admission
    (R-DIS-03) is therefore not required by the profile."""
    resource = VALID["admission-notice"]()
    resource.pop("reasonCode")
    resource["payload"] = [{"contentString": "Preliminärt utskrivningsdatum 2026-11-09."}]
    assert (await _post(client, resource)).status_code == 201


async def test_R_DIS_08_ready_for_discharge_on_the_stay_triggers_the_encounter_profile(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-08: an Encounter recording the ready-for-discharge judgement is a SIP inpatient
    stay even unclaimed: it must be class IMP."""
    resource = unclaimed(VALID["encounter"]())
    resource["class"]["code"] = "AMB"
    issues = await _rejected(client, resource)
    assert any(i["expression"] == ["Encounter.class"] for i in issues), issues


async def test_resources_without_sip_markers_are_not_held_to_the_profiles(
    client: httpx.AsyncClient,
) -> None:
    """Plain Communications, Tasks, Encounters, EpisodesOfCare, Questionnaires and
    QuestionnaireResponses (no SIP coding, extension or canonical) are checked against R4
    only."""
    plain = [
        {"resourceType": "Communication", "status": "completed"},
        {
            "resourceType": "Communication",
            "status": "completed",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/"
                            "communication-category",
                            "code": "notification",
                        }
                    ]
                }
            ],
        },
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": "urn:test:tasks", "code": "call"}]},
        },
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        },
        {
            "resourceType": "EpisodeOfCare",
            "status": "active",
            "patient": {"reference": "Patient/p1"},
        },
        {
            "resourceType": "Questionnaire",
            "status": "draft",
            "url": "http://example.org/Questionnaire/q",
        },
        {
            "resourceType": "QuestionnaireResponse",
            "status": "completed",
            "questionnaire": "http://example.org/Questionnaire/q",
        },
    ]
    for resource in plain:
        response = await _post(client, resource)
        assert response.status_code == 201, (resource, response.text)


PUBLISHED = [
    "sip-episodeofcare",
    "sip-encounter",
    "sip-communication",
    "sip-admission-notice",
    "sip-planning-basis-message",
    "sip-ready-for-discharge-notice",
    "sip-discharge-notice",
    "sip-invitation-letter",
    "sip-general-message",
    "sip-acknowledgement",
    "sip-obligation",
    "sip-questionnaire",
    "sip-questionnaireresponse",
    "sip-participating-organization",
    "sip-estimated-discharge-date",
    "sip-ready-for-discharge",
    "sip-care-track",
]


async def test_process_profiles_are_published_at_their_canonical_url(
    client: httpx.AsyncClient,
) -> None:
    for name in PUBLISHED:
        response = await client.get("/StructureDefinition", params={"url": SD + name})
        assert response.status_code == 200
        [entry] = response.json()["entry"]
        assert entry["resource"]["id"] == name
        assert entry["resource"]["version"] == "0.1.0"

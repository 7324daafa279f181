"""Gates on write (fhir_server.sip.gates), on both engines, over HTTP.

The example case (examples/sip-case) is loaded with a transaction of PUTs; each test breaks
one rule's precondition, sees the write refused with 422 naming the rule and the element and
nothing stored, then restores the precondition and sees the same resource accepted.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.sip.clock import STOCKHOLM, FixedClock
from tests.conftest import app_client
from tests.engines import make_storage
from tests.sip_case import example, load_case

SIP = "http://sip-fhir.se/fhir"
CLOSURE_REASON = f"{SIP}/StructureDefinition/sip-closure-reason"
PARTICIPANT_ORGANIZATION = f"{SIP}/StructureDefinition/sip-participant-organization"
PARTICIPATING_ORGANIZATION = f"{SIP}/StructureDefinition/sip-participating-organization"


@pytest.fixture
async def client(
    engine: str, tmp_path: Path, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    clock = FixedClock(datetime(2026, 11, 20, 9, 0, tzinfo=STOCKHOLM))
    async with app_client(settings, make_storage(engine, tmp_path), clock) as http:
        await load_case(http)
        yield http


async def put(client: httpx.AsyncClient, resource: dict[str, Any]) -> httpx.Response:
    return await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)


async def accepted(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await put(client, resource)
    assert response.status_code in (200, 201), response.text


async def snapshot(client: httpx.AsyncClient, type: str) -> tuple[int, int]:
    """How many resources of `type` and how many versions of them: both unchanged by a
    refused write."""
    count = await client.get(f"/{type}", params={"_summary": "count"})
    history = await client.get(f"/{type}/_history", params={"_count": "0"})
    assert count.status_code == history.status_code == 200
    return count.json()["total"], history.json()["total"]


async def refused(
    client: httpx.AsyncClient, resource: dict[str, Any], rule: str, expression: str
) -> None:
    """422 naming `rule` and `expression`, and nothing of `resource`'s type stored."""
    before = await snapshot(client, resource["resourceType"])
    response = await put(client, resource)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "business-rule"
    assert issue["diagnostics"].startswith(f"{rule}: "), issue
    assert issue["expression"] == [expression], issue
    assert await snapshot(client, resource["resourceType"]) == before


def renamed(resource: dict[str, Any], id: str) -> dict[str, Any]:
    return {**copy.deepcopy(resource), "id": id}


async def set_status(client: httpx.AsyncClient, name: str, status: str) -> None:
    resource = example(name)
    resource["status"] = status
    await accepted(client, resource)


# -- R-SIP-01 ------------------------------------------------------------------------------


async def test_r_sip_01_active_plan_needs_consent(client: httpx.AsyncClient) -> None:
    """R-SIP-01: an active SIP needs the person's active consent to SIP."""
    await set_status(client, "Consent-sip", "inactive")
    plan = renamed(example("CarePlan-sip"), "second-plan")
    await refused(client, plan, "R-SIP-01", "CarePlan.status")
    draft = {**plan, "status": "draft"}
    await accepted(client, draft)  # a draft needs no consent yet
    await refused(client, plan, "R-SIP-01", "CarePlan.status")
    await set_status(client, "Consent-sip", "active")
    await accepted(client, plan)


async def test_r_sip_01_checked_again_when_the_person_is_written(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-01: the consent gate applies to Patients stored here, so a plan written before
    its person is not stored yet, and the person's own write is then refused until the
    consent is there (no order of writes skips the rule)."""
    person = renamed(example("Patient-tolvan-tolvansson"), "new-person")
    plan = renamed(example("CarePlan-sip"), "plan-before-person")
    plan["subject"] = {"reference": "Patient/new-person"}
    for activity in plan["activity"]:  # self-care is the plan's own person's (sip-careplan-5)
        for performer in activity.get("detail", {}).get("performer", []):
            if performer.get("reference") == "Patient/tolvan-tolvansson":
                performer["reference"] = "Patient/new-person"
    await accepted(client, plan)  # the person is not held here (yet)
    await refused(client, person, "R-SIP-01", "Patient")
    consent = renamed(example("Consent-sip"), "new-person-sip")
    consent["patient"] = {"reference": "Patient/new-person"}
    await accepted(client, consent)
    await accepted(client, person)


async def test_r_sip_01_in_a_transaction_the_order_of_entries_does_not_matter(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-01 in a transaction: the gates judge the bundle's end state, so a plan may come
    before the consent it needs; without that consent the bundle is refused, naming the
    plan's entry, and nothing of it is stored."""
    await set_status(client, "Consent-sip", "inactive")
    plan = renamed(example("CarePlan-sip"), "second-plan")
    consent = {**example("Consent-sip"), "status": "active"}

    def entry(resource: dict[str, Any]) -> dict[str, Any]:
        url = f"{resource['resourceType']}/{resource['id']}"
        return {"resource": resource, "request": {"method": "PUT", "url": url}}

    before = await snapshot(client, "CarePlan")
    alone = {"resourceType": "Bundle", "type": "transaction", "entry": [entry(plan)]}
    response = await client.post("", json=alone)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["diagnostics"].startswith("Bundle.entry[0]: R-SIP-01: "), issue
    assert issue["expression"] == ["Bundle.entry[0].resource.status"]
    assert await snapshot(client, "CarePlan") == before
    both = {"resourceType": "Bundle", "type": "transaction",
            "entry": [entry(plan), entry(consent)]}  # fmt: skip
    response = await client.post("", json=both)
    assert response.status_code == 200, response.text


def child(birth_date: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "child",
        "name": [{"family": "Svensson", "given": ["Alva"]}],
        "birthDate": birth_date,
    }


def local_record_consent() -> dict[str, Any]:
    """A SIP consent kept in the local record system: `source[x]`, no provision."""
    consent = renamed(example("Consent-sip"), "child-consent")
    consent["patient"] = consent["performer"][0] = {"reference": "Patient/child"}
    del consent["provision"]
    consent["sourceReference"] = {"reference": "DocumentReference/local-record-consent"}
    return consent


def plan_for_child() -> dict[str, Any]:
    plan = renamed(example("CarePlan-sip"), "child-plan")
    plan["subject"] = {"reference": "Patient/child"}
    for activity in plan["activity"]:
        for performer in activity.get("detail", {}).get("performer", []):
            if performer["reference"].startswith("Patient/"):
                performer["reference"] = "Patient/child"
    return plan


async def test_r_sip_01_under_18_a_consent_in_the_local_record_suffices(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-01: for a person under 18 (at the plan's start, 2026-11-17) a reference to the
    local record is the consent; an adult's consent must be recorded here."""
    await accepted(client, child("2008-11-18"))  # 18 the day after the plan starts
    await accepted(client, local_record_consent())
    await accepted(client, plan_for_child())
    await accepted(client, {**plan_for_child(), "status": "draft"})
    await accepted(client, child("2008-11-17"))  # 18 on the plan's start: not accepted
    await refused(client, plan_for_child(), "R-SIP-01", "CarePlan.status")


# -- R-DIS-04 ------------------------------------------------------------------------------


def with_(name: str, **changes: Any) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        return {**renamed(example(name), "gate-message"), **changes}

    return make


def admission_with_attachment() -> dict[str, Any]:
    notice = with_("Communication-admission-notice")()
    del notice["reasonCode"]
    notice["payload"] = [{"contentAttachment": {"contentType": "text/plain", "data": "SGVq"}}]
    return notice


def admission_with_other_extension() -> dict[str, Any]:
    notice = with_("Communication-admission-notice")()
    del notice["reasonCode"]
    notice["extension"].append(
        {"url": f"{SIP}/StructureDefinition/sip-ready-for-discharge", "valueDateTime":
         "2026-11-09T10:15:00+01:00"}
    )  # fmt: skip
    return notice


@pytest.mark.parametrize(
    ("make", "expression"),
    [
        (with_("Communication-admission-notice"), "Communication.reasonCode"),
        (admission_with_attachment, "Communication.payload[0]"),
        (admission_with_other_extension, "Communication.extension[1]"),
        (with_("Communication-ready-for-discharge"), "Communication.category"),
        (with_("Communication-planning-basis-message"), "Communication.category"),
        (with_("Communication-invitation-follow-up-meeting"), "Communication.category"),
        (with_("Communication-general-message-home-care-start"), "Communication.category"),
    ],
)
async def test_r_dis_04_without_consent_only_the_bare_notices(
    client: httpx.AsyncClient, make: Callable[[], dict[str, Any]], expression: str
) -> None:
    """R-DIS-04: without consent to information transfer only the admission and discharge
    notices are sent, with the estimated discharge date and text, nothing more."""
    await set_status(client, "Consent-information-transfer", "inactive")
    await refused(client, make(), "R-DIS-04", expression)
    await set_status(client, "Consent-information-transfer", "active")
    await accepted(client, make())


async def test_r_dis_04_bare_notices_and_acknowledgements_go_without_consent(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-04: the admission notice without its reason, the discharge notice and (R-DIS-05)
    an acknowledgement are sent whatever the consent."""
    await set_status(client, "Consent-information-transfer", "inactive")
    notice = with_("Communication-admission-notice")()
    del notice["reasonCode"]
    await accepted(client, notice)
    await accepted(client, example("Communication-discharge-notice"))
    await accepted(client, example("Communication-admission-notice-acknowledgement"))


# -- R-SIP-10 ------------------------------------------------------------------------------


def closed(reason: str, author: str | None = None) -> dict[str, Any]:
    plan = example("CarePlan-sip")
    plan["status"] = "completed"
    plan["extension"].append(
        {"url": CLOSURE_REASON, "valueCodeableConcept": {"coding": [
            {"system": f"{SIP}/CodeSystem/sip-plan-closure-reason", "code": reason}]}}
    )  # fmt: skip
    if author is not None:
        plan["author"] = {"reference": author}
    return plan


OFFICER = "PractitionerRole/needs-assessment-officer"


async def test_r_sip_10_closed_only_by_its_coordinator(client: httpx.AsyncClient) -> None:
    """R-SIP-10: the coordinator (the plan's author, until authentication names the writer)
    closes the plan; another author on closing is refused. Once the coordinator is handed
    over (R-SIP-03) the new one closes it."""
    await refused(client, closed("mal-uppfyllda", OFFICER), "R-SIP-10", "CarePlan.author")
    handed_over = example("CarePlan-sip")
    handed_over["author"] = {"reference": OFFICER}
    await accepted(client, handed_over)
    await accepted(client, closed("mal-uppfyllda", OFFICER))


async def test_r_sip_10_on_death_anyone_closes_the_plan(client: httpx.AsyncClient) -> None:
    """R-SIP-10, R-DIS-13: on death the plan is closed by whoever learns of it."""
    await accepted(client, closed("avliden", OFFICER))


# -- R-DIS-08 / R-DIS-12 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rule"),
    [("Communication-ready-for-discharge", "R-DIS-08"),
     ("Communication-discharge-notice", "R-DIS-12")],
)  # fmt: skip
async def test_r_dis_08_ready_notice_goes_to_the_admission_notice_recipients(
    client: httpx.AsyncClient, name: str, rule: str
) -> None:
    """R-DIS-08 (and R-DIS-12 for the discharge notice): every recipient of the stay's
    admission notice gets the notice."""
    notice = renamed(example(name), "gate-notice")
    notice["recipient"] = [{"reference": "Organization/ornaset-health-centre"}]
    await refused(client, notice, rule, "Communication.recipient")
    admission = example("Communication-admission-notice")
    admission["recipient"] = [{"reference": "Organization/ornaset-health-centre"}]
    await accepted(client, admission)
    await accepted(client, notice)


# -- R-MTG-01 ------------------------------------------------------------------------------


def actor_meeting(*, with_person: bool = False, caller_first: str = "") -> dict[str, Any]:
    """The SIP meeting turned into an actor/planning meeting (without the person)."""
    meeting = renamed(example("Appointment-sip-meeting"), "actor-meeting")
    meeting["serviceType"] = [{"coding": [
        {"system": f"{SIP}/CodeSystem/sip-meeting-purpose", "code": "aktors-och-planeringsmote"}
    ]}]  # fmt: skip
    if not with_person:
        meeting["participant"] = meeting["participant"][2:]
    if caller_first:
        first = next(
            p for p in meeting["participant"]
            if p.get("extension", [{}])[0].get("valueReference", {}).get("reference")
            == caller_first
        )  # fmt: skip
        meeting["participant"].remove(first)
        meeting["participant"].insert(0, first)
    return meeting


async def test_r_mtg_01_actor_meeting_is_without_the_person(client: httpx.AsyncClient) -> None:
    """R-MTG-01: the person and next of kin are not participants of an actor/planning
    meeting."""
    meeting = actor_meeting(with_person=True)
    await refused(client, meeting, "R-MTG-01", "Appointment.participant[0].actor")
    await accepted(client, actor_meeting())


@pytest.mark.parametrize(
    ("caller", "allowed"),
    [
        ("Organization/sunderby-medical-ward", False),  # slutenvård
        ("Organization/ornaset-health-centre", True),  # närsjukvård
        ("Organization/lulea-municipality", True),  # a municipality, no unit type
    ],
)
async def test_r_mtg_01_actor_meeting_is_called_by_an_outpatient_unit(
    client: httpx.AsyncClient, caller: str, allowed: bool
) -> None:
    """R-MTG-01: the caller, the organisation of the first participant, is primary care,
    local psychiatry or a municipal unit, never inpatient care."""
    meeting = actor_meeting(caller_first=caller)
    if allowed:
        await accepted(client, meeting)
        return
    where = f"Appointment.participant[0].extension('{PARTICIPANT_ORGANIZATION}')"
    await refused(client, meeting, "R-MTG-01", where)
    await accepted(client, actor_meeting(caller_first="Organization/ornaset-health-centre"))


# -- R-MTG-04 ------------------------------------------------------------------------------


async def test_r_mtg_04_meeting_note_is_brief(client: httpx.AsyncClient) -> None:
    """R-MTG-04: a meeting note (Appointment.comment) is at most 1,000 characters."""
    meeting = example("Appointment-sip-follow-up-meeting")
    meeting["comment"] = "x" * 1001
    await refused(client, meeting, "R-MTG-04", "Appointment.comment")
    meeting["comment"] = "x" * 1000
    await accepted(client, meeting)


async def test_r_mtg_04_general_message_about_a_meeting_is_brief(
    client: httpx.AsyncClient,
) -> None:
    """R-MTG-04: a general message about a meeting is a meeting note: at most 1,000
    characters per text."""
    message = renamed(example("Communication-general-message-home-care-start"), "note")
    message["about"].append({"reference": "Appointment/sip-meeting"})
    message["payload"] = [{"contentString": "x" * 1001}]
    await refused(client, message, "R-MTG-04", "Communication.payload[0].contentString")
    message["payload"] = [{"contentString": "x" * 1000}]
    await accepted(client, message)


# -- R-SIP-07 / R-SIP-11 -------------------------------------------------------------------


async def test_r_sip_07_responsible_units_take_part_in_the_process(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-07, R-SIP-11: an intervention's responsible Organization is the managing or a
    participating organisation of the EpisodeOfCare the plan names."""
    plan = example("CarePlan-sip")
    plan["supportingInfo"].append({"reference": "EpisodeOfCare/discharge-and-sip"})
    plan["activity"][0]["detail"]["performer"] = [{"reference": "Organization/region-norrbotten"}]
    await refused(client, plan, "R-SIP-07", "CarePlan.activity[0].detail.performer[0]")
    episode = example("EpisodeOfCare-discharge-and-sip")
    episode["extension"].append(
        {"url": PARTICIPATING_ORGANIZATION,
         "valueReference": {"reference": "Organization/region-norrbotten"}}
    )  # fmt: skip
    await accepted(client, episode)
    await accepted(client, plan)

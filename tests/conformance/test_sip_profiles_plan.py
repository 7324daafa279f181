"""SIP profiles of the plan and its meetings: sip-careplan, sip-goal, sip-meeting, sip-consent
(with sip-consent-sip and sip-consent-information-transfer) and their extensions.

Each profile has its example from `examples/sip-case/` as the valid case and negative cases with
the exact `expression` and the rule (constraint key or profile element) in the message; the
docstrings name the SIP-PROCESS rule each case proves.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.resources import same_verdict_from_validate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sip-case"
BASE = "http://sip-fhir.se/fhir"
SD = f"{BASE}/StructureDefinition"
CS = f"{BASE}/CodeSystem"
FOLLOW_UP = f"{SD}/sip-follow-up"
CLOSURE = f"{SD}/sip-closure-reason"
PARTICIPANT_ORG = f"{SD}/sip-participant-organization"
DIAL_IN = f"{SD}/sip-meeting-dial-in"
GOAL_REL = "http://hl7.org/fhir/StructureDefinition/goal-relationship"

Change = Callable[[dict[str, Any]], Any]


def example(name: str) -> dict[str, Any]:
    """An example resource (it claims its profile), without its id, ready for POST."""
    resource = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    resource.pop("id")
    return resource


def changed(resource: dict[str, Any], *changes: Change) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    for change in changes:
        change(out)
    return out


def drop(key: str) -> Change:
    return lambda r: r.pop(key)


def put(key: str, value: Any) -> Change:
    return lambda r: r.__setitem__(key, copy.deepcopy(value))


def unclaimed(r: dict[str, Any]) -> None:
    r.pop("meta")


async def accepted(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text


async def rejected_at(
    client: httpx.AsyncClient, resource: dict[str, Any], expression: str, named: str
) -> list[dict[str, Any]]:
    """422, with an error at exactly `expression` whose message names `named`."""
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 422, response.text
    issues = response.json()["issue"]
    await same_verdict_from_validate(client, resource, issues)
    hits = [i for i in issues if i["expression"] == [expression] and named in i["diagnostics"]]
    assert hits, issues
    assert all(i["severity"] == "error" for i in hits)
    return issues


# ---------------------------------------------------------------- CarePlan


def plan() -> dict[str, Any]:
    return example("CarePlan-sip")


def closure(code: str) -> dict[str, Any]:
    return {
        "url": CLOSURE,
        "valueCodeableConcept": {
            "coding": [{"system": f"{CS}/sip-plan-closure-reason", "code": code}]
        },
    }


def follow_up(r: dict[str, Any]) -> dict[str, Any]:
    [extension] = [e for e in r["extension"] if e["url"] == FOLLOW_UP]
    return extension


async def test_sip_care_plan_example_conforms(client: httpx.AsyncClient) -> None:
    """R-SIP-03, R-SIP-07, R-SIP-08, R-SIP-11: goals, interventions incl. self-care (egenvård)
    with the Patient as performer, the coordinator as author, the follow-up."""
    await accepted(client, plan())


async def test_r_sip_08_active_sip_records_its_follow_up(client: httpx.AsyncClient) -> None:
    """R-SIP-08: a SIP claiming the profile is rejected without sip-follow-up once active."""
    await rejected_at(client, changed(plan(), drop("extension")), "CarePlan", "sip-careplan-3")
    draft = changed(plan(), drop("extension"), put("status", "draft"))
    await accepted(client, draft)


async def test_r_sip_08_unclaimed_sip_without_follow_up_is_refused_too(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-08: a SIP selected only by its category (no `meta.profile`) must record its
    follow-up as well (sip-careplan-3)."""
    resource = changed(plan(), drop("extension"), unclaimed)
    await rejected_at(client, resource, "CarePlan", "sip-careplan-3")


async def test_r_sip_08_follow_up_names_who_is_responsible(client: httpx.AsyncClient) -> None:
    """R-SIP-08: the follow-up extension has a responsible Organization/PractitionerRole/
    Practitioner (sip-follow-up-2) and a date (sip-follow-up-1)."""
    no_responsible = changed(plan(), lambda r: follow_up(r)["extension"].pop(1))
    await rejected_at(client, no_responsible, "CarePlan.extension[0]", "sip-follow-up-2")
    patient = changed(
        plan(),
        lambda r: follow_up(r)["extension"][1].__setitem__(
            "valueReference", {"reference": "Patient/tolvan-tolvansson"}
        ),
    )
    await rejected_at(client, patient, "CarePlan.extension[0]", "sip-follow-up-2")
    no_date = changed(plan(), lambda r: follow_up(r)["extension"].pop(0))
    await rejected_at(client, no_date, "CarePlan.extension[0]", "sip-follow-up-1")


async def test_r_sip_08_follow_up_date_is_a_date(client: httpx.AsyncClient) -> None:
    """R-SIP-08: `date` is a valueDate, not free text."""

    def as_text(r: dict[str, Any]) -> None:
        part = follow_up(r)["extension"][0]
        part["valueString"] = part.pop("valueDate")

    await rejected_at(
        client,
        changed(plan(), as_text),
        "CarePlan.extension[0].extension[0].valueString",
        "SIPFollowUp Extension.extension.value[x]",
    )


async def test_r_sip_10_closed_sip_states_its_reason(client: httpx.AsyncClient) -> None:
    """R-SIP-10: a completed or revoked SIP has sip-closure-reason (sip-careplan-4), coded from
    sip-plan-closure-reason."""
    for status in ("completed", "revoked"):
        await rejected_at(
            client, changed(plan(), put("status", status)), "CarePlan", "sip-careplan-4"
        )
    closed = changed(
        plan(),
        put("status", "completed"),
        lambda r: r["extension"].append(closure("mal-uppfyllda")),
    )
    await accepted(client, closed)
    bogus = changed(closed, lambda r: r["extension"].__setitem__(1, closure("flyttat")))
    await rejected_at(
        client, bogus, "CarePlan.extension[1].valueCodeableConcept", "sip-plan-closure-reason"
    )


async def test_r_sip_07_self_care_is_performed_by_the_person(client: httpx.AsyncClient) -> None:
    """R-SIP-07: egenvård has the plan's own Patient as performer (sip-careplan-5)."""
    other = changed(
        plan(),
        lambda r: r["activity"][3]["detail"].__setitem__(
            "performer", [{"reference": "Patient/someone-else"}]
        ),
    )
    await rejected_at(client, other, "CarePlan.activity[3]", "sip-careplan-5")


async def test_r_sip_11_intervention_performer_is_a_responsible_actor(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-11: the responsible performer is an actor (unit, professional, the person), not a
    Device."""
    device = changed(
        plan(),
        lambda r: r["activity"][0]["detail"].__setitem__(
            "performer", [{"reference": "Device/pump"}]
        ),
    )
    await rejected_at(
        client,
        device,
        "CarePlan.activity[0].detail.performer[0]",
        "CarePlan.activity.detail.performer",
    )


async def test_r_sip_07_active_sip_has_goals(client: httpx.AsyncClient) -> None:
    """R-SIP-07: goals 1..* once active (sip-careplan-1), also for the full example."""
    await rejected_at(client, changed(plan(), drop("goal")), "CarePlan", "sip-careplan-1")


# ---------------------------------------------------------------- Goal


def main_goal() -> dict[str, Any]:
    return example("Goal-main-goal")


def sub_goal() -> dict[str, Any]:
    return example("Goal-sub-goal-walking")


def level(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": f"{CS}/sip-goal-level", "code": code}]}]


async def test_sip_goal_examples_conform(client: httpx.AsyncClient) -> None:
    """R-SIP-07: huvudmål and delmål with their due dates."""
    await accepted(client, main_goal())
    await accepted(client, sub_goal())


async def test_r_sip_07_sub_goal_points_at_its_main_goal(client: httpx.AsyncClient) -> None:
    """R-SIP-07: a delmål has the goal-relationship extension with a Goal target
    (sip-goal-1), also when it does not claim the profile (the level triggers it)."""
    await rejected_at(client, changed(sub_goal(), drop("extension")), "Goal", "sip-goal-1")
    await rejected_at(
        client, changed(sub_goal(), drop("extension"), unclaimed), "Goal", "sip-goal-1"
    )
    wrong_target = changed(
        sub_goal(),
        lambda r: r["extension"][0]["extension"][1].__setitem__(
            "valueReference", {"reference": "CarePlan/sip"}
        ),
    )
    await rejected_at(client, wrong_target, "Goal", "sip-goal-1")


async def test_r_sip_07_goal_level_is_required_and_coded(client: httpx.AsyncClient) -> None:
    """R-SIP-07: category from sip-goal-level, exactly one."""
    await rejected_at(
        client,
        changed(main_goal(), put("category", [{"text": "Huvudmål"}])),
        "Goal.category",
        "SIPGoal Goal.category:level: minimum 1",
    )
    await rejected_at(
        client,
        changed(main_goal(), put("category", level("slutmal"))),
        "Goal.category[0]",
        "sip-goal-level",
    )
    both = changed(main_goal(), put("category", level("huvudmal") + level("delmal")))
    await rejected_at(client, both, "Goal.category", "SIPGoal Goal.category:level: maximum 1")


async def test_r_sip_07_goal_has_a_due_date(client: httpx.AsyncClient) -> None:
    """R-SIP-07: the timeline of a goal is a target dueDate."""
    await rejected_at(
        client,
        changed(main_goal(), drop("target")),
        "Goal.target",
        "SIPGoal Goal.target: minimum 1",
    )
    duration = [
        {
            "dueDuration": {
                "value": 6,
                "unit": "mo",
                "system": "http://unitsofmeasure.org",
                "code": "mo",
            }
        }
    ]
    await rejected_at(
        client,
        changed(main_goal(), put("target", duration)),
        "Goal.target[0].dueDuration",
        "Goal.target.due[x]",
    )


async def test_r_sip_07_main_goal_is_the_persons_own(client: httpx.AsyncClient) -> None:
    """R-SIP-07: the huvudmål is expressedBy the person (sip-goal-2), a Patient or
    RelatedPerson, never a professional."""
    await rejected_at(client, changed(main_goal(), drop("expressedBy")), "Goal", "sip-goal-2")
    professional = put("expressedBy", {"reference": "PractitionerRole/designated-care-contact"})
    await rejected_at(
        client, changed(main_goal(), professional), "Goal.expressedBy", "SIPGoal Goal.expressedBy"
    )
    await accepted(
        client,
        changed(main_goal(), put("expressedBy", {"reference": "RelatedPerson/daughter-lena"})),
    )


async def test_sip_goal_subject_is_a_patient(client: httpx.AsyncClient) -> None:
    await rejected_at(
        client,
        changed(main_goal(), put("subject", {"reference": "Group/g1"})),
        "Goal.subject",
        "SIPGoal Goal.subject",
    )


async def test_plain_goal_is_not_a_sip_goal(client: httpx.AsyncClient) -> None:
    """Only the sip-goal-level category triggers the profile."""
    goal = changed(sub_goal(), unclaimed, drop("extension"), put("category", [{"text": "Delmål"}]))
    await accepted(client, goal)


# ---------------------------------------------------------------- Appointment


def follow_up_meeting() -> dict[str, Any]:
    return example("Appointment-sip-follow-up-meeting")


def sip_meeting() -> dict[str, Any]:
    return example("Appointment-sip-meeting")


def form(code: str) -> Change:
    return put("appointmentType", {"coding": [{"system": f"{CS}/sip-meeting-form", "code": code}]})


def dial_in(*parts: tuple[str, str]) -> dict[str, Any]:
    return {"url": DIAL_IN, "extension": [{"url": u, "valueString": v} for u, v in parts]}


async def test_sip_meeting_examples_conform(client: httpx.AsyncClient) -> None:
    """R-SIP-04: a booked physical follow-up meeting and a held digital SIP meeting."""
    await accepted(client, follow_up_meeting())
    await accepted(client, sip_meeting())


async def test_r_sip_04_meeting_has_start_and_end(client: httpx.AsyncClient) -> None:
    """R-SIP-04: an invitation states the date, start and end time."""
    for key in ("start", "end"):
        await rejected_at(
            client,
            changed(sip_meeting(), drop(key)),
            f"Appointment.{key}",
            f"Appointment.{key}: minimum 1",
        )


async def test_sip_plan_claimed_without_category_is_refused(client: httpx.AsyncClient) -> None:
    """A plan that claims the SIP profile carries Inera's SIP category."""
    await rejected_at(client, changed(plan(), drop("category")), "CarePlan.category", "minimum 1")


async def test_r_sip_04_physical_meeting_states_its_place(client: httpx.AsyncClient) -> None:
    """R-SIP-04: a physical meeting has the sip-meeting-address extension or a Location
    participant (sip-meeting-1)."""
    no_place = changed(follow_up_meeting(), drop("extension"))
    await rejected_at(client, no_place, "Appointment", "sip-meeting-1")
    room = {"actor": {"reference": "Location/room-3"}, "status": "accepted"}
    await accepted(client, changed(no_place, lambda r: r["participant"].append(room)))


async def test_r_sip_04_digital_meeting_has_a_link(client: httpx.AsyncClient) -> None:
    """R-SIP-04: a digital meeting has sip-meeting-link (sip-meeting-2), also unclaimed."""
    await rejected_at(
        client, changed(sip_meeting(), drop("extension")), "Appointment", "sip-meeting-2"
    )
    await rejected_at(
        client, changed(sip_meeting(), drop("extension"), unclaimed), "Appointment", "sip-meeting-2"
    )
    bad_link = put("extension", [{"url": f"{SD}/sip-meeting-link", "valueString": "länk"}])
    await rejected_at(
        client,
        changed(sip_meeting(), bad_link),
        "Appointment.extension[0].valueString",
        "Extension.value[x]",
    )


async def test_r_sip_04_telephone_meeting_has_number_and_code(client: httpx.AsyncClient) -> None:
    """R-SIP-04: a telephone meeting has sip-meeting-dial-in (sip-meeting-3) with a number
    (sip-dial-in-1) and a code (sip-dial-in-2)."""
    phone = changed(follow_up_meeting(), form("telefon"), drop("extension"))
    await rejected_at(client, phone, "Appointment", "sip-meeting-3")
    no_code = changed(phone, put("extension", [dial_in(("number", "+46920283900"))]))
    await rejected_at(client, no_code, "Appointment.extension[0]", "sip-dial-in-2")
    no_number = changed(phone, put("extension", [dial_in(("code", "4711#"))]))
    await rejected_at(client, no_number, "Appointment.extension[0]", "sip-dial-in-1")
    await accepted(
        client,
        changed(phone, put("extension", [dial_in(("number", "+46920283900"), ("code", "4711#"))])),
    )


async def test_r_sip_04_invitation_states_purpose_form_and_times(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-04: what the meeting is for, its form, start and end."""
    await rejected_at(
        client,
        changed(follow_up_meeting(), put("serviceType", [{"text": "SIP"}])),
        "Appointment.serviceType",
        "SIPMeeting Appointment.serviceType:purpose",
    )
    other_purpose = put(
        "serviceType", [{"coding": [{"system": f"{CS}/sip-meeting-purpose", "code": "fika"}]}]
    )
    await rejected_at(
        client,
        changed(follow_up_meeting(), other_purpose),
        "Appointment.serviceType[0]",
        "sip-meeting-purpose",
    )
    await rejected_at(
        client,
        changed(follow_up_meeting(), drop("appointmentType")),
        "Appointment.appointmentType",
        "SIPMeeting Appointment.appointmentType",
    )
    await rejected_at(
        client,
        changed(follow_up_meeting(), form("brev")),
        "Appointment.appointmentType",
        "sip-meeting-form",
    )
    for key in ("start", "end"):
        await rejected_at(
            client,
            changed(follow_up_meeting(), drop(key)),
            f"Appointment.{key}",
            f"SIPMeeting Appointment.{key}: minimum 1",
        )
    backwards = put("end", "2027-01-19T12:00:00+01:00")
    await rejected_at(
        client, changed(follow_up_meeting(), backwards), "Appointment", "sip-meeting-4"
    )


async def test_r_sip_04_invites_at_least_two_participants(client: httpx.AsyncClient) -> None:
    """R-SIP-04: the invited actors: at least the person and one actor."""
    alone = changed(
        follow_up_meeting(), lambda r: r.__setitem__("participant", r["participant"][:1])
    )
    await rejected_at(
        client, alone, "Appointment.participant", "SIPMeeting Appointment.participant: minimum 2"
    )


async def test_r_sip_04_professional_names_the_organisation(client: httpx.AsyncClient) -> None:
    """R-SIP-04: each invited professional has sip-participant-organization (sip-meeting-6),
    an Organization."""
    missing = changed(follow_up_meeting(), lambda r: r["participant"][2].pop("extension"))
    await rejected_at(client, missing, "Appointment.participant[2]", "sip-meeting-6")
    patient = changed(
        follow_up_meeting(),
        lambda r: r["participant"][2].__setitem__(
            "extension",
            [
                {
                    "url": PARTICIPANT_ORG,
                    "valueReference": {"reference": "Patient/tolvan-tolvansson"},
                }
            ],
        ),
    )
    await rejected_at(
        client,
        patient,
        "Appointment.participant[2].extension[0].valueReference",
        "must reference Organization",
    )


async def test_r_sip_04_held_meeting_records_attendance(client: httpx.AsyncClient) -> None:
    """R-SIP-04, R-MTG-02: a fulfilled meeting records each participant as accepted (attended)
    or declined (sip-meeting-5)."""
    unticked = changed(
        sip_meeting(), lambda r: r["participant"][3].__setitem__("status", "tentative")
    )
    await rejected_at(client, unticked, "Appointment", "sip-meeting-5")
    await accepted(client, changed(unticked, put("status", "booked")))


async def test_plain_appointments_are_not_sip_meetings(client: httpx.AsyncClient) -> None:
    """Only a purpose from sip-meeting-purpose together with a form from sip-meeting-form
    triggers the profile: a plain appointment, or one with only a purpose, is not judged."""
    plain = changed(
        follow_up_meeting(),
        unclaimed,
        drop("extension"),
        put("serviceType", [{"text": "Återbesök"}]),
        lambda r: r.__setitem__("participant", r["participant"][:1]),
    )
    await accepted(client, plain)
    purpose_only = changed(
        plain,
        drop("appointmentType"),
        put("serviceType", [{"coding": [{"system": f"{CS}/sip-meeting-purpose", "code": "sip"}]}]),
    )
    await accepted(client, purpose_only)


# ---------------------------------------------------------------- Consent


def sip_consent() -> dict[str, Any]:
    return example("Consent-sip")


def transfer_consent() -> dict[str, Any]:
    return example("Consent-information-transfer")


async def test_sip_consent_examples_conform(client: httpx.AsyncClient) -> None:
    """R-SIP-01, R-DIS-04: consent to the SIP and to information transfer."""
    await accepted(client, sip_consent())
    await accepted(client, transfer_consent())


async def test_r_sip_01_consent_is_recorded_here_or_referenced(client: httpx.AsyncClient) -> None:
    """R-SIP-01: the consent has a provision here, or (under 18) a source pointing at the
    local record (sip-consent-1)."""
    bare = changed(sip_consent(), drop("provision"))
    await rejected_at(client, bare, "Consent", "sip-consent-1")
    await rejected_at(client, changed(bare, unclaimed), "Consent", "sip-consent-1")
    local_record = put("sourceReference", {"reference": "DocumentReference/local-consent"})
    await accepted(client, changed(bare, local_record))


async def test_r_sip_01_consent_names_person_time_and_giver(client: httpx.AsyncClient) -> None:
    """R-SIP-01: whose consent, when, and given by whom."""
    for key in ("patient", "dateTime", "performer"):
        await rejected_at(
            client,
            changed(sip_consent(), drop(key)),
            f"Consent.{key}",
            f"SIPConsent Consent.{key}: minimum 1",
        )


async def test_r_sip_01_consent_kind_is_coded(client: httpx.AsyncClient) -> None:
    """R-SIP-01, R-DIS-04: the kind comes from sip-consent-kind, and the derived profile fixes
    it."""
    untyped = put("category", [{"text": "Samtycke"}])
    await rejected_at(
        client,
        changed(sip_consent(), untyped),
        "Consent.category",
        "SIPConsent Consent.category:kind: minimum 1",
    )
    kind = f"{CS}/sip-consent-kind"
    bogus = put("category", [{"coding": [{"system": kind, "code": "forskning"}]}])
    await rejected_at(
        client, changed(sip_consent(), bogus, unclaimed), "Consent.category[0]", "sip-consent-kind"
    )
    other = put("category", [{"coding": [{"system": kind, "code": "informationsoverforing"}]}])
    await rejected_at(
        client,
        changed(sip_consent(), other),
        "Consent.category",
        "SIPConsentSIP Consent.category:kind: minimum 1",
    )


async def test_r_dis_04_transfer_consent_names_the_recipients(client: httpx.AsyncClient) -> None:
    """R-DIS-04: a consent to information transfer recorded here names its receiving actors
    (sip-consent-it-1)."""
    anonymous = changed(transfer_consent(), lambda r: r["provision"].pop("actor"))
    await rejected_at(client, anonymous, "Consent.provision", "sip-consent-it-1")


async def test_plain_consent_is_not_a_sip_consent(client: httpx.AsyncClient) -> None:
    plain = changed(
        transfer_consent(),
        unclaimed,
        drop("dateTime"),
        drop("provision"),
        lambda r: r["category"][0]["coding"].pop(0),
    )
    await accepted(client, plain)


@pytest.mark.parametrize(
    "profile",
    [
        "sip-careplan",
        "sip-goal",
        "sip-meeting",
        "sip-consent",
        "sip-consent-sip",
        "sip-consent-information-transfer",
        "sip-follow-up",
        "sip-closure-reason",
        "sip-participant-organization",
        "sip-meeting-link",
        "sip-meeting-address",
        "sip-meeting-dial-in",
    ],
)
async def test_plan_profiles_are_published(client: httpx.AsyncClient, profile: str) -> None:
    url = f"{SD}/{profile}"
    found = (await client.get("/StructureDefinition", params={"url": url})).json()
    assert [e["resource"]["url"] for e in found["entry"]] == [url]

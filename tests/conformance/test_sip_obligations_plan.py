"""The SIP plan's obligations as Tasks (R-SIP-02, R-SIP-06, R-SIP-08, R-SIP-09), on both
engines, over HTTP.

The example case (examples/sip-case) is loaded without its Tasks, messages, meetings and
plan; each test sends the acts and checks the Tasks they open (code, owner, start,
deadline) and complete (when, by what, `late`), with a fixed clock where an act records no
time of its own.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import httpx
import pytest

from fhir_server.sip.clock import STOCKHOLM, FixedClock
from fhir_server.sip.obligations import sweep
from fhir_server.storage.port import Storage
from tests.sip_case import (
    HEALTH_CENTRE,
    MUNICIPALITY,
    PATIENT,
    WARD,
    case_without_acts,  # noqa: F401 (the `client` fixture)
    deadline,
    example,
    owners,
    put,
    tasks,
)

MESSAGE_TYPE = "http://sip-fhir.se/fhir/CodeSystem/sip-message-type"
FOLLOW_UP_URL = "http://sip-fhir.se/fhir/StructureDefinition/sip-follow-up"


def start(task: dict[str, Any]) -> str:
    return task["restriction"]["period"]["start"]


def done(task: dict[str, Any]) -> str:
    assert task["status"] == "completed", task
    return task["executionPeriod"]["end"]


def output(task: dict[str, Any]) -> str:
    return task["output"][0]["valueReference"]["reference"]


def business_status(task: dict[str, Any]) -> str | None:
    return task.get("businessStatus", {}).get("coding", [{}])[0].get("code")


def need(sent: str, sender: str = "PractitionerRole/designated-care-contact") -> dict[str, Any]:
    """R-SIP-02: the need of a SIP noticed in outpatient care, as a sip-behov message."""
    return {
        "resourceType": "Communication",
        "id": "sip-need",
        "status": "completed",
        "category": [
            {"coding": [{"system": MESSAGE_TYPE, "code": "sip-behov", "display": "Behov av SIP"}]}
        ],
        "subject": {"reference": PATIENT},
        "about": [{"reference": "EpisodeOfCare/discharge-and-sip"}],
        "sent": sent,
        "recipient": [{"reference": MUNICIPALITY}],
        "sender": {"reference": sender},
        "payload": [{"contentString": "Behov av samordning mellan hälsocentral och kommun."}],
    }


def sip_meeting(created: str) -> dict[str, Any]:
    """The SIP meeting, booked (the invitation) at `created`."""
    meeting = example("Appointment-sip-meeting")
    meeting |= {"status": "booked", "created": created}
    for participant in meeting["participant"]:
        participant["status"] = "accepted"
    return meeting


def follow_up_meeting(end: str | None = None) -> dict[str, Any]:
    """The follow-up meeting held (fulfilled), ending at `end` (default its own)."""
    meeting = example("Appointment-sip-follow-up-meeting")
    meeting["status"] = "fulfilled"
    if end is not None:
        meeting["end"] = end
        meeting["start"] = end[:11] + "09:00:00" + end[19:]
    for participant in meeting["participant"]:
        participant["status"] = "accepted"
    return meeting


def plan(follow_up_date: str | None = None) -> dict[str, Any]:
    """The SIP (created 17 Nov 15:00), with another follow-up date if given."""
    care_plan = example("CarePlan-sip")
    if follow_up_date is not None:
        [extension] = [e for e in care_plan["extension"] if e["url"] == FOLLOW_UP_URL]
        for part in extension["extension"]:
            if part["url"] == "date":
                part["valueDate"] = follow_up_date
    return care_plan


@pytest.mark.parametrize(
    ("sent", "due"),
    [
        pytest.param("2026-11-13T10:00:00+01:00", "2026-11-18T23:59:59+01:00", id="weekend"),
        pytest.param("2026-12-23T10:00:00+01:00", "2026-12-30T23:59:59+01:00", id="christmas"),
    ],
)
async def test_r_sip_02_invitation_within_3_working_days_of_the_need(
    client: httpx.AsyncClient, sent: str, due: str
) -> None:
    """R-SIP-02: the need noticed on a Friday is due the following Wednesday; noticed on
    23 Dec (24–27 Dec are julafton, juldagen, annandag jul and a Sunday) due 30 Dec. The owner
    is the unit of the PractitionerRole that sent the need (the coordinator, R-SIP-03)."""
    await put(client, need(sent))
    [task] = await tasks(client, "skicka-sip-kallelse")
    assert task["owner"] == {"reference": HEALTH_CENTRE}
    assert task["focus"] == {"reference": "Communication/sip-need"}
    assert task["for"] == {"reference": PATIENT}
    assert start(task) == sent
    assert deadline(task) == due
    assert "encounter" not in task


async def test_r_sip_02_a_meeting_booked_after_the_need_completes_it(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-02: a SIP meeting booked before the need was known is no invitation for it; one
    booked after (created 16 Nov 08:30) completes the Task on time."""
    await put(client, sip_meeting("2026-11-12T09:00:00+01:00"))
    await put(client, need("2026-11-13T10:00:00+01:00"))
    [task] = await tasks(client, "skicka-sip-kallelse")
    assert task["status"] == "requested"
    await put(client, sip_meeting("2026-11-16T08:30:00+01:00"))
    [task] = await tasks(client, "skicka-sip-kallelse")
    assert done(task) == "2026-11-16T08:30:00+01:00"
    assert output(task) == "Appointment/sip-meeting"
    assert business_status(task) is None


async def test_r_sip_02_a_late_invitation_keeps_the_task_late(
    client: httpx.AsyncClient, store: Storage, clock: FixedClock
) -> None:
    """R-SIP-02, R-IND-01: still open after 18 Nov the sweep marks the Task `overdue`; the
    invitation sent 19 Nov completes it `late`, and it stays `late`: the sweep and a rewrite
    of the invitation leave it as it is."""
    await put(client, need("2026-11-13T10:00:00+01:00"))
    clock.moment = datetime(2026, 11, 19, 8, 0, tzinfo=STOCKHOLM)
    assert await sweep(store, clock) == 1
    [task] = await tasks(client, "skicka-sip-kallelse")
    assert business_status(task) == "overdue"
    letter = example("Communication-invitation-follow-up-meeting")
    letter |= {"id": "sip-invitation", "sent": "2026-11-19T10:00:00+01:00"}
    letter["about"] = [{"reference": "Appointment/sip-meeting"}, letter["about"][1]]
    await put(client, letter)
    [task] = await tasks(client, "skicka-sip-kallelse")
    assert done(task) == "2026-11-19T10:00:00+01:00"
    assert output(task) == "Communication/sip-invitation"
    assert business_status(task) == "late"
    clock.moment = datetime(2026, 11, 25, 8, 0, tzinfo=STOCKHOLM)
    assert await sweep(store, clock) == 0
    await put(client, letter)
    [task] = await tasks(client, "skicka-sip-kallelse")
    assert (done(task), business_status(task)) == ("2026-11-19T10:00:00+01:00", "late")


async def test_r_sip_06_each_participant_s_part_of_the_plan_completes_its_documentation(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """R-SIP-06: the plan created 17 Nov 15:00 is authored by the health centre's
    coordinator and holds its activity: the health centre has documented, at `created`. The
    municipality documents its activity (its biståndshandläggare as performer) in an update
    on 21 Nov, after its deadline: done at the clock's now, `late`. The ward, which declined
    the meeting, owes nothing."""
    await put(client, example("Appointment-sip-meeting"))
    await put(client, plan())
    found = owners(await tasks(client, "dokumentera-plan"))
    assert done(found[HEALTH_CENTRE]) == "2026-11-17T15:00:00+01:00"
    assert output(found[HEALTH_CENTRE]) == "CarePlan/sip"
    assert business_status(found[HEALTH_CENTRE]) is None
    assert found[MUNICIPALITY]["status"] == "requested"
    assert WARD not in found

    clock.moment = datetime(2026, 11, 21, 9, 0, tzinfo=STOCKHOLM)
    updated = plan()
    activity = copy.deepcopy(updated["activity"][0])
    activity["detail"]["code"] = {"text": "Biståndsbedömning av hemtjänst"}
    activity["detail"]["performer"] = [{"reference": "PractitionerRole/needs-assessment-officer"}]
    updated["activity"].append(activity)
    await put(client, updated)
    found = owners(await tasks(client, "dokumentera-plan"))
    assert done(found[MUNICIPALITY]) == "2026-11-21T09:00:00+01:00"
    assert business_status(found[MUNICIPALITY]) == "late"
    assert done(found[HEALTH_CENTRE]) == "2026-11-17T15:00:00+01:00"


async def test_r_sip_06_a_plan_written_before_the_meeting_is_recorded_counts(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-06: whatever the write order: the plan made at the meeting's end is stored
    first; the meeting recorded as held opens the health centre's Task completed."""
    await put(client, plan())
    await put(client, example("Appointment-sip-meeting"))
    found = owners(await tasks(client, "dokumentera-plan"))
    assert done(found[HEALTH_CENTRE]) == "2026-11-17T15:00:00+01:00"
    assert found[MUNICIPALITY]["status"] == "requested"


async def test_r_sip_08_follow_up_by_the_agreed_date_at_least_once_a_year(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-08: the plan (created 17 Nov 2026) agrees a follow-up on 19 Jan 2027, the
    responsible the health centre's fast vårdkontakt: one Task, due the end of 19 Jan. A new
    date (10 Feb) moves it; a date more than a year away (10 Jan 2028) is capped at a year
    after the plan was made (17 Nov 2027)."""
    await put(client, plan())
    [task] = await tasks(client, "folja-upp-plan")
    assert task["owner"] == {"reference": HEALTH_CENTRE}
    assert task["focus"] == {"reference": "CarePlan/sip"}
    assert start(task) == "2026-11-17T15:00:00+01:00"
    assert deadline(task) == "2027-01-19T23:59:59+01:00"
    assert task["input"] == [{"type": {"text": "Uppföljningsdatum"}, "valueDate": "2027-01-19"}]

    await put(client, plan("2027-02-10"))
    [moved] = await tasks(client, "folja-upp-plan")
    assert moved["id"] == task["id"]
    assert deadline(moved) == "2027-02-10T23:59:59+01:00"
    assert moved["input"][0]["valueDate"] == "2027-02-10"

    await put(client, plan("2028-01-10"))
    [capped] = await tasks(client, "folja-upp-plan")
    assert capped["id"] == task["id"]
    assert deadline(capped) == "2027-11-17T23:59:59+01:00"


async def test_r_sip_08_the_next_follow_up_date_opens_a_new_task(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-08: the follow-up meeting held (ended 19 Jan 2027 14:00) completes the Task;
    the plan's next follow-up date (15 Jun 2027) opens a new one, counted from that
    follow-up; the plan rewritten with the same date opens nothing more."""
    await put(client, plan())
    await put(client, follow_up_meeting())
    [first] = await tasks(client, "folja-upp-plan")
    assert done(first) == "2027-01-19T14:00:00+01:00"
    assert output(first) == "Appointment/sip-follow-up-meeting"

    await put(client, plan("2027-06-15"))
    await put(client, plan("2027-06-15"))
    found = {t["id"]: t for t in await tasks(client, "folja-upp-plan")}
    assert set(found) >= {first["id"]} and len(found) == 2
    [second] = [t for id, t in found.items() if id != first["id"]]
    assert second["status"] == "requested"
    assert second["owner"] == {"reference": HEALTH_CENTRE}
    assert start(second) == "2027-01-19T14:00:00+01:00"
    assert deadline(second) == "2027-06-15T23:59:59+02:00"
    assert done(found[first["id"]]) == "2027-01-19T14:00:00+01:00"

    await put(client, follow_up_meeting("2027-06-20T11:00:00+02:00"))
    second = next(t for t in await tasks(client, "folja-upp-plan") if t["id"] == second["id"])
    assert done(second) == "2027-06-20T11:00:00+02:00"
    assert business_status(second) == "late"


async def test_r_sip_09_follow_up_invitation_as_soon_as_the_date_is_agreed(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-09: the plan made Tuesday 17 Nov 15:00 agrees a follow-up date: the
    coordinator's unit (author, a PractitionerRole of the health centre) invites by the end
    of Friday 20 Nov (3 working days); the follow-up invitation letter sent 15:00 completes
    it."""
    await put(client, plan())
    [task] = await tasks(client, "skicka-uppfoljningskallelse")
    assert task["owner"] == {"reference": HEALTH_CENTRE}
    assert task["focus"] == {"reference": "CarePlan/sip"}
    assert start(task) == "2026-11-17T15:00:00+01:00"
    assert deadline(task) == "2026-11-20T23:59:59+01:00"
    assert await tasks(client, "skicka-sip-kallelse") == []
    await put(client, example("Communication-invitation-follow-up-meeting"))
    [task] = await tasks(client, "skicka-uppfoljningskallelse")
    assert done(task) == "2026-11-17T15:00:00+01:00"
    assert output(task) == "Communication/invitation-follow-up-meeting"


async def test_r_sip_09_a_date_agreed_later_is_due_from_then_but_not_after_the_date(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """R-SIP-09: the follow-up meeting booked completes the first invitation; on Friday
    4 Dec a plan update agrees a new date, Tuesday 8 Dec: that invitation is due from the
    update (the clock's now: an update records no time of its own), 3 working days would be
    Wednesday 9 Dec, but not after the date itself: the end of 8 Dec."""
    await put(client, plan())
    await put(client, example("Appointment-sip-follow-up-meeting"))
    [first] = await tasks(client, "skicka-uppfoljningskallelse")
    assert done(first) == "2026-11-17T15:10:00+01:00"
    assert output(first) == "Appointment/sip-follow-up-meeting"

    clock.moment = datetime(2026, 12, 4, 10, 0, tzinfo=STOCKHOLM)
    await put(client, plan("2026-12-08"))
    found = await tasks(client, "skicka-uppfoljningskallelse", status="requested")
    [second] = found
    assert start(second) == "2026-12-04T10:00:00+01:00"
    assert deadline(second) == "2026-12-08T23:59:59+01:00"
    assert second["input"][0]["valueDate"] == "2026-12-08"


async def test_r_sip_09_a_sip_meeting_invitation_is_no_follow_up_invitation(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-09, R-SIP-02: an invitation to a SIP meeting completes the SIP invitation only;
    the follow-up invitation stays open."""
    await put(client, need("2026-11-17T09:00:00+01:00"))
    await put(client, plan())
    await put(client, sip_meeting("2026-11-17T16:00:00+01:00"))
    [sip_invitation] = await tasks(client, "skicka-sip-kallelse")
    assert done(sip_invitation) == "2026-11-17T16:00:00+01:00"
    [follow_up_invitation] = await tasks(client, "skicka-uppfoljningskallelse")
    assert follow_up_invitation["status"] == "requested"


async def test_r_sip_08_r_sip_10_a_closed_plan_is_not_followed_up(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-08, R-SIP-09, R-SIP-10: the coordinator closes the plan (goals met): its open
    follow-up and follow-up invitation are cancelled, not left to go overdue."""
    await put(client, plan())
    closed = plan()
    closed["status"] = "completed"
    closed["extension"].append(
        {
            "url": "http://sip-fhir.se/fhir/StructureDefinition/sip-closure-reason",
            "valueCodeableConcept": {
                "coding": [
                    {
                        "system": "http://sip-fhir.se/fhir/CodeSystem/sip-plan-closure-reason",
                        "code": "mal-uppfyllda",
                    }
                ]
            },
        }
    )
    await put(client, closed)
    for code in ("folja-upp-plan", "skicka-uppfoljningskallelse"):
        [task] = await tasks(client, code)
        assert task["status"] == "cancelled"
        assert task["statusReason"] == {"text": "Planen avslutad"}

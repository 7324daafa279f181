"""Obligations as Tasks (profile sip-obligation), on both engines, over HTTP.

The example discharge case (examples/sip-case) minus its hand-written Tasks is loaded by a
transaction of PUTs; each test then checks the Tasks the acts opened (code, owner, deadline),
the act that completes them, and the sweep's `overdue` with a fixed clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.sip.clock import STOCKHOLM, FixedClock
from fhir_server.sip.obligations import sweep
from fhir_server.storage.port import Storage
from tests.conftest import app_client
from tests.sip_case import (
    HEALTH_CENTRE,
    HOME_CARE,
    MUNICIPALITY,
    WARD,
    case_without_acts,  # noqa: F401 (the `client` fixture)
    deadline,
    example,
    owners,
    put,
    tasks,
)

STATUS = "http://sip-fhir.se/fhir/CodeSystem/sip-obligation-status"


async def test_r_dis_05_acknowledge_by_the_next_12_00(
    client: httpx.AsyncClient, store: Storage, clock: FixedClock
) -> None:
    """R-DIS-05: each recipient of an admission notice received 15:05 must acknowledge by
    12:00 the next day; the health centre's acknowledgement completes its Task; the
    municipality's, late, is `late`; still open past the deadline, the sweep says `overdue`."""
    notice = example("Communication-admission-notice")
    await put(client, notice)
    await put(client, notice)  # an update of the same notice opens nothing twice
    found = owners(await tasks(client, "kvittera-meddelande"))
    assert set(found) == {HEALTH_CENTRE, MUNICIPALITY}
    for task in found.values():
        assert task["status"] == "requested"
        assert task["intent"] == "order"
        assert deadline(task) == "2026-11-03T12:00:00+01:00"
        assert task["focus"] == {"reference": "Communication/admission-notice"}
        assert task["for"] == {"reference": "Patient/tolvan-tolvansson"}
        assert task["requester"] == {"reference": WARD}
        assert task["encounter"] == {"reference": "Encounter/inpatient-stay"}
        assert task["meta"]["profile"] == [
            "http://sip-fhir.se/fhir/StructureDefinition/sip-obligation"
        ]
    await put(client, example("Communication-admission-notice-acknowledgement"))
    done = owners(await tasks(client, "kvittera-meddelande", status="completed"))
    assert set(done) == {HEALTH_CENTRE}
    task = done[HEALTH_CENTRE]
    assert task["executionPeriod"]["end"] == "2026-11-03T08:40:00+01:00"
    assert task["output"][0]["valueReference"] == {
        "reference": "Communication/admission-notice-acknowledgement"
    }
    assert "businessStatus" not in task
    open_ = await tasks(client, "kvittera-meddelande", owner=MUNICIPALITY, status="requested")
    assert len(open_) == 1

    clock.moment = datetime(2026, 11, 3, 12, 0, tzinfo=STOCKHOLM)
    assert await sweep(store, clock) == 0  # at the deadline it is not overdue yet
    clock.moment = datetime(2026, 11, 3, 12, 1, tzinfo=STOCKHOLM)
    assert await sweep(store, clock) == 1
    assert await sweep(store, clock) == 0
    overdue = await tasks(client, "kvittera-meddelande", owner=MUNICIPALITY)
    assert overdue[0]["businessStatus"]["coding"][0]["code"] == "overdue"

    late = example("Communication-admission-notice-acknowledgement")
    late |= {
        "id": "late-ack",
        "sent": "2026-11-03T13:15:00+01:00",
        "sender": {"reference": MUNICIPALITY},
    }
    late["received"] = late["sent"]
    await put(client, late)
    task = (await tasks(client, "kvittera-meddelande", owner=MUNICIPALITY))[0]
    assert task["status"] == "completed"
    assert task["executionPeriod"]["end"] == "2026-11-03T13:15:00+01:00"
    assert task["businessStatus"]["coding"] == [
        {"system": STATUS, "code": "late", "display": "Utförd efter tidsgränsen"}
    ]


async def test_r_dis_05_a_notice_received_before_12_00_is_due_the_same_day(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-05: received 10:30 (sent as UTC) the ready-for-discharge notice is due 12:00 that
    day, for each of its three recipients; the deadline is written in Stockholm time."""
    notice = example("Communication-ready-for-discharge")
    notice["received"] = "2026-11-09T09:30:00Z"
    await put(client, notice)
    found = owners(await tasks(client, "kvittera-meddelande"))
    assert set(found) == {HEALTH_CENTRE, MUNICIPALITY, HOME_CARE}
    assert {deadline(t) for t in found.values()} == {"2026-11-09T12:00:00+01:00"}


async def test_r_dis_05_the_cut_off_is_configuration(
    store: Storage, settings: Settings, clock: FixedClock
) -> None:
    """R-DIS-05: FHIR_ACKNOWLEDGEMENT_CUTOFF moves the deadline (here 10:00)."""
    settings = settings.model_copy(update={"acknowledgement_cutoff": "10:00"})
    async with app_client(settings, store, clock) as client:
        notice = example("Communication-discharge-notice")
        consent = example("Consent-information-transfer")
        for resource in (example("Patient-tolvan-tolvansson"), consent, notice):
            response = await client.put(
                f"/{resource['resourceType']}/{resource['id']}", json=resource
            )
            assert response.status_code == 201, response.text
        found = await tasks(client, "kvittera-meddelande")
        assert {deadline(t) for t in found} == {"2026-11-11T10:00:00+01:00"}


async def test_r_dis_06_planning_basis_within_24_hours_of_the_admission_notice(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-06: the ward fills in the planning basis within 24 h after it sent the admission
    notice (15:05); the planning-basis message of the stay completes it."""
    await put(client, example("Communication-admission-notice"))
    [task] = await tasks(client, "fylla-i-planeringsunderlag")
    assert task["owner"] == {"reference": WARD}
    assert deadline(task) == "2026-11-03T15:05:00+01:00"
    await put(client, example("QuestionnaireResponse-planning-basis"))
    await put(client, example("Communication-planning-basis-message"))
    [task] = await tasks(client, "fylla-i-planeringsunderlag")
    assert task["status"] == "completed"
    assert task["executionPeriod"]["end"] == "2026-11-03T11:00:00+01:00"
    assert task["output"][0]["valueReference"]["reference"] == (
        "Communication/planning-basis-message"
    )


async def test_r_dis_06_24_hours_are_elapsed_time_across_dst(client: httpx.AsyncClient) -> None:
    """R-DIS-06: sent 15:00 the day before summer time begins, due 16:00 the next day."""
    notice = example("Communication-admission-notice")
    notice["sent"] = notice["received"] = "2027-03-27T15:00:00+01:00"
    await put(client, notice)
    [task] = await tasks(client, "fylla-i-planeringsunderlag")
    assert deadline(task) == "2027-03-28T16:00:00+02:00"


async def test_r_dis_10_sip_invitation_within_3_days_of_ready_for_discharge(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-10: the ready-for-discharge notice (9 Nov) obliges the fast vårdkontakt's
    primary-care unit to send the SIP invitation by the end of 12 Nov; the SIP meeting
    (created 10 Nov) completes it."""
    await put(client, example("Communication-ready-for-discharge"))
    [task] = await tasks(client, "skicka-sip-kallelse")
    assert task["owner"] == {"reference": HEALTH_CENTRE}
    assert deadline(task) == "2026-11-12T23:59:59+01:00"
    meeting = example("Appointment-sip-meeting")
    meeting["status"] = "booked"
    for participant in meeting["participant"]:
        participant["status"] = "accepted"
    await put(client, meeting)
    [task] = await tasks(client, "skicka-sip-kallelse")
    assert task["status"] == "completed"
    assert task["executionPeriod"]["end"] == "2026-11-10T10:15:00+01:00"
    assert task["output"][0]["valueReference"] == {"reference": "Appointment/sip-meeting"}


async def test_r_dis_10_no_invitation_obligation_without_sip_consent(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-10: no SIP invitation for a patient who has not consented."""
    consent = example("Consent-sip")
    consent["status"] = "rejected"
    await put(client, consent)
    await put(client, example("Communication-ready-for-discharge"))
    assert await tasks(client, "skicka-sip-kallelse") == []
    assert len(await tasks(client, "kvittera-meddelande")) == 3


async def test_r_dis_10_a_later_planning_basis_without_sip_need_cancels_the_invitation(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-10: the invitation obligation opened at the ready-for-discharge notice is
    cancelled when a newer planning basis says no SIP is needed; an older one does not."""
    await put(client, example("Communication-ready-for-discharge"))
    [opened] = await tasks(client, "skicka-sip-kallelse")
    assert opened["status"] == "requested"
    older = answered(example("QuestionnaireResponse-planning-basis"), {"sip-needed": False})
    older |= {"id": "planning-basis-older", "authored": "2026-11-04T09:00:00+01:00"}
    await put(client, older)
    [still] = await tasks(client, "skicka-sip-kallelse")
    assert still["status"] == "requested"
    newer = older | {"id": "planning-basis-updated", "authored": "2026-11-09T11:00:00+01:00"}
    await put(client, newer)
    [cancelled] = await tasks(client, "skicka-sip-kallelse")
    assert cancelled["status"] == "cancelled"
    assert "planeringsunderlaget" in cancelled["statusReason"]["text"]


async def test_r_dis_14_sip_within_21_days_of_discharge(client: httpx.AsyncClient) -> None:
    """R-DIS-14: discharged 10 Nov 13:30, the SIP is due by the end of 1 Dec, owned by the
    primary-care unit; the active SIP CarePlan made 17 Nov completes it."""
    await put(client, example("Communication-discharge-notice"))
    [task] = await tasks(client, "uppratta-sip")
    assert task["owner"] == {"reference": HEALTH_CENTRE}
    assert task["restriction"]["period"]["start"] == "2026-11-10T13:30:00+01:00"
    assert deadline(task) == "2026-12-01T23:59:59+01:00"
    for name in ("Goal-main-goal", "Goal-sub-goal-walking", "CareTeam-sip-team", "CarePlan-sip"):
        await put(client, example(name))
    [task] = await tasks(client, "uppratta-sip")
    assert task["status"] == "completed"
    assert task["executionPeriod"]["end"] == "2026-11-17T15:00:00+01:00"
    assert task["output"][0]["valueReference"] == {"reference": "CarePlan/sip"}


async def test_r_sip_06_each_participant_documents_within_3_days_of_the_meeting(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-06: the SIP meeting held (fulfilled, ended 17 Nov 15:00) obliges each
    participating organisation to document the plan by the end of 20 Nov; the ward, whose
    physician declined, took no part and owes nothing."""
    await put(client, example("Appointment-sip-meeting"))
    found = owners(await tasks(client, "dokumentera-plan", status="requested"))
    assert set(found) == {HEALTH_CENTRE, MUNICIPALITY}
    assert {deadline(t) for t in found.values()} == {"2026-11-20T23:59:59+01:00"}
    listed = await tasks(client, "dokumentera-plan", owner=HEALTH_CENTRE, status="requested")
    assert [t["focus"]["reference"] for t in listed] == ["Appointment/sip-meeting"]


async def test_r_dis_13_a_deceased_patient_s_open_obligations_are_cancelled(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-13: the patient dies; their open Tasks are cancelled, completed ones stay."""
    await put(client, example("Communication-admission-notice"))
    await put(client, example("Communication-admission-notice-acknowledgement"))
    patient = example("Patient-tolvan-tolvansson")
    patient["deceasedDateTime"] = "2026-11-04T03:00:00+01:00"
    await put(client, patient)
    found = await tasks(client, "kvittera-meddelande")
    found += await tasks(client, "fylla-i-planeringsunderlag")
    statuses = sorted(t["status"] for t in found)
    assert all(
        t["statusReason"] == {"text": "Avliden"} for t in found if t["status"] == "cancelled"
    )
    assert statuses == ["cancelled", "cancelled", "completed"]


async def test_obligations_are_listed_per_owner_by_deadline(client: httpx.AsyncClient) -> None:
    """R-DIS-05, R-DIS-10, R-IND-01: `Task?owner=…&status=requested&_sort=deadline` is an
    owner's work list, soonest first."""
    await put(client, example("Communication-admission-notice"))
    await put(client, example("Communication-ready-for-discharge"))
    response = await client.get(
        "/Task", params={"owner": HEALTH_CENTRE, "status": "requested", "_sort": "deadline"}
    )
    listed = [(e["resource"]["code"]["coding"][0]["code"], deadline(e["resource"]))
              for e in response.json()["entry"]]  # fmt: skip
    assert listed == [
        ("kvittera-meddelande", "2026-11-03T12:00:00+01:00"),
        ("kvittera-meddelande", "2026-11-09T12:00:00+01:00"),
        ("skicka-sip-kallelse", "2026-11-12T23:59:59+01:00"),
    ]


def answered(basis: dict[str, Any], answers: dict[str, bool]) -> dict[str, Any]:
    """The planning basis with these yes/no answers (link id without `.answer`)."""
    for group in basis["item"]:
        for item in group.get("item", []):
            link = item["linkId"].removesuffix(".answer")
            if item["linkId"].endswith(".answer") and link in answers:
                item["answer"] = [{"valueBoolean": answers[link]}]
    return basis


def stay_not_ended(estimated: bool = True) -> dict[str, Any]:
    """The inpatient stay still in progress (no period.end), with or without its estimated
    discharge date."""
    stay = example("Encounter-inpatient-stay")
    stay["status"] = "in-progress"
    del stay["period"]["end"]
    if not estimated:
        stay["extension"] = [e for e in stay["extension"] if "estimated" not in e["url"]]
    return stay


def without_care_manager() -> dict[str, Any]:
    episode = example("EpisodeOfCare-discharge-and-sip")
    del episode["careManager"]
    return episode


async def test_r_dis_07_fast_vardkontakt_before_discharge(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """R-DIS-07: the admission notice (received 2 Nov 15:05) obliges its primary-care
    recipient, not the municipality, to appoint a fast vårdkontakt by the estimated discharge
    date (9 Nov, end of day); when the stay ends (10 Nov 13:30) the deadline moves there; the
    process's careManager, a PractitionerRole of the health centre, completes it at the
    clock's now (the record has no time of its own)."""
    await put(client, without_care_manager())
    await put(client, stay_not_ended())
    await put(client, example("Communication-admission-notice"))
    [task] = await tasks(client, "utse-fast-vardkontakt")
    assert task["owner"] == {"reference": HEALTH_CENTRE}
    assert task["status"] == "requested"
    assert task["restriction"]["period"]["start"] == "2026-11-02T15:05:00+01:00"
    assert deadline(task) == "2026-11-09T23:59:59+01:00"
    assert task["encounter"] == {"reference": "Encounter/inpatient-stay"}

    await put(client, example("Encounter-inpatient-stay"))
    [moved] = await tasks(client, "utse-fast-vardkontakt")
    assert moved["id"] == task["id"]
    assert deadline(moved) == "2026-11-10T13:30:00+01:00"

    clock.moment = datetime(2026, 11, 6, 10, 0, tzinfo=STOCKHOLM)
    await put(client, example("EpisodeOfCare-discharge-and-sip"))
    [done] = await tasks(client, "utse-fast-vardkontakt")
    assert done["status"] == "completed"
    assert done["executionPeriod"]["end"] == "2026-11-06T10:00:00+01:00"
    assert done["output"][0]["valueReference"] == {
        "reference": "PractitionerRole/designated-care-contact"
    }
    assert "businessStatus" not in done


async def test_r_dis_07_the_notice_s_estimated_date_when_the_stay_has_none(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-07: a stay without period.end or estimated date: the notice's estimated
    discharge date (12 Nov) is the deadline."""
    await put(client, without_care_manager())
    await put(client, stay_not_ended(estimated=False))
    notice = example("Communication-admission-notice")
    notice["extension"][0]["valueDate"] = "2026-11-12"
    await put(client, notice)
    [task] = await tasks(client, "utse-fast-vardkontakt")
    assert deadline(task) == "2026-11-12T23:59:59+01:00"


async def test_r_dis_07_a_patient_s_general_practitioner_role_completes_it_late(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """R-DIS-07: a fast vårdkontakt recorded on the Patient (generalPractitioner, a
    PractitionerRole of the health centre) after the discharge completes the Task `late`.
    (The Patient does not claim sip-patient, which lists only the primary care centre.)"""
    await put(client, without_care_manager())
    await put(client, example("Communication-admission-notice"))
    clock.moment = datetime(2026, 11, 11, 9, 0, tzinfo=STOCKHOLM)
    patient = example("Patient-tolvan-tolvansson")
    del patient["meta"]
    patient["generalPractitioner"].append({"reference": "PractitionerRole/ward-physician"})
    await put(client, patient)  # a role of another unit completes nothing
    [task] = await tasks(client, "utse-fast-vardkontakt")
    assert task["status"] == "requested"
    patient["generalPractitioner"].append(
        {"reference": "PractitionerRole/designated-care-contact-physician"}
    )
    await put(client, patient)
    [task] = await tasks(client, "utse-fast-vardkontakt")
    assert task["status"] == "completed"
    assert task["executionPeriod"]["end"] == "2026-11-11T09:00:00+01:00"
    assert task["output"][0]["valueReference"] == {
        "reference": "PractitionerRole/designated-care-contact-physician"
    }
    assert task["businessStatus"]["coding"][0]["code"] == "late"


async def test_r_dis_07_a_fast_vardkontakt_recorded_before_the_notice_fulfils_it_at_once(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-07: the process already names the health centre's fast vårdkontakt
    (careManager): the Task is completed when it opens, at its start."""
    await put(client, example("Communication-admission-notice"))
    [task] = await tasks(client, "utse-fast-vardkontakt")
    assert task["status"] == "completed"
    assert task["executionPeriod"]["end"] == "2026-11-02T15:05:00+01:00"


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param({"sip-needed": False}, id="no-coordination-need"),
        pytest.param(
            {"home-health-care": False, "assistive-devices": False, "medication-changes": False},
            id="only-social-services",
        ),
    ],
)
async def test_r_dis_10_no_invitation_obligation_when_the_planning_basis_excludes_it(
    client: httpx.AsyncClient, answers: dict[str, bool]
) -> None:
    """R-DIS-10: no SIP invitation when the stay's newest planning basis says there is no
    need of coordination, or that the patient needs only social services; an older basis
    that said otherwise does not count."""
    newer = answered(example("QuestionnaireResponse-planning-basis"), answers)
    newer |= {"id": "planning-basis-updated", "authored": "2026-11-08T09:00:00+01:00"}
    await put(client, newer)
    await put(client, example("Communication-ready-for-discharge"))
    assert await tasks(client, "skicka-sip-kallelse") == []
    assert len(await tasks(client, "kvittera-meddelande")) == 3


async def test_r_dis_12_discharge_notice_the_day_the_stay_ends(client: httpx.AsyncClient) -> None:
    """R-DIS-12: the stay (with an admission notice) ends 10 Nov 13:30: the ward that sent
    the admission notice sends the discharge notice by the end of that day; sent the next
    morning it completes the Task `late`."""
    await put(client, stay_not_ended())
    await put(client, example("Communication-admission-notice"))
    assert await tasks(client, "skicka-utskrivningsmeddelande") == []
    await put(client, example("Encounter-inpatient-stay"))
    [task] = await tasks(client, "skicka-utskrivningsmeddelande")
    assert task["owner"] == {"reference": WARD}
    assert task["focus"] == {"reference": "Encounter/inpatient-stay"}
    assert task["encounter"] == {"reference": "Encounter/inpatient-stay"}
    assert task["restriction"]["period"]["start"] == "2026-11-10T13:30:00+01:00"
    assert deadline(task) == "2026-11-10T23:59:59+01:00"
    notice = example("Communication-discharge-notice")
    notice["sent"] = notice["received"] = "2026-11-11T08:15:00+01:00"
    await put(client, notice)
    [task] = await tasks(client, "skicka-utskrivningsmeddelande")
    assert task["status"] == "completed"
    assert task["executionPeriod"]["end"] == "2026-11-11T08:15:00+01:00"
    assert task["output"][0]["valueReference"] == {"reference": "Communication/discharge-notice"}
    assert task["businessStatus"]["coding"][0]["code"] == "late"


async def test_r_dis_12_an_ended_stay_and_a_notice_already_sent(client: httpx.AsyncClient) -> None:
    """R-DIS-12: whatever the write order: the stay ended already and the discharge notice
    was sent before the admission notice is stored: the Task opens completed, on time."""
    await put(client, example("Communication-discharge-notice"))
    await put(client, example("Communication-admission-notice"))
    [task] = await tasks(client, "skicka-utskrivningsmeddelande")
    assert task["status"] == "completed"
    assert task["executionPeriod"]["end"] == "2026-11-10T13:30:00+01:00"
    assert "businessStatus" not in task


def plan_made_before_discharge() -> dict[str, Any]:
    plan = example("CarePlan-sip")
    plan["created"] = "2026-11-05T10:00:00+01:00"
    plan["period"]["start"] = "2026-11-05"
    return plan


async def test_r_dis_14_an_existing_plan_is_followed_up_within_21_days_of_discharge(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-14: the patient's SIP was made (5 Nov) before the discharge (10 Nov 13:30): its
    follow-up responsible's unit follows it up by the end of 1 Dec, instead of a new SIP
    being established; the follow-up meeting held 25 Nov completes it."""
    await put(client, plan_made_before_discharge())
    await put(client, example("Communication-discharge-notice"))
    assert await tasks(client, "uppratta-sip") == []
    [task] = await tasks(client, "folja-upp-plan", focus="Communication/discharge-notice")
    assert task["owner"] == {"reference": HEALTH_CENTRE}
    assert task["restriction"]["period"]["start"] == "2026-11-10T13:30:00+01:00"
    assert deadline(task) == "2026-12-01T23:59:59+01:00"
    meeting = example("Appointment-sip-follow-up-meeting")
    meeting |= {
        "status": "fulfilled",
        "start": "2026-11-25T13:00:00+01:00",
        "end": "2026-11-25T14:00:00+01:00",
    }
    for participant in meeting["participant"]:
        participant["status"] = "accepted"
    await put(client, meeting)
    [task] = await tasks(client, "folja-upp-plan", focus="Communication/discharge-notice")
    assert task["status"] == "completed"
    assert task["executionPeriod"]["end"] == "2026-11-25T14:00:00+01:00"
    assert task["output"][0]["valueReference"] == {"reference": "Appointment/sip-follow-up-meeting"}


async def test_r_dis_14_no_sip_obligation_when_the_planning_basis_says_none_is_needed(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-14: the planning basis says no SIP is needed: the discharge notice opens no
    `uppratta-sip` (its acknowledgements still open)."""
    await put(
        client, answered(example("QuestionnaireResponse-planning-basis"), {"sip-needed": False})
    )
    await put(client, example("Communication-discharge-notice"))
    assert await tasks(client, "uppratta-sip") == []
    assert len(await tasks(client, "kvittera-meddelande")) == 3


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:00:00+01:00", "0001-01-01T00:00:00+14:00", "0001-01-01"]
)
async def test_acts_dated_at_the_ends_of_the_calendar_open_nothing(
    client: httpx.AsyncClient, when: str
) -> None:
    """A notice sent in year 9999 or year 1 names no moment the process can count from (its
    deadline would lie outside the calendar): it is stored, opens no obligation, and the
    stay's payment liability still answers."""
    for name in ("Communication-admission-notice", "Communication-ready-for-discharge"):
        notice = example(name)
        notice["sent"] = notice["received"] = when
        await put(client, notice)
    assert await tasks(client, "kvittera-meddelande") == []
    response = await client.get("/Encounter/inpatient-stay/$payment-liability")
    assert response.status_code == 200, response.text

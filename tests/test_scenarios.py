"""The playable scenarios (examples/scenarios/) end as the process rules say, on both engines.

Each scenario is played through the same player a person runs (`examples/run_scenario.py`):
the ASGI app in process over the engine's storage, a FixedClock set to each step's `at`,
the overdue sweep after each step. A play takes a few seconds, so each (scenario, engine)
is played once and its outcome shared by the tests that read it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from examples.run_scenario import Outcome, code, deadline, in_process, load, names, owner, play
from tests.engines import make_storage

HEALTH_CENTRE = "Organization/ornaset-health-centre"
MUNICIPALITY = "Organization/lulea-municipality"
HOME_CARE = "Organization/lulea-home-care"
WARD = "Organization/sunderby-medical-ward"
SPU, SIP = "SPU", "SIP"

_played: dict[tuple[str, str], Outcome] = {}


async def played(name: str, engine: str, tmp_path: Path) -> Outcome:
    """The outcome of playing scenario `name` on `engine` (played on first use)."""
    if (name, engine) not in _played:
        scenario = load(name)
        storage = make_storage(engine, tmp_path)
        async with in_process(scenario.steps[0].at, storage) as server:
            _played[name, engine] = await play(scenario, server, out=lambda line: None)
    return _played[name, engine]


def obligations(tasks: list[dict]) -> Counter[tuple[str, str]]:
    return Counter((code(t), owner(t)) for t in tasks)


def indicator_figures(outcome: Outcome) -> dict[str, tuple[int, int]]:
    """(numerator, denominator) of each proportion indicator."""
    assert outcome.indicators is not None
    return {
        measure: (figures["numerator"], figures["denominator"])
        for measure, figures in outcome.indicators.items()
        if "denominator" in figures
    }


def process_status(outcome: Outcome) -> dict[str, str]:
    """The status of each process by its type (SPU, SIP)."""
    return {
        coding["code"]: episode["status"]
        for episode in outcome.processes.values()
        for concept in episode["type"]
        for coding in concept["coding"]
    }


def test_every_scenario_is_played_by_these_tests() -> None:
    assert names() == [
        "actor-planning-meeting",
        "discharge-late",
        "discharge-on-time",
        "outpatient-sip",
        "pre-planning",
    ]


# -- discharge-on-time --------------------------------------------------------------------

ON_TIME_OBLIGATIONS = Counter(
    {
        ("kvittera-meddelande", HEALTH_CENTRE): 3,
        ("kvittera-meddelande", MUNICIPALITY): 3,
        ("kvittera-meddelande", HOME_CARE): 2,
        ("fylla-i-planeringsunderlag", WARD): 1,
        ("utse-fast-vardkontakt", HEALTH_CENTRE): 1,
        ("skicka-sip-kallelse", HEALTH_CENTRE): 1,
        ("skicka-utskrivningsmeddelande", WARD): 1,
        ("uppratta-sip", HEALTH_CENTRE): 1,
        ("dokumentera-plan", HEALTH_CENTRE): 1,
        ("dokumentera-plan", MUNICIPALITY): 1,
        ("folja-upp-plan", HEALTH_CENTRE): 1,
        ("skicka-uppfoljningskallelse", HEALTH_CENTRE): 1,
    }
)


async def test_discharge_on_time_meets_every_obligation_on_time(
    engine: str, tmp_path: Path
) -> None:
    """R-DIS-05, R-DIS-06, R-DIS-07, R-DIS-10, R-DIS-12, R-DIS-14, R-SIP-06, R-SIP-08,
    R-SIP-09: the full discharge case opens each obligation once, and every one of them is
    completed by its deadline: none open, none late."""
    outcome = await played("discharge-on-time", engine, tmp_path)
    assert obligations(list(outcome.tasks.values())) == ON_TIME_OBLIGATIONS
    assert outcome.open == []
    assert outcome.late == []
    assert {t["status"] for t in outcome.tasks.values()} == {"completed"}


async def test_discharge_on_time_owes_no_payment(engine: str, tmp_path: Path) -> None:
    """R-DIS-09: ready for discharge 9 Nov 10:30 (before 12:00), liability would start 12 Nov;
    the patient went home 10 Nov, so the municipality owes nothing."""
    outcome = await played("discharge-on-time", engine, tmp_path)
    assert outcome.liability is not None
    assert outcome.liability["liable"] is False
    assert outcome.liability["liabilityStart"] == "2026-11-12"
    assert "discharged before liability began" in outcome.liability["reason"]


async def test_discharge_on_time_indicators_are_all_met(engine: str, tmp_path: Path) -> None:
    """R-IND-01: every indicator of the case counts its cases as on time; one day from
    ready-for-discharge to discharge."""
    outcome = await played("discharge-on-time", engine, tmp_path)
    assert indicator_figures(outcome) == {
        "sip-admission-notice-24h": (1, 1),
        "sip-acknowledgement-on-time": (8, 8),
        "sip-invitation-3-days": (1, 1),
        "sip-plan-established-21-days": (1, 1),
        "sip-plan-documented-3-days": (2, 2),
        "sip-plan-followed-up": (1, 1),
    }
    assert outcome.indicators is not None
    assert outcome.indicators["sip-days-ready-to-discharge"]["score"] == 1
    assert all(not f["evaluated"] for k, f in outcome.indicators.items() if "denominator" in f)


async def test_discharge_on_time_processes(engine: str, tmp_path: Path) -> None:
    """R-DIS-12: the discharge process finishes when the discharge notice is sent; the SIP
    process stays active while its plan is."""
    outcome = await played("discharge-on-time", engine, tmp_path)
    assert process_status(outcome) == {SPU: "finished", SIP: "active"}
    [discharge] = [e for e in outcome.processes.values() if e["id"].endswith("discharge-process")]
    assert discharge["period"]["end"] == "2026-11-10T13:40:00+01:00"


# -- discharge-late -----------------------------------------------------------------------


async def test_discharge_late_ends_with_one_overdue_obligation(engine: str, tmp_path: Path) -> None:
    """R-DIS-05: home care never acknowledges the discharge notice (received 17 Nov 09:00):
    its Task is the only one open, and the sweep marked it overdue after 12:00 that day."""
    outcome = await played("discharge-late", engine, tmp_path)
    assert obligations(outcome.open) == Counter({("kvittera-meddelande", HOME_CARE): 1})
    [task] = outcome.overdue
    assert task["focus"] == {"reference": "Communication/late-discharge-notice"}
    assert deadline(task) == "2026-11-17T12:00:00+01:00"


async def test_discharge_late_records_the_late_acts(engine: str, tmp_path: Path) -> None:
    """R-DIS-05 (the municipality acknowledges at 13:15), R-DIS-10 (the SIP invitation six
    days after ready-for-discharge), R-DIS-12 (the discharge notice the day after the patient
    left), R-SIP-06 (the municipality documents its part of the plan after three days): each
    completes its Task with businessStatus `late`; everything else is on time."""
    outcome = await played("discharge-late", engine, tmp_path)
    assert obligations(outcome.late) == Counter(
        {
            ("kvittera-meddelande", MUNICIPALITY): 1,
            ("skicka-sip-kallelse", HEALTH_CENTRE): 1,
            ("skicka-utskrivningsmeddelande", WARD): 1,
            ("dokumentera-plan", MUNICIPALITY): 1,
        }
    )
    [acknowledgement] = [t for t in outcome.late if code(t) == "kvittera-meddelande"]
    assert acknowledgement["focus"] == {"reference": "Communication/late-admission-notice"}
    assert acknowledgement["executionPeriod"]["end"] == "2026-11-03T13:15:00+01:00"


async def test_discharge_late_the_sweep_saw_the_invitation_overdue_before_it_came(
    engine: str, tmp_path: Path
) -> None:
    """R-DIS-10: on 13 Nov (invitation due by the end of 12 Nov) the sweep marks the open
    invitation Task overdue; the invitation on 16 Nov completes it late."""
    outcome = await played("discharge-late", engine, tmp_path)
    seen = [
        (step.step.at.date().isoformat(), change.kind)
        for step in outcome.steps
        for change in step.changes
        if code(change.task) == "skicka-sip-kallelse"
    ]
    assert seen == [("2026-11-09", "opened"), ("2026-11-13", "overdue"), ("2026-11-16", "late")]


async def test_discharge_late_payment_liability(engine: str, tmp_path: Path) -> None:
    """R-DIS-09: ready for discharge 9 Nov 10:30, discharged 16 Nov: the municipality pays
    from 12 Nov to 16 Nov, 5 days at 9,300 SEK."""
    outcome = await played("discharge-late", engine, tmp_path)
    assert outcome.liability == {
        "liable": True,
        "liabilityStart": "2026-11-12",
        "liableDays": 5,
        "dailyAmount": 9300,
        "amount": 46500,
        "agreement": "norrbotten",
    }


async def test_discharge_late_indicators(engine: str, tmp_path: Path) -> None:
    """R-IND-01: 6 of 8 acknowledgements on time (the late one and the never-done one are
    the evaluated resources), the invitation late, one of two plan documentations late, 7
    days from ready-for-discharge to discharge."""
    outcome = await played("discharge-late", engine, tmp_path)
    assert indicator_figures(outcome) == {
        "sip-admission-notice-24h": (1, 1),
        "sip-acknowledgement-on-time": (6, 8),
        "sip-invitation-3-days": (0, 1),
        "sip-plan-established-21-days": (1, 1),
        "sip-plan-documented-3-days": (1, 2),
        "sip-plan-followed-up": (1, 1),
    }
    assert outcome.indicators is not None
    acknowledgements = outcome.indicators["sip-acknowledgement-on-time"]
    assert acknowledgements["score"] == 0.75
    missed = [t for t in outcome.tasks.values() if code(t) == "kvittera-meddelande"]
    missed = [t for t in missed if t in outcome.late or t in outcome.overdue]
    assert sorted(acknowledgements["evaluated"]) == sorted(f"Task/{t['id']}" for t in missed)
    assert outcome.indicators["sip-days-ready-to-discharge"]["score"] == 7


# -- outpatient-sip -----------------------------------------------------------------------


async def test_outpatient_sip_meets_every_obligation_on_time(engine: str, tmp_path: Path) -> None:
    """R-SIP-02 (invitation within 3 working days of the `sip-behov` message, Mon 1 March →
    Thu 4 March), R-SIP-06 (each participating unit documents), R-SIP-08 (follow-up by its
    date), R-SIP-09 (follow-up invitation within 3 working days of the plan, Wed 10 March →
    Mon 15 March): all opened, all on time."""
    outcome = await played("outpatient-sip", engine, tmp_path)
    assert obligations(list(outcome.tasks.values())) == Counter(
        {
            ("skicka-sip-kallelse", HEALTH_CENTRE): 1,
            ("dokumentera-plan", HEALTH_CENTRE): 1,
            ("dokumentera-plan", MUNICIPALITY): 1,
            ("dokumentera-plan", HOME_CARE): 1,
            ("folja-upp-plan", HEALTH_CENTRE): 1,
            ("skicka-uppfoljningskallelse", HEALTH_CENTRE): 1,
        }
    )
    assert outcome.open == []
    assert outcome.late == []
    due = {code(t): deadline(t) for t in outcome.tasks.values()}
    assert due["skicka-sip-kallelse"] == "2027-03-04T23:59:59+01:00"
    assert due["skicka-uppfoljningskallelse"] == "2027-03-15T23:59:59+01:00"
    assert due["folja-upp-plan"] == "2027-06-09T23:59:59+02:00"


async def test_outpatient_sip_indicators(engine: str, tmp_path: Path) -> None:
    """R-IND-01: an outpatient SIP counts in plan documentation and follow-up, not in the
    discharge indicators (its invitation is not after a ready-for-discharge notice)."""
    outcome = await played("outpatient-sip", engine, tmp_path)
    figures = indicator_figures(outcome)
    assert figures["sip-plan-documented-3-days"] == (3, 3)
    assert figures["sip-plan-followed-up"] == (1, 1)
    assert figures["sip-invitation-3-days"] == (0, 0)
    assert figures["sip-acknowledgement-on-time"] == (0, 0)


# -- actor-planning-meeting ---------------------------------------------------------------


async def test_actor_planning_meeting_is_held_without_the_person(
    engine: str, tmp_path: Path
) -> None:
    """R-MTG-01: the invitation that still has the patient and his daughter as participants
    is refused; the one without them, called by the health centre, is booked and held with a
    short note (R-MTG-04). No statutory obligation follows from such a meeting."""
    outcome = await played("actor-planning-meeting", engine, tmp_path)
    refused = [p for p in outcome.steps if p.refusal is not None]
    assert len(refused) == 1
    assert "R-MTG-01" in str(refused[0].refusal)
    assert "Patient/tolvan-tolvansson" in str(refused[0].refusal)
    assert outcome.tasks == {}
    assert outcome.steps[-1].step.title.startswith("Aktörs- och planeringsmöte genomfört")


# -- pre-planning -------------------------------------------------------------------------


async def test_pre_planning_is_called_by_the_ward_and_opens_no_obligation(
    engine: str, tmp_path: Path
) -> None:
    """R-MTG-02: any unit type calls a "Planering", here the inpatient ward; the meeting is
    moved, held with attendees ticked, and each unit documents its part in a draft SIP. A
    pre-planning meeting is not a SIP meeting: no plan-documentation obligation, and the SIP
    process stays active while the plan is in planning."""
    outcome = await played("pre-planning", engine, tmp_path)
    assert all(p.refusal is None for p in outcome.steps)
    assert outcome.tasks == {}
    assert process_status(outcome) == {SIP: "active"}

"""R-IND-01: the follow-up indicators, one MeasureReport per indicator, computed from cases.

Why pure: which case counts, when it is on time and what the score is must not depend on how
the cases were fetched, so the same Tasks and stays always give the same report and the rules
can be read here in one place. `fhir_server/interactions/indicators.py` fetches the cases.

What a case is:
- An obligation Task (profile sip-obligation) counts in the period that holds its deadline
  (`restriction.period.end`, Stockholm dates). Cancelled, rejected and entered-in-error Tasks
  (the obligation was lifted, e.g. R-DIS-13) do not count. It is in the denominator when it
  is completed or failed, or still open past its deadline at the clock's now; the numerator
  holds those completed on time (`executionPeriod.end` at or before the deadline and not
  `businessStatus` late). The late ones (completed late, failed, open past the deadline) are
  listed in `evaluatedResource`.
- A stay (R-DIS-01) without a `skicka-inskrivningsmeddelande` Task is a case when it has a
  completed admission notice: the physician's judgement that starts the 24 hours is not
  recorded, so the stay's `Encounter.period.start` stands for it and the notice is the
  evidence that one was needed. Deadline 24 h after the start; on time when the first notice
  was `sent` by then.
- A stay discharged in the period (`Encounter.period.end`) with a ready-for-discharge notice
  is an observation: the calendar days (Stockholm dates) from the first notice's `sent` to the
  discharge. The score is their median; a notice sent after the discharge is not measured.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from fhir_server.sip.clock import STOCKHOLM, moment

MEASURE_BASE = "http://sip-fhir.se/fhir/Measure"
POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
IMPROVEMENT = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
UCUM = "http://unitsofmeasure.org"
LATE = "late"
NOT_COUNTED = frozenset({"cancelled", "rejected", "entered-in-error"})
_POPULATION_DISPLAY = {
    "initial-population": "Initial Population",
    "denominator": "Denominator",
    "numerator": "Numerator",
    "measure-population": "Measure Population",
    "measure-observation": "Measure Observation",
}

Scoring = Literal["proportion", "continuous-variable"]
Source = Literal["tasks", "admission-stays", "discharged-stays"]


@dataclass(frozen=True, slots=True)
class Indicator:
    """One indicator: its Measure (`sip-<code>` in profiles/), its rule and what it counts."""

    code: str
    rule: str
    scoring: Scoring
    source: Source
    obligation: str | None = None  # the Task code counted (also for admission-stays)
    focus_message: str | None = None  # only Tasks whose focus is this message type

    @property
    def measure(self) -> str:
        return f"{MEASURE_BASE}/sip-{self.code}"


INDICATORS: tuple[Indicator, ...] = (
    Indicator(
        "admission-notice-24h", "R-DIS-01", "proportion", "admission-stays",
        "skicka-inskrivningsmeddelande",
    ),
    Indicator(
        "acknowledgement-on-time", "R-DIS-05", "proportion", "tasks", "kvittera-meddelande"
    ),
    Indicator(
        "invitation-3-days", "R-DIS-10", "proportion", "tasks", "skicka-sip-kallelse",
        "utskrivningsklar",
    ),
    Indicator("plan-established-21-days", "R-DIS-14", "proportion", "tasks", "uppratta-sip"),
    Indicator("plan-documented-3-days", "R-SIP-06", "proportion", "tasks", "dokumentera-plan"),
    Indicator("plan-followed-up", "R-SIP-08", "proportion", "tasks", "folja-upp-plan"),
    Indicator(
        "days-ready-to-discharge", "R-IND-01", "continuous-variable", "discharged-stays"
    ),
)  # fmt: skip
BY_CODE = {i.code: i for i in INDICATORS}
BY_MEASURE = {i.measure: i for i in INDICATORS}


@dataclass(frozen=True, slots=True)
class Period:
    """Whole Stockholm days, both ends included."""

    start: date
    end: date

    @property
    def begins(self) -> datetime:
        return datetime.combine(self.start, time(), STOCKHOLM)

    @property
    def ends_before(self) -> datetime:
        """The first moment after the period (midnight after its last day)."""
        return datetime.combine(self.end + timedelta(days=1), time(), STOCKHOLM)

    def holds(self, moment: datetime) -> bool:
        return self.begins <= moment < self.ends_before


@dataclass(frozen=True, slots=True)
class Case:
    """Something that had to be done by a deadline: a Task or a stay's admission notice."""

    reference: str
    deadline: datetime
    done: datetime | None  # when it was done; None while not done
    late: bool = False  # recorded late (businessStatus) whatever `done` says
    failed: bool = False  # given up: counts, never on time

    def counts(self, now: datetime) -> bool:
        """In the denominator: done or given up, or not done by a deadline that has passed."""
        return self.done is not None or self.failed or self.deadline < now

    @property
    def on_time(self) -> bool:
        return self.done is not None and self.done <= self.deadline and not self.late


@dataclass(frozen=True, slots=True)
class Observation:
    """One measured stay of a continuous-variable indicator."""

    reference: str
    days: int


def task_case(task: dict[str, Any]) -> Case | None:
    """The case an obligation Task makes, or None when it does not count (lifted, or no
    deadline)."""
    deadline = moment(((task.get("restriction") or {}).get("period") or {}).get("end"))
    status = task.get("status")
    if deadline is None or status in NOT_COUNTED:
        return None
    done = None
    if status == "completed":
        done = moment((task.get("executionPeriod") or {}).get("end")) or deadline
    codes = {c.get("code") for c in ((task.get("businessStatus") or {}).get("coding") or [])}
    reference = f"Task/{task['id']}"
    return Case(reference, deadline, done, late=LATE in codes, failed=status == "failed")


def admission_case(stay: dict[str, Any], first_notice_sent: datetime | None) -> Case | None:
    """R-DIS-01 for a stay: 24 h (elapsed) from its start to its first admission notice."""
    start = moment((stay.get("period") or {}).get("start"))
    if start is None or first_notice_sent is None:
        return None
    deadline = (start.astimezone(UTC) + timedelta(hours=24)).astimezone(STOCKHOLM)
    return Case(f"Encounter/{stay['id']}", deadline, first_notice_sent)


def discharge_observation(stay: dict[str, Any], ready_sent: datetime | None) -> Observation | None:
    """Calendar days from the ready-for-discharge notice to the discharge, or None."""
    end = moment((stay.get("period") or {}).get("end"))
    if end is None or ready_sent is None or ready_sent > end:
        return None
    return Observation(f"Encounter/{stay['id']}", (end.date() - ready_sent.date()).days)


def _population(code: str, count: int) -> dict[str, Any]:
    coding = {"system": POPULATION, "code": code, "display": _POPULATION_DISPLAY[code]}
    return {"code": {"coding": [coding]}, "count": count}


def _report(
    indicator: Indicator, period: Period, now: datetime, reporter: str | None
) -> dict[str, Any]:
    notation = "increase" if indicator.scoring == "proportion" else "decrease"
    display = f"{notation.capitalize()}d score indicates improvement"
    report: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": "summary",
        "measure": indicator.measure,
        "date": now.isoformat(timespec="seconds"),
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
        "improvementNotation": {
            "coding": [{"system": IMPROVEMENT, "code": notation, "display": display}]
        },
    }
    if reporter is not None:
        report["reporter"] = {"reference": reporter}
    return report


def proportion_report(
    indicator: Indicator,
    cases: list[Case],
    period: Period,
    now: datetime,
    reporter: str | None = None,
) -> dict[str, Any]:
    """Share of the cases due in the period and done or due by now that were done on time."""
    initial = sorted(
        {c.reference: c for c in cases if period.holds(c.deadline)}.values(),
        key=lambda c: (c.deadline, c.reference),
    )
    denominator = [c for c in initial if c.counts(now)]
    numerator = [c for c in denominator if c.on_time]
    group: dict[str, Any] = {
        "population": [
            _population("initial-population", len(initial)),
            _population("denominator", len(denominator)),
            _population("numerator", len(numerator)),
        ]
    }
    if denominator:
        group["measureScore"] = {"value": round(len(numerator) / len(denominator), 4)}
    report = _report(indicator, period, now, reporter)
    report["group"] = [group]
    late = [{"reference": c.reference} for c in denominator if not c.on_time]
    if late:
        report["evaluatedResource"] = late
    return report


def continuous_report(
    indicator: Indicator,
    observations: list[Observation],
    period: Period,
    now: datetime,
    reporter: str | None = None,
    initial: int | None = None,
) -> dict[str, Any]:
    """The median of the observations, in days; `initial` counts the stays considered (those
    with a notice sent after the discharge are in it but not measured)."""
    measured = sorted({o.reference: o for o in observations}.values(), key=lambda o: o.reference)
    group: dict[str, Any] = {
        "population": [
            _population("initial-population", len(measured) if initial is None else initial),
            _population("measure-population", len(measured)),
            _population("measure-observation", len(measured)),
        ]
    }
    if measured:
        median = statistics.median(o.days for o in measured)
        group["measureScore"] = {"value": median, "unit": "d", "system": UCUM, "code": "d"}
    report = _report(indicator, period, now, reporter)
    report["group"] = [group]
    if measured:
        report["evaluatedResource"] = [{"reference": o.reference} for o in measured]
    return report

"""R-DIS-09: from which day the municipality pays for a patient kept in hospital.

A pure computation over the facts of one inpatient stay, so the same notices always give the
same answer: liability starts a number of calendar days after the day the ready-for-discharge
notice was sent (Stockholm time; the agreement's cut-off decides how many, and a patient who
needs only social services starts after the agreement's fixed count), and runs to the
discharge date, or to the clock's today while the patient is still in hospital. Both ends
count as days. No liability when the municipality was never notified of the admission or of
the ready-for-discharge, or when the patient left before liability began; days on which the
patient waited for region-financed outpatient interventions are not the municipality's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from fhir_server.sip.agreements import PaymentAgreement

NOT_NOTIFIED_OF_ADMISSION = "The municipality was never notified of the admission (R-DIS-09)"
NOT_NOTIFIED_OF_READY = (
    "The municipality was never notified that the patient is ready for discharge (R-DIS-09)"
)
DISCHARGED_BEFORE = "The patient was discharged before liability began (R-DIS-09)"
NOT_BEGUN = "Liability has not begun yet (R-DIS-09)"
OUTPATIENT_CARE_MISSING = (
    "The patient could not be discharged because region-financed outpatient interventions "
    "were not available (R-DIS-09)"
)

Period = tuple[date, date | None]  # both ends included; None: until discharge


@dataclass(frozen=True, slots=True)
class StayFacts:
    """What the stay's resources say: when the municipality was notified, and of what."""

    admission_notified: datetime | None  # first admission notice a municipality received
    ready_notified: datetime | None  # first ready-for-discharge notice it received
    discharged: date | None
    only_social_services: bool = False  # the planning basis: no SIP invitation is sent
    awaiting_outpatient_care: tuple[Period, ...] = ()


@dataclass(frozen=True, slots=True)
class Liability:
    liable: bool
    start: date | None = None
    days: int = 0
    daily_amount: int = 0
    amount: int = 0
    reason: str | None = None


def payment_liability(facts: StayFacts, agreement: PaymentAgreement, today: date) -> Liability:
    if facts.admission_notified is None:
        return Liability(False, reason=NOT_NOTIFIED_OF_ADMISSION)
    if facts.ready_notified is None:
        return Liability(False, reason=NOT_NOTIFIED_OF_READY)
    sent = facts.ready_notified
    count = agreement.days_until_liability(sent.time(), facts.only_social_services)
    start = sent.date() + timedelta(days=count)
    end = facts.discharged or today
    if end < start:
        return Liability(False, start, reason=DISCHARGED_BEFORE if facts.discharged else NOT_BEGUN)
    span = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    days = [day for day in span if not _awaiting(day, facts.awaiting_outpatient_care)]
    if not days:
        return Liability(False, start, reason=OUTPATIENT_CARE_MISSING)
    amount = sum(agreement.daily_amount(day) for day in days)
    return Liability(True, start, len(days), agreement.daily_amount(days[-1]), amount)


def _awaiting(day: date, periods: tuple[Period, ...]) -> bool:
    return any(first <= day and (last is None or day <= last) for first, last in periods)

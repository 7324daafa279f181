"""Process time (fhir_server.sip.clock): Stockholm time, working days, the 12:00 cut-off."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from fhir_server.sip.clock import (
    STOCKHOLM,
    FixedClock,
    add_working_days,
    is_working_day,
    local_moment,
    next_cutoff,
)

NOON = time(12, 0)


@pytest.mark.parametrize(
    ("received", "due"),
    [
        ("2026-11-02T11:59:00+01:00", "2026-11-02T12:00:00+01:00"),
        ("2026-11-02T12:00:00+01:00", "2026-11-02T12:00:00+01:00"),
        ("2026-11-02T12:01:00+01:00", "2026-11-03T12:00:00+01:00"),
        ("2026-11-07T18:00:00+01:00", "2026-11-08T12:00:00+01:00"),  # Saturday: every day
        ("2026-12-31T15:00:00+01:00", "2027-01-01T12:00:00+01:00"),  # New Year's Day too
        ("2027-03-28T10:30:00Z", "2027-03-29T12:00:00+02:00"),  # 12:30 summer time
        ("2026-10-25T10:30:00Z", "2026-10-25T12:00:00+01:00"),  # 11:30 winter time
    ],
)
def test_r_dis_05_acknowledgement_is_due_the_next_12_00(received: str, due: str) -> None:
    """R-DIS-05: receivers acknowledge no later than the next 12:00, every day of the year."""
    moment = local_moment(received)
    assert moment is not None
    assert next_cutoff(moment, NOON) == local_moment(due)


@pytest.mark.parametrize(
    ("known", "due"),
    [
        (date(2026, 11, 2), date(2026, 11, 5)),  # Monday: Thursday
        (date(2026, 11, 6), date(2026, 11, 11)),  # Friday: over the weekend, Wednesday
        (date(2026, 4, 2), date(2026, 4, 9)),  # before Easter: Good Friday, Easter Monday off
        (date(2026, 12, 23), date(2026, 12, 30)),  # julafton, juldagen, then the weekend
        (date(2026, 6, 18), date(2026, 6, 24)),  # midsommarafton (Friday 19 June) is off
    ],
)
def test_r_sip_02_invitation_within_3_working_days(known: date, due: date) -> None:
    """R-SIP-02: the invitation within 3 working days (Monday to Friday, not public holidays)."""
    assert add_working_days(known, 3) == due


def test_working_days_skip_weekends_and_swedish_public_holidays() -> None:
    assert is_working_day(date(2026, 11, 2))
    assert not is_working_day(date(2026, 11, 7))  # Saturday
    assert not is_working_day(date(2026, 6, 6))  # Sveriges nationaldag
    assert not is_working_day(date(2026, 5, 14))  # Kristi himmelsfärdsdag, a Thursday
    assert not is_working_day(date(2026, 12, 31))  # nyårsafton, counted as a Sunday


def test_local_moments_are_stockholm_time() -> None:
    assert local_moment("2026-07-01T10:00:00Z") == datetime(2026, 7, 1, 12, tzinfo=STOCKHOLM)
    assert local_moment("2026-07-01") == datetime(2026, 7, 1, tzinfo=STOCKHOLM)
    assert local_moment("2026-07-01T10:00:00") is None  # no zone: no moment
    assert local_moment("not a date") is None


def test_a_fixed_clock_says_what_it_is_set_to() -> None:
    clock = FixedClock(datetime(2026, 11, 20, 8, 0, tzinfo=STOCKHOLM))
    assert clock.now().isoformat() == "2026-11-20T08:00:00+01:00"

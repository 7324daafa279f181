"""Process time: Europe/Stockholm, an injectable clock, and the Swedish working-day calendar.

Why a clock object: deadlines come from the acts' own recorded times, but "today" (how many
days a municipality has paid so far) needs a now; tests and scenario playback set it, so no
test waits for time to pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import holidays

STOCKHOLM = ZoneInfo("Europe/Stockholm")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current moment, aware, in Europe/Stockholm."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(STOCKHOLM)


@dataclass(slots=True)
class FixedClock:
    """A clock that says what it is set to (tests, scenario playback)."""

    moment: datetime

    def now(self) -> datetime:
        return self.moment.astimezone(STOCKHOLM)


def local_moment(text: str) -> datetime | None:
    """A FHIR dateTime in Stockholm time; a date alone is that day's midnight there. None when
    `text` is not a dateTime with a zone or a date (a time without a zone names no moment),
    or lies outside the years the process can count in (a deadline weeks after year 9999
    or a zone shift before year 1 has no datetime)."""
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time(), STOCKHOLM)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                return None
            moment = moment.astimezone(STOCKHOLM)
    except (ValueError, OverflowError):
        return None
    return moment if FIRST_YEAR <= moment.year <= LAST_YEAR else None


FIRST_YEAR, LAST_YEAR = 2, 9997


def moment(value: Any) -> datetime | None:
    """`local_moment` of a value read from a resource; anything but a string is None."""
    return local_moment(value) if isinstance(value, str) else None


def instant(moment: datetime) -> str:
    """A moment as a FHIR instant, to the second, with its offset."""
    return moment.isoformat(timespec="seconds")


@cache
def _days_off(year: int) -> frozenset[date]:
    """Public holidays, and the eves that lag (1930:173) om beräkning av lagstadgad tid treats
    as Sundays: midsommarafton, julafton, nyårsafton."""
    # Sundays are listed as holidays by default; weekends are handled on their own.
    public = holidays.Sweden(years=year, include_sundays=False)
    midsummer = next(day for day, name in public.items() if name == "Midsummer Day")
    eves = {midsummer - timedelta(days=1), date(year, 12, 24), date(year, 12, 31)}
    return frozenset(public) | eves


def is_working_day(day: date) -> bool:
    """Monday to Friday, not a Swedish public holiday nor one of the eves counted as Sundays
    (R-SIP-02's "vardagar")."""
    return day.weekday() < 5 and day not in _days_off(day.year)


def add_working_days(day: date, count: int) -> date:
    """The date `count` working days after `day`."""
    while count > 0:
        day += timedelta(days=1)
        count -= is_working_day(day)
    return day


def next_cutoff(moment: datetime, cutoff: time) -> datetime:
    """The first `cutoff` (e.g. 12:00 Stockholm time) at or after `moment` (R-DIS-05)."""
    here = moment.astimezone(STOCKHOLM)
    today = datetime.combine(here.date(), cutoff, STOCKHOLM)
    if here <= today:
        return today
    return datetime.combine(here.date() + timedelta(days=1), cutoff, STOCKHOLM)

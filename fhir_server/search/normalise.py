"""Normal forms of search values, shared by indexing (on write) and query parsing (on read).

Why: a search matches what was indexed only if both sides are normalised the same way, so
the rules live here, as small pure functions, and nowhere else:
- strings match case- and accent-insensitively (`fold`), as the FHIR search spec asks for
  the default string search ("Åsa" is found by `name=asa`);
- dates are the instant *range* their precision implies (`date_range`, `period_range`),
  in UTC, as fixed-width text so both engines can compare them as strings;
- numbers are the range their written precision implies (`number_range`).
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import datetime, timedelta
from decimal import MAX_EMAX, MIN_EMIN, Context, InvalidOperation
from decimal import Decimal as _Decimal
from functools import cache
from typing import Any

MIN_INSTANT = "0001-01-01T00:00:00.000000Z"
MAX_INSTANT = "9999-12-31T23:59:59.999999Z"


def fold(text: str) -> str:
    """Case- and accent-insensitive form: casefold, Unicode NFKD, combining marks dropped.

    Why: FHIR string search is "case- and accent-insensitive" by default; "Åsa" → "asa",
    "Müller" → "muller", "ß" → "ss" (casefold, not lower), "ﬁ" → "fi" (NFKD compatibility).
    Casefolding first lets NFKD decompose the results too ("İ" → "i").
    """
    if text.isascii():
        return text.lower()  # same as casefold for ASCII, and ~10x cheaper
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    if decomposed.isascii():
        return decomposed
    return decomposed.translate(_combining_marks())


@cache
def _combining_marks() -> dict[int, None]:
    """`str.translate` table deleting every combining mark (all lie below U+20000)."""
    return {cp: None for cp in range(0x300, 0x20000) if unicodedata.combining(chr(cp))}


_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def date_range(value: str) -> tuple[str, str] | None:
    """The UTC instant range a FHIR date, dateTime or instant covers; None if not one.

    Why: FHIR dates carry their precision and the search spec compares ranges ("2026-03" is
    all of March, so `date=ge2026-03-15` must see its end as well as its start).  Returned texts
    are fixed-width `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so they sort as strings.  A value without
    a time zone is taken as UTC (the spec leaves it to the server); fractional seconds set
    the precision (".5" covers 100 ms).  Built with string operations where possible: this
    runs for every date of every write, and `datetime` arithmetic costs several µs.
    """
    if not isinstance(value, str):
        return None
    m = _DATE.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    y = int(year)
    if y == 0:
        return None
    if month is None:
        return f"{year}-01-01T00:00:00.000000Z", f"{year}-12-31T23:59:59.999999Z"
    mo = int(month)
    if not 1 <= mo <= 12:
        return None
    last = calendar.monthrange(y, mo)[1]
    if day is None:
        return f"{value}-01T00:00:00.000000Z", f"{value}-{last:02d}T23:59:59.999999Z"
    if not 1 <= int(day) <= last:
        return None
    date = value[:10]
    if hour is None:
        return f"{date}T00:00:00.000000Z", f"{date}T23:59:59.999999Z"
    h, mi = int(hour), int(minute)
    if h > 23 or mi > 59 or (second is not None and int(second) > 59):
        return None
    if second is None:
        low_tail, high_tail = "00.000000Z", "59.999999Z"
    elif fraction is None:
        low_tail, high_tail = f"{second}.000000Z", f"{second}.999999Z"
    else:
        digits = fraction[:6]
        low_micro = int(digits.ljust(6, "0"))
        high_micro = low_micro + 10 ** (6 - len(digits)) - 1
        low_tail, high_tail = f"{second}.{low_micro:06d}Z", f"{second}.{high_micro:06d}Z"
    shift = 0
    if zone is not None and zone != "Z":
        shift = int(zone[1:3]) * 60 + int(zone[4:6])
        if zone[0] == "+":
            shift = -shift
    minutes = h * 60 + mi + shift
    if 0 <= minutes < 1440:  # still the same day in UTC
        hm = f"{minutes // 60:02d}:{minutes % 60:02d}:"
        return f"{date}T{hm}{low_tail}", f"{date}T{hm}{high_tail}"
    moment = _shift(datetime(y, mo, int(day)), timedelta(minutes=minutes))
    day_text = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    hm = f"{day_text}T{moment.hour:02d}:{moment.minute:02d}:"
    return f"{hm}{low_tail}", f"{hm}{high_tail}"


def _shift(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta`, clamped to the representable years 1..9999."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.min if delta < timedelta(0) else datetime.max


def period_range(period: dict[str, Any]) -> tuple[str, str] | None:
    """A Period as (start's low, end's high); a missing end is open (`9999-…`), start `0001-…`.

    Why: the spec reads an absent Period.end as "ongoing", so the range must reach the end of
    time; an absent start likewise reaches back.  None if neither bound is usable.
    """
    start = period.get("start")
    end = period.get("end")
    low_range = date_range(start) if isinstance(start, str) else None
    high_range = date_range(end) if isinstance(end, str) else None
    if low_range is None and high_range is None:
        return None
    return (
        low_range[0] if low_range is not None else MIN_INSTANT,
        high_range[1] if high_range is not None else MAX_INSTANT,
    )


def number_range(value: Any) -> tuple[float, float]:
    """The range a number's written precision implies: ± half a unit in its last digit.

    Why: the FHIR search spec treats numbers as precise only to the digits written, so 100
    means [99.5, 100.5], 100.00 means [99.995, 100.005] and 1e2 (one significant figure)
    means [50, 150].  (The spec's own 1e2 example says [95, 105], which contradicts its
    significant-figures rule; the rule is followed here.)  `fhirjson.Decimal` keeps the text
    as written; a plain float uses its shortest repr; ints are exact to the unit.
    """
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        if abs(value) < 2**1000:
            return value - 0.5, value + 0.5
        text = str(value)
    else:
        text = getattr(value, "text", None)
        if text is None:
            text = repr(value) if isinstance(value, float) else str(value)
    try:
        exact = _Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not exact.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    exponent = exact.as_tuple().exponent
    assert isinstance(exponent, int)
    # `1e-99999999` is a valid JSON number: its exponent is past the default context's
    # limits, so the half unit is computed without them; floats then round to 0 or ±inf.
    half = _UNBOUNDED.scaleb(_Decimal(5), exponent - 1)
    return float(_UNBOUNDED.subtract(exact, half)), float(_UNBOUNDED.add(exact, half))


_UNBOUNDED = Context(prec=28, Emax=MAX_EMAX, Emin=MIN_EMIN)

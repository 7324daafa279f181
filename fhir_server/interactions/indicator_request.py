"""The parameters of `$indicators` (R-IND-01), from the query and a POST Parameters body.

`periodStart` and `periodEnd` are FHIR dates, Stockholm days, both ends included; a year or
a month stands for its first day as the start and its last day as the end. Without them the
period is the 30 days that end on the clock's today (`periodEnd` alone: the 30 days ending
then; `periodStart` alone: from then to today). `indicator` (repeatable, or comma-separated)
names indicators by code or Measure url; without it every indicator is reported. Anything
else, a parameter given twice or a period that ends before it starts is 400, its location in
`expression`.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from fhir_server.errors import clipped, error
from fhir_server.sip.indicators import BY_CODE, BY_MEASURE, INDICATORS, Indicator, Period

from .context import Context

DEFAULT_DAYS = 30
FIRST_YEAR, LAST_YEAR = 2, 9998  # date arithmetic on year 1 or 9999 would overflow
DATE_RE = re.compile(r"([0-9]{4})(?:-(0[1-9]|1[0-2])(?:-(0[1-9]|[12][0-9]|3[01]))?)?")
BODY_VALUES = {
    "periodStart": ("valueDate",),
    "periodEnd": ("valueDate",),
    "indicator": ("valueCode", "valueString", "valueCanonical", "valueUri"),
}
OUTPUT_PARAMS = ("_format", "_pretty")


@dataclass(frozen=True, slots=True)
class IndicatorRequest:
    period: Period
    indicators: tuple[Indicator, ...]


def read_request(
    ctx: Context, query: Iterable[tuple[str, str]], body: dict[str, Any] | None
) -> IndicatorRequest:
    """The request; a POST body must be a valid R4 Parameters resource."""
    given: list[tuple[str, str, str]] = []  # (name, value, location)
    for name, value in query:
        if name not in OUTPUT_PARAMS:
            given.append((_known(name, name), value, name))
    if body is not None:
        if body.get("resourceType") != "Parameters":
            raise error(400, "invalid", "$indicators takes a Parameters body", "resourceType")
        ctx.validator.check(body, "Parameters")
        for i, parameter in enumerate(body.get("parameter") or []):
            location = f"Parameters.parameter[{i}]"
            name = _known(str(parameter.get("name", "")), location)
            given.append((name, _body_value(parameter, name, location), location))
    return _request(given, ctx.clock.now().date())


def _known(name: str, location: str) -> str:
    if name not in BODY_VALUES:
        known = ", ".join(BODY_VALUES)
        message = f"Unknown $indicators parameter '{clipped(name)}' (known: {known})"
        raise error(400, "invalid", message, location)
    return name


def _body_value(parameter: dict[str, Any], name: str, location: str) -> str:
    for key in BODY_VALUES[name]:
        if isinstance(parameter.get(key), str):
            return str(parameter[key])
    wanted = " or ".join(BODY_VALUES[name])
    raise error(400, "invalid", f"$indicators parameter '{name}' needs a {wanted}", location)


def _request(given: list[tuple[str, str, str]], today: date) -> IndicatorRequest:
    bounds: dict[str, tuple[date, str]] = {}
    chosen: list[Indicator] = []
    for name, value, location in given:
        if name == "indicator":
            chosen += [_indicator(code, location) for code in value.split(",")]
            continue
        if name in bounds:
            raise error(400, "invalid", f"'{name}' is given twice", location)
        bounds[name] = (_date(value, location, last=name == "periodEnd"), location)
    end, end_at = bounds.get("periodEnd", (today, ""))
    start, start_at = bounds.get("periodStart", (end - timedelta(days=DEFAULT_DAYS - 1), ""))
    if end < start:
        message = f"The period ends ({end}) before it starts ({start})"
        raise error(400, "invalid", message, *(at for at in (start_at, end_at) if at))
    unique = tuple(dict.fromkeys(chosen)) or INDICATORS
    return IndicatorRequest(Period(start, end), unique)


def _indicator(text: str, location: str) -> Indicator:
    found = BY_CODE.get(text.strip()) or BY_MEASURE.get(text.strip().split("|")[0])
    if found is None:
        known = ", ".join(BY_CODE)
        message = f"Unknown indicator '{clipped(text)}' (known: {known})"
        raise error(400, "invalid", message, location)
    return found


def _date(text: str, location: str, *, last: bool) -> date:
    """A FHIR date; a year or month gives its first day, or its last when `last`."""
    match = DATE_RE.fullmatch(text)
    if match is None:
        message = f"'{clipped(text)}' is not a date (YYYY-MM-DD, YYYY-MM or YYYY)"
        raise error(400, "invalid", message, location)
    year, month, day = int(match[1]), match[2], match[3]
    if not FIRST_YEAR <= year <= LAST_YEAR:  # the period's ends move a day and a zone
        message = f"'{clipped(text)}' is outside the years {FIRST_YEAR}-{LAST_YEAR}"
        raise error(400, "invalid", message, location)
    try:
        if day is not None:
            return date(year, int(str(month)), int(day))
        if month is not None:
            days = calendar.monthrange(year, int(month))[1] if last else 1
            return date(year, int(month), days)
        return date(year, 12, 31) if last else date(year, 1, 1)
    except ValueError:
        raise error(400, "invalid", f"'{clipped(text)}' is not a real date", location) from None

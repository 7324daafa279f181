"""Swedish personal identity numbers as written by people, stored in one form: 12 digits.

Why: EHRs and forms send personnummer and samordningsnummer as `19121212-1212`,
`121212-1212`, `1212121212` or `191212121212`. Search and the SIP Patient profile need one
form, so every write stores the 12-digit one (Skatteverket's rules for the century: a
10-digit number belongs to the latest century that does not put the birth date in the
future; `+` as separator means the person is 100 or older). What cannot be read as a
number of either form is left as it is, for validation to judge.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

SYSTEMS = frozenset(
    {
        "http://electronichealth.se/identifier/personnummer",
        "http://electronichealth.se/identifier/samordningsnummer",
        "urn:oid:1.2.752.129.2.1.3.1",
        "urn:oid:1.2.752.129.2.1.3.3",
    }
)
_WRITTEN = re.compile(r"(\d{2})?(\d{6})([-+]?)(\d{4})")


def normalise_identifiers(resource: dict[str, Any], today: date | None = None) -> None:
    """Rewrite, in place, the personnummer/samordningsnummer values of `resource.identifier`."""
    identifiers = resource.get("identifier")
    if not isinstance(identifiers, list):
        return
    for identifier in identifiers:
        system = identifier.get("system") if isinstance(identifier, dict) else None
        if isinstance(system, str) and system in SYSTEMS:
            value = identifier.get("value")
            if isinstance(value, str):
                identifier["value"] = twelve_digits(value.strip(), today or date.today())


def twelve_digits(value: str, today: date) -> str:
    """`value` in the 12-digit form, or unchanged when it is not a number of either form."""
    match = _WRITTEN.fullmatch(value)
    if match is None:
        return value
    century, birth, separator, serial = match.groups()
    if century is not None:
        return f"{century}{birth}{serial}" if separator != "+" else value
    yy, mm, dd = int(birth[:2]), int(birth[2:4]), int(birth[4:6])
    day = dd - 60 if dd > 60 else dd  # samordningsnummer: day + 60
    year = 2000 + yy
    try:
        if date(year, mm, day) > today:
            year -= 100
    except ValueError:
        return value  # not a date: leave it for validation to reject
    if separator == "+":
        year -= 100
    return f"{year}{birth[2:]}{serial}"

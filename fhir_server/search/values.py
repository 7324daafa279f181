"""Search values by parameter type: text in the query string -> conditions of the query tree.

Why a module of its own: each FHIR search type has its own value syntax (prefixes, `|`
separators, date precision, implicit number precision).  Every value is checked here; a
malformed one is a 400 naming the parameter, never an exception deeper down.
"""

from __future__ import annotations

import math
import re

from fhir_server.errors import FhirError, error
from fhir_server.search.normalise import date_range, fold, number_range
from fhir_server.search.query import (
    PREFIXES,
    DateMatch,
    NumberMatch,
    Prefix,
    QuantityMatch,
    ReferenceMatch,
    StringMatch,
    TextMatch,
    TokenMatch,
    UriMatch,
)

_DATE = re.compile(
    r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d+)?|\.\d+)([eE][+-]?\d+)?")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TYPE_ID = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?")
_ABSOLUTE = re.compile(r"[a-z][a-z0-9+.-]*:\S+")


def split_escaped(value: str, separator: str) -> list[str]:
    r"""Split on `separator` unless escaped with a backslash; `\,` `\|` `\$` `\\` unescape."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _prefixed(value: str) -> tuple[Prefix, str]:
    head = value[:2]
    if head in PREFIXES and len(value) > 2 and not value[2].isalpha():
        return head, value[2:]  # type: ignore[return-value]
    return "eq", value


def _bad(name: str, value: str, expected: str) -> FhirError:
    return error(400, "invalid", f"'{value}' is not a valid {expected} for '{name}'", name)


def token(name: str, param: str, value: str) -> TokenMatch:
    parts = split_escaped(value, "|")
    if len(parts) == 1:
        if not parts[0]:
            raise error(400, "invalid", f"Empty value for search parameter '{name}'", name)
        return TokenMatch(param, None, parts[0])
    if len(parts) != 2 or (not parts[0] and not parts[1]):
        raise _bad(name, value, "token (system|code)")
    system, code = parts
    return TokenMatch(param, system, code or None)


def text(name: str, param: str, value: str) -> TextMatch:
    if not value:
        raise _bad(name, value, "text")
    return TextMatch(param, fold(value))


def string(name: str, param: str, value: str, modifier: str) -> StringMatch:
    if not value:
        raise _bad(name, value, "string")
    if modifier == "exact":
        return StringMatch(param, value, "exact")
    return StringMatch(param, fold(value), "contains" if modifier == "contains" else "start")


def date(name: str, param: str, value: str) -> DateMatch:
    prefix, text_value = _prefixed(value)
    found = date_range(text_value) if _DATE.fullmatch(text_value) else None
    if found is None:
        raise _bad(name, value, "date ([prefix]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]])")
    return DateMatch(param, prefix, *found)


def _finite_range(name: str, value: str, text_value: str, expected: str) -> tuple[float, float]:
    """The number's range; one past what a float holds (`1e400`) matches nothing: a 400."""
    low, high = number_range(text_value)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise _bad(name, value, f"{expected} within ±1.8e308")
    return low, high


def number(name: str, param: str, value: str) -> NumberMatch:
    prefix, text_value = _prefixed(value)
    if not _NUMBER.fullmatch(text_value):
        raise _bad(name, value, "number")
    return NumberMatch(param, prefix, *_finite_range(name, value, text_value, "number"))


def quantity(name: str, param: str, value: str) -> QuantityMatch:
    parts = split_escaped(value, "|")
    if len(parts) not in (1, 3):
        raise _bad(name, value, "quantity ([prefix]number|system|code)")
    prefix, text_value = _prefixed(parts[0])
    if not _NUMBER.fullmatch(text_value):
        raise _bad(name, value, "quantity ([prefix]number|system|code)")
    low, high = _finite_range(name, value, text_value, "quantity")
    system, code = (parts[1] or None, parts[2] or None) if len(parts) == 3 else (None, None)
    return QuantityMatch(param, prefix, low, high, system, code)


def reference(
    name: str, param: str, value: str, type_modifier: str | None, targets: tuple[str, ...]
) -> ReferenceMatch:
    """`Type/id`, `id` (with `:Type` or a single target), an absolute URL, or a canonical."""
    if not value:
        raise _bad(name, value, "reference")
    match = _TYPE_ID.fullmatch(value)
    if match is not None:
        rtype, rid = match.groups()
        if type_modifier is not None and rtype != type_modifier:
            raise _bad(name, value, f"reference to {type_modifier}")
        return ReferenceMatch(param, rtype, rid, None)
    if _ABSOLUTE.fullmatch(value):
        tail = re.search(r"/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$", value)
        if tail is not None:  # e.g. our own base URL: match the local target as well
            return ReferenceMatch(param, tail.group(1), tail.group(2), value.split("|")[0])
        return ReferenceMatch(param, None, None, value.split("|")[0])
    if _ID.fullmatch(value):
        rtype = type_modifier or (targets[0] if len(targets) == 1 else None)
        return ReferenceMatch(param, rtype, value, None)
    raise _bad(name, value, "reference (Type/id, id or an absolute URL)")


def uri(name: str, param: str, value: str, modifier: str) -> UriMatch:
    if not value:
        raise _bad(name, value, "uri")
    mode = modifier if modifier in ("above", "below") else "exact"
    return UriMatch(param, value, mode)  # type: ignore[arg-type]


def alternatives(name: str, value: str, limit: int) -> list[str]:
    found = split_escaped(value, ",")
    if len(found) > limit:
        raise error(400, "too-costly", f"More than {limit} alternatives in '{name}'", name)
    return found

"""FHIR JSON in and out.

Writes are parsed with the standard library so FHIR decimals keep their exact text (`1.10`
stays `1.10`, as the spec requires); output goes through orjson, which splices decimal text
and stored resource bytes in verbatim (`orjson.Fragment`), so reads never re-serialise.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from fhir_server.errors import error

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
MAX_DEPTH = 200
"""Deepest nesting of objects and arrays a body may have: below orjson's limit (255), with
room for the Bundle a stored resource is later served in (deep Questionnaire items still fit)."""


class Decimal(float):
    """A JSON number with a fraction or exponent: validates as a float, serialises as written."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> Decimal:
        value = super().__new__(cls, text)
        value.text = text
        return value


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(value.text)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)


def loads_resource(body: bytes) -> dict[str, Any]:
    """Parse a request body that must hold one JSON object; bad input is a 400 outcome."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(400, "invalid", f"Body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise error(400, "invalid", "Body is empty; a FHIR JSON resource was expected")
    try:
        value = json.loads(
            text,
            parse_float=Decimal,
            parse_int=_integer,
            parse_constant=_reject_constant,
            object_pairs_hook=_object,
        )
    except json.JSONDecodeError as exc:
        raise error(
            400,
            "invalid",
            f"Body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        ) from None
    except RecursionError:
        raise error(400, "invalid", "Body is nested too deeply to be a FHIR resource") from None
    except ValueError as exc:
        raise error(400, "invalid", f"Body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise error(400, "invalid", "Body must be a JSON object holding a FHIR resource")
    if too_deep(value):
        message = f"Body nests objects and arrays deeper than {MAX_DEPTH}"
        raise error(400, "too-costly", message)
    if _SURROGATE_ESCAPE.search(text):
        try:
            dumps(value)  # a paired escape decodes to one character; a lone one cannot encode
        except TypeError:
            raise error(400, "invalid", "Body contains a lone UTF-16 surrogate escape") from None
    return value


def too_deep(value: Any) -> bool:
    """Whether objects and arrays in `value` nest deeper than MAX_DEPTH (an explicit stack:
    a hostile document cannot exhaust the interpreter's recursion either)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a repeated key is ambiguous, so it is an error, not last-one-wins."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key '{duplicate}' appears twice in one object")
    return value


def _integer(text: str) -> int | Decimal:
    """An integer; past 64 bits (orjson's range) a number kept as written, like a decimal."""
    if len(text) > 20:  # and int() would refuse 4,300 digits and more
        return Decimal(text)
    value = int(text)
    return value if -(2**63) <= value < 2**64 else Decimal(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")

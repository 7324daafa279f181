"""Request parameters → the typed query tree, checked against the registry.

Strict by default, as the spec recommends for servers: an unknown or unsupported parameter,
modifier or value is a 400. With `Prefer: handling=lenient` such a parameter is dropped and
reported back as a warning.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from fhir_server.errors import Issue, error
from fhir_server.search.query import AnyOf, Condition, IdIn, SearchQuery, TokenMatch
from fhir_server.search.registry import RESULT_PARAMS, search_params

ID_PATTERN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")
MAX_ALTERNATIVES = 1000


@dataclass(slots=True)
class ParsedSearch:
    query: SearchQuery
    warnings: list[Issue] = field(default_factory=list)
    # The parameters that took effect, for the Bundle's self link.
    applied: list[tuple[str, str]] = field(default_factory=list)


def parse_search(
    resource_type: str,
    pairs: Iterable[tuple[str, str]],
    *,
    default_count: int = 20,
    max_count: int = 1000,
    lenient: bool = False,
) -> ParsedSearch:
    known = search_params(resource_type)
    where: list[Condition] = []
    warnings: list[Issue] = []
    applied: list[tuple[str, str]] = []
    count, after, total = default_count, None, True
    for name, value in pairs:
        if name in RESULT_PARAMS:
            if name == "_count":
                count = _parse_count(value, max_count)
            elif name == "_cursor":
                after = decode_cursor(value, "_cursor")
                continue  # paging position is not part of the self link's criteria
            elif name == "_total":
                total = _parse_total(value)
            applied.append((name, value))
            continue
        base, _, modifier = name.partition(":")
        param = known.get(base)
        problem = None
        if param is None:
            problem = f"Unknown search parameter '{base}' for resource type {resource_type}"
        elif modifier:
            problem = f"Modifier ':{modifier}' is not supported on parameter '{base}'"
        if problem is not None:
            if not lenient:
                raise error(400, "not-supported", problem, name)
            warnings.append(Issue("warning", "not-supported", problem + " (ignored)", (name,)))
            continue
        where.append(_condition(base, value, param.type))
        applied.append((name, value))
    query = SearchQuery(resource_type, tuple(where), count=count, after=after, total=total)
    return ParsedSearch(query, warnings, applied)


def criteria_key(query: SearchQuery) -> str:
    """A canonical text of a query's criteria: equal criteria give equal keys."""
    return query.type + "?" + orjson.dumps(sorted(map(repr, query.where))).decode()


def _condition(name: str, value: str, param_type: str) -> Condition:
    alternatives = split_escaped(value, ",")
    if len(alternatives) > MAX_ALTERNATIVES:
        raise error(
            400, "too-costly", f"More than {MAX_ALTERNATIVES} alternatives in '{name}'", name
        )
    if name == "_id":
        for alternative in alternatives:
            if not alternative or len(alternative) > 64 or set(alternative) - ID_PATTERN_CHARS:
                raise error(400, "invalid", f"'{alternative}' is not a valid resource id", name)
        return IdIn(tuple(alternatives))
    if param_type == "uri":  # exact match on the whole URI; stored as a system-less token
        terms = tuple(TokenMatch(name, None, a) for a in alternatives if a) or (_token(name, ""),)
    else:
        terms = tuple(_token(name, alternative) for alternative in alternatives)
    return terms[0] if len(terms) == 1 else AnyOf(terms)


def _token(name: str, value: str) -> TokenMatch:
    parts = split_escaped(value, "|")
    if len(parts) == 1:
        code = parts[0]
        if not code:
            raise error(400, "invalid", f"Empty value for search parameter '{name}'", name)
        return TokenMatch(name, None, code)
    if len(parts) != 2 or (not parts[0] and not parts[1]):
        raise error(400, "invalid", f"'{value}' is not a valid token (system|code)", name)
    system, code = parts
    return TokenMatch(name, system, code or None)


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


def _parse_count(value: str, max_count: int) -> int:
    if not value.isdigit():
        raise error(
            400, "invalid", f"_count must be a non-negative integer, not '{value}'", "_count"
        )
    return min(int(value), max_count)


def _parse_total(value: str) -> bool:
    if value not in ("none", "estimate", "accurate"):
        raise error(400, "invalid", "_total must be none, estimate or accurate", "_total")
    return value != "none"


def encode_cursor(position: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(value: str, name: str) -> object:
    try:
        return orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise error(
            400, "invalid", f"'{name}' is not a paging position this server issued", name
        ) from None

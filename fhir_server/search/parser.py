"""Request parameters → the typed query tree, checked against the registry.

Strict by default, as the spec recommends for servers: an unknown or unsupported parameter
or modifier is a 400.  With `Prefer: handling=lenient` such a parameter is dropped and
reported back as a warning.  A malformed value is always a 400.  Chains
(`subject:Patient.name=x`) and reverse chains (`_has:Observation:subject:code=x`) nest the
same parsing for the other resource type.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server.errors import FhirError, Issue, clipped, error
from fhir_server.integers import MAX_INT, bounded_int, parse_int
from fhir_server.resource_types import is_resource_type
from fhir_server.search import values
from fhir_server.search.query import (
    AnyOf,
    Chain,
    CompositeMatch,
    Condition,
    Has,
    IdIn,
    IndexKind,
    LastUpdated,
    Missing,
    Not,
    SearchQuery,
    SortKey,
    TokenMatch,
    terms,
)
from fhir_server.search.registry import (
    MODIFIERS,
    RESULT_PARAMS,
    SearchParam,
    codesystem,
    search_params,
    valueset,
)

ID_PATTERN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")
MAX_ALTERNATIVES = 1000
MAX_CHAIN_DEPTH = 3
# Leaf terms of a whole search after expansion (`query.terms`): alternatives, repeated
# parameters, a chain without a type fanning out to every target, `_has`.  Both engines
# compile and run this many in well under a second on an empty database; SQLite's own
# limits (expression depth 1000, 32766 variables) sit far above it.
MAX_TERMS = 1000
MAX_SORT_KEYS = 8


@dataclass(frozen=True, slots=True)
class Include:
    """`_include=Source:param[:Target]` or `_revinclude=…`, `:iterate` to follow further."""

    reverse: bool
    source: str
    param: str  # "*": every reference parameter
    target: str | None
    iterate: bool


@dataclass(slots=True)
class ParsedSearch:
    query: SearchQuery
    warnings: list[Issue] = field(default_factory=list)
    # The parameters that took effect, for the Bundle's self link.
    applied: list[tuple[str, str]] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)


class _Unsupported(FhirError):
    """A parameter or modifier this server does not know: lenient handling may drop it."""


def _unsupported(name: str, message: str) -> _Unsupported:
    return _Unsupported(400, [Issue("error", "not-supported", message, (name,))])


class _TooCostly(FhirError):
    """A search refused for its size; `parse_search` names the parameter as the client wrote
    it (inside a chain the parser only knows the chain's tail)."""


def _too_costly(name: str, message: str) -> _TooCostly:
    return _TooCostly(400, [Issue("error", "too-costly", message, (name,))])


def parse_search(
    resource_type: str,
    pairs: Iterable[tuple[str, str]],
    *,
    default_count: int = 20,
    max_count: int = 1000,
    lenient: bool = False,
) -> ParsedSearch:
    where: list[Condition] = []
    warnings: list[Issue] = []
    applied: list[tuple[str, str]] = []
    count, after, total, sort, offset = default_count, None, True, (), 0
    before: str | None = None
    after_key: tuple[Any, ...] | None = None
    includes: list[Include] = []
    cost = 0
    for name, value in pairs:
        if name in RESULT_PARAMS:
            if name == "_count":
                count = _parse_count(value, max_count)
            elif name == "_cursor":
                after, before, after_key, offset = _paging_position(value)
                continue  # paging position is not part of the self link's criteria
            elif name == "_total":
                total = _parse_total(value)
            elif name == "_sort":
                sort = parse_sort(resource_type, value)
            elif name.startswith(("_include", "_revinclude")):
                includes.append(parse_include(name, value))
            applied.append((name, value))
            continue
        try:
            condition = parse_condition(resource_type, name, value)
        except _Unsupported as exc:
            if not lenient:
                raise
            issue = exc.issues[0]
            message = issue.diagnostics + " (ignored)"
            warnings.append(Issue("warning", "not-supported", message, issue.expression))
            continue
        except _TooCostly as exc:
            raise error(400, "too-costly", exc.issues[0].diagnostics, name) from None
        cost += terms(condition)
        if cost > MAX_TERMS:
            message = f"The search expands to more than {MAX_TERMS} terms at '{name}'; narrow it"
            raise error(400, "too-costly", message, name)
        where.append(condition)
        applied.append((name, value))
    query = SearchQuery(
        resource_type,
        tuple(where),
        count=count,
        after=after,
        before=before,
        after_key=after_key,
        total=total,
        sort=sort,
        offset=offset,
    )
    return ParsedSearch(query, warnings, applied, includes)


def parse_condition(resource_type: str, name: str, value: str, depth: int = 0) -> Condition:
    """One `name=value` pair of a search on `resource_type`."""
    if depth > MAX_CHAIN_DEPTH:
        raise _too_costly(name, f"Chains deeper than {MAX_CHAIN_DEPTH} are refused")
    if name.startswith("_has:"):
        return _has(resource_type, name, value, depth)
    head, dot, tail = name.partition(".")
    if dot:
        return _chain(resource_type, name, head, tail, value, depth)
    base, _, modifier = name.partition(":")
    param = search_params(resource_type).get(base)
    if param is None:
        raise _unsupported(name, f"Unknown search parameter '{base}' for {resource_type}")
    if modifier == "missing":
        if value not in ("true", "false"):
            raise error(400, "invalid", f"'{name}' must be true or false", name)
        return Missing(param.name, _kind(param), value == "true")
    alternatives = values.alternatives(name, value, MAX_ALTERNATIVES)
    if param.name == "_id":
        return _ids(name, modifier, alternatives)
    if param.name == "_lastUpdated":
        _no_modifier(name, modifier)
        found = [values.date(name, "_lastUpdated", a) for a in alternatives]
        return _any([LastUpdated(d.prefix, d.low, d.high) for d in found])
    return _typed(param, name, modifier, alternatives)


def _typed(param: SearchParam, name: str, modifier: str, alternatives: list[str]) -> Condition:
    kind = param.type
    allowed = MODIFIERS[kind]
    is_type_modifier = kind == "reference" and is_resource_type(modifier)
    if modifier and modifier not in allowed and not is_type_modifier:
        raise _unsupported(name, f"Modifier ':{modifier}' is not supported on '{param.name}'")
    code = param.name
    if kind == "token":
        if modifier == "text":
            return _any([values.text(name, code, a) for a in alternatives])
        if modifier in ("in", "not-in"):
            codes = _any([_in_valueset(name, code, a) for a in alternatives])
            return Not(codes) if modifier == "not-in" else codes
        if modifier in ("above", "below"):
            return _subsumed(name, code, alternatives, below=modifier == "below")
        terms = _any([values.token(name, code, a) for a in alternatives])
        return Not(terms) if modifier == "not" else terms
    if kind == "string":
        return _any([values.string(name, code, a, modifier) for a in alternatives])
    if kind == "date":
        return _any([values.date(name, code, a) for a in alternatives])
    if kind == "number":
        return _any([values.number(name, code, a) for a in alternatives])
    if kind == "quantity":
        return _any([values.quantity(name, code, a) for a in alternatives])
    if kind == "uri":
        return _any([values.uri(name, code, a, modifier) for a in alternatives])
    if kind == "composite":
        return _any([_composite(param, name, a) for a in alternatives])
    if modifier == "identifier":
        return _any([values.token(name, f"{code}:identifier", a) for a in alternatives])
    type_modifier = modifier if is_type_modifier else None
    if type_modifier is not None and param.targets and type_modifier not in param.targets:
        raise error(400, "invalid", f"'{param.name}' cannot refer to {type_modifier}", name)
    return _any(
        [values.reference(name, code, a, type_modifier, param.targets) for a in alternatives]
    )


def _in_valueset(name: str, code: str, url: str) -> Condition:
    expansion = valueset(url)
    if expansion is None or not expansion.complete:
        raise error(400, "not-supported", f"Value set {url} cannot be expanded here", name)
    if len(expansion.codes) > MAX_ALTERNATIVES:
        raise _too_costly(name, f"Value set {url} has too many codes for {name}")
    terms = [TokenMatch(code, system, c) for system, c in sorted(expansion.codes)]
    return AnyOf(tuple(terms))


def _subsumed(name: str, code: str, alternatives: list[str], below: bool) -> Condition:
    """`:below`/`:above`: each `system|code` with its descendants/ancestors in that system.

    An unknown system is `not-supported` (lenient handling drops it): without its hierarchy
    the answer would be silently incomplete.
    """
    terms: dict[TokenMatch, None] = {}  # ordered and without repeats
    for alternative in alternatives:
        token = values.token(name, code, alternative)
        if not token.system or token.code is None:
            raise error(400, "invalid", f"'{name}' needs system|code, not '{alternative}'", name)
        hierarchy = codesystem(token.system)
        if hierarchy is None:
            raise _unsupported(name, f"Code system {token.system} has no hierarchy known here")
        for found in hierarchy.closure(token.code, below):
            terms[TokenMatch(code, token.system, found)] = None
        if len(terms) > MAX_ALTERNATIVES:
            raise _too_costly(name, f"'{name}' covers too many codes")
    return _any(list(terms))


def _composite(param: SearchParam, name: str, value: str) -> Condition:
    pieces = values.split_escaped(value, "$")
    if len(pieces) != len(param.components):
        expected = "$".join(kind for kind, _ in param.components)
        raise error(400, "invalid", f"'{value}' is not a valid {expected} for '{name}'", name)
    parts = []
    for (kind, _), piece in zip(param.components, pieces, strict=True):
        part = SearchParam("#", kind, "")
        parts.append(_typed(part, name, "", [piece]))
    return CompositeMatch(param.name, tuple(parts))


def _any(terms: list[Condition]) -> Condition:
    return terms[0] if len(terms) == 1 else AnyOf(tuple(terms))


def _no_modifier(name: str, modifier: str) -> None:
    if modifier:
        raise _unsupported(name, f"Modifier ':{modifier}' is not supported on '{name}'")


def _ids(name: str, modifier: str, alternatives: list[str]) -> Condition:
    _no_modifier(name, modifier)
    for alternative in alternatives:
        if not alternative or len(alternative) > 64 or set(alternative) - ID_PATTERN_CHARS:
            raise error(400, "invalid", f"'{alternative}' is not a valid resource id", name)
    return IdIn(tuple(alternatives))


def _kind(param: SearchParam) -> IndexKind:
    if param.name == "_id":
        raise error(400, "invalid", "_id:missing is always false", param.name)
    return param.type  # type: ignore[return-value]


def _reference_param(resource_type: str, code: str, name: str) -> SearchParam:
    param = search_params(resource_type).get(code)
    if param is None:
        raise _unsupported(name, f"Unknown search parameter '{code}' for {resource_type}")
    if param.type != "reference":
        raise error(400, "invalid", f"'{code}' is not a reference parameter", name)
    return param


def _chain(
    resource_type: str, name: str, head: str, tail: str, value: str, depth: int
) -> Condition:
    code, _, target = head.partition(":")
    param = _reference_param(resource_type, code, name)
    if not target:
        # Every target type that knows the chained parameter, OR-ed (as HAPI does).
        first = tail.split(".", 1)[0].split(":", 1)[0]
        candidates = [
            t
            for t in param.targets
            if is_resource_type(t) and (first == "_has" or first in search_params(t))
        ]
        if not candidates:
            raise error(400, "invalid", f"No target of '{code}' has a parameter '{first}'", name)
        chains: list[Condition] = []
        cost = 0
        for t in candidates:  # stop as soon as the fan-out is too large, not after building it
            chains.append(Chain(param.name, t, (parse_condition(t, tail, value, depth + 1),)))
            cost += terms(chains[-1])
            if cost > MAX_TERMS:
                message = f"'{name}' expands to more than {MAX_TERMS} terms over the "
                raise _too_costly(name, message + f"targets of '{code}'; name one: {code}:Type")
        return _any(chains)
    if not is_resource_type(target) or (param.targets and target not in param.targets):
        raise error(400, "invalid", f"'{code}' cannot refer to {target}", name)
    inner = parse_condition(target, tail, value, depth + 1)
    return Chain(param.name, target, (inner,))


def _has(resource_type: str, name: str, value: str, depth: int) -> Condition:
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise error(400, "invalid", "_has needs _has:Type:reference:parameter", name)
    _, source, code, inner_name = parts
    if not is_resource_type(source):
        raise error(400, "invalid", f"'{source}' is not a resource type", name)
    param = _reference_param(source, code, name)
    if param.targets and resource_type not in param.targets:
        raise error(400, "invalid", f"{source}.{code} cannot refer to {resource_type}", name)
    inner = parse_condition(source, inner_name, value, depth + 1)
    return Has(source, param.name, (inner,))


def parse_include(name: str, value: str) -> Include:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not is_resource_type(parts[0]):
        raise error(400, "invalid", f"{name} needs Type:parameter[:TargetType]", name)
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if target is not None and not is_resource_type(target):
        raise error(400, "invalid", f"'{target}' is not a resource type", name)
    if code != "*":
        _reference_param(source, code, name)
    reverse = name.startswith("_revinclude")
    return Include(reverse, source, code, target, name.endswith(":iterate"))


def parse_sort(resource_type: str, value: str) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    items = value.split(",")
    if len(items) > MAX_SORT_KEYS:
        raise error(400, "too-costly", f"_sort takes at most {MAX_SORT_KEYS} keys", "_sort")
    for item in items:
        descending = item.startswith("-")
        code = item.removeprefix("-")
        if code == "_id":
            keys.append(SortKey("_id", "id", descending))
            continue
        if code == "_lastUpdated":
            keys.append(SortKey("_lastUpdated", "lastUpdated", descending))
            continue
        param = search_params(resource_type).get(code)
        if param is None:
            raise _unsupported("_sort", f"Cannot sort {resource_type} by unknown '{code}'")
        if param.type in ("composite", "special"):
            raise _unsupported("_sort", f"Cannot sort by the {param.type} parameter '{code}'")
        keys.append(SortKey(param.name, param.type, descending))  # type: ignore[arg-type]
    return tuple(keys)


def criteria_key(query: SearchQuery) -> str:
    """A canonical text of a query's criteria: equal criteria give equal keys."""
    return query.type + "?" + orjson.dumps(sorted(map(repr, query.where))).decode()


def _parse_count(value: str, max_count: int) -> int:
    count = parse_int(value)
    if count is None:
        message = f"_count must be a non-negative integer, not '{clipped(value)}'"
        raise error(400, "invalid", message, "_count")
    return min(count, max_count)


def _parse_total(value: str) -> bool:
    if value not in ("none", "estimate", "accurate"):
        raise error(400, "invalid", "_total must be none, estimate or accurate", "_total")
    return value != "none"


def _paging_position(value: str) -> tuple[str | None, str | None, tuple[Any, ...] | None, int]:
    """A `_cursor` we issued: (after id, before id, keyset values, offset).

    It comes back from the client, so it is checked as input: ids are ids, keyset values
    scalars the engines can bind, an offset a bounded integer.
    """
    position = decode_cursor(value, "_cursor")
    if isinstance(position, str) and _is_id(position.partition("/")[2] or position):
        return position, None, None, 0  # `id`, or `Type/id` in a system search
    if isinstance(position, dict):
        offset = bounded_int(position.get("offset", 0))
        key = position.get("key")
        if offset is not None and key is None and set(position) <= {"offset"}:
            return None, None, None, offset
        if offset is not None and isinstance(key, list) and all(map(_scalar, key)):
            return None, None, tuple(key), offset  # keyset position; offset only counts
        before = position.get("before")
        if isinstance(before, str) and _is_id(before) and len(position) == 1:
            return None, before, None, 0
    raise error(400, "invalid", "'_cursor' is not a paging position this server issued", "_cursor")


def _is_id(value: str) -> bool:
    return 0 < len(value) <= 64 and not set(value) - ID_PATTERN_CHARS


def _scalar(value: object) -> bool:
    """A sort value as an engine binds it: text, a bounded number, or null."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return True
    return isinstance(value, int) and abs(value) <= MAX_INT


def encode_cursor(position: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(value: str, name: str) -> object:
    try:
        return orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise error(
            400, "invalid", f"'{name}' is not a paging position this server issued", name
        ) from None

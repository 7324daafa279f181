"""Search index entries of a resource, computed on write from the SearchParameters.

Why: every search matches precomputed entries (see `fhir_server.storage.port`), so each
write must evaluate every SearchParameter of its type: ~30 FHIRPath expressions for a
Patient.  fhirpathpy needs ~0.1 ms for each, so the expressions are compiled once, per
(parameter, resource type), into closures that walk the FHIR JSON directly (`paths.py`).
The closures know the FHIR type of every value they reach (from the element definitions),
which decides the entries made here (a HumanName gives its parts, a code its bound system...).

Supported natively (all but a handful of the R4 expressions):
  unions `|`, parentheses, paths from the type name (`Patient.name.given`, `Resource.id`) or
  relative (`name | alias`), choice types (`value` is any `value[x]`; `as X`, `.as(X)`,
  `.ofType(X)` keep type X and its subtypes), `[n]`, `.extension('url')`,
  `.where(resolve() is Type)`, `.where(a.b = 'literal')`, `.where(hasExtension('url'))`, and
  the boolean `X.exists() and X != false`.
Anything else is evaluated by fhirpathpy (`fallbacks()` lists them) and the value types are
guessed from the JSON shape.

Composite parameters are built from these entries in `composite.py`.
Not indexed (yet): `special` parameters, parameters without an expression
(`_text`, `_content`, `_query`, the extension-defined ones), Range and SampledData values
of quantity parameters, and Timing.repeat.bounds of date parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from fhir_server.search.normalise import date_range, fold, number_range, period_range
from fhir_server.search.paths import (
    _ABSOLUTE_TAIL,
    _LOCAL,
    _PRIMITIVES,
    _RESOURCE_TYPES,
    Ctx,
    Items,
    Run,
    Unsupported,
    _compile,
    _empty,
    _parse,
    _type_ctx,
    fhirpath_values,
    guess_ctx,
    is_type,
)
from fhir_server.storage.port import (
    DateIndex,
    IndexEntry,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    StringIndex,
    TextIndex,
    TokenIndex,
    UriIndex,
)
from fhir_server.validation.definitions import (
    bindings,
    core_valueset,
    search_parameters,
)

log = logging.getLogger(__name__)

SKIPPED_TYPES = frozenset({"composite", "special"})


# -- values to entries -----------------------------------------------------------------
#
# Entries are immutable and repeat a lot (a name is indexed by `name`, `given`, `phonetic`;
# codes and references recur across resources), while building a frozen dataclass and
# normalising its text cost microseconds.  So each entry is memoised by its raw input and
# interned: equal entries are the same object, which also makes deduplication by identity
# exact.  Both tables are cleared when they grow past _MEMO_LIMIT.

Emit = Callable[[str, Any, Ctx, list[IndexEntry]], None]
_MEMO: dict[tuple[Any, ...], IndexEntry | None] = {}
_INTERN: dict[IndexEntry, IndexEntry] = {}
_MEMO_LIMIT = 200_000


def _remember(key: tuple[Any, ...], entry: IndexEntry | None) -> IndexEntry | None:
    if entry is not None:
        entry = _INTERN.setdefault(entry, entry)
    _MEMO[key] = entry
    return entry


def _extension_value(value: Any) -> tuple[Any, Ctx] | None:
    """An Extension's value[x] with its type (`valueDateTime` -> dateTime)."""
    if not isinstance(value, dict):
        return None
    for key, found in value.items():
        if key.startswith("value") and len(key) > 5:
            name = key[5:]
            lower = name[0].lower() + name[1:]
            type_ = lower if lower in _PRIMITIVES else name
            return found, _type_ctx(type_, "Extension.value[x]")
    return None


def _string_entry(param: str, text: str) -> IndexEntry:
    key = ("s", param, text)
    entry = _MEMO.get(key)
    if entry is None:
        entry = _remember(key, StringIndex(param, fold(text), text))
    assert entry is not None
    return entry


def _text_entry(param: str, text: str) -> IndexEntry:
    key = ("x", param, text)
    entry = _MEMO.get(key)
    if entry is None:
        entry = _remember(key, TextIndex(param, fold(text)))
    assert entry is not None
    return entry


def _token_entry(param: str, system: Any, code: Any) -> IndexEntry | None:
    key = ("t", param, system, code)
    try:
        return _MEMO[key]
    except KeyError:
        system = system if isinstance(system, str) else None
        code = code if isinstance(code, str) else None
        entry = TokenIndex(param, system, code) if system or code else None
        return _remember(key, entry)


def _string(param: str, value: Any, ctx: Ctx, out: list[IndexEntry]) -> None:
    if isinstance(value, str):
        out.append(_string_entry(param, value))
        return
    parts = _STRING_PARTS.get(ctx.type)
    if parts is None or not isinstance(value, dict):
        return
    for key in parts:
        part = value.get(key)
        if part is None:
            continue
        if isinstance(part, str):
            out.append(_string_entry(param, part))
        elif isinstance(part, list):
            out.extend(_string_entry(param, p) for p in part if isinstance(p, str))


_STRING_PARTS = {
    "HumanName": ("family", "given", "prefix", "suffix", "text"),
    "Address": ("line", "city", "district", "state", "postalCode", "country", "text"),
}


@cache
def code_system(path: str) -> str | None:
    """The implicit system of a `code` element: that of its required binding, if only one."""
    binding = bindings().get(path)
    if binding is None or binding[0] != "required":
        return None
    valueset = core_valueset(binding[1].split("|", 1)[0])
    if valueset is None:
        return None
    systems = {system for system, _ in valueset.codes}
    return systems.pop() if len(systems) == 1 else None


def _coding(param: str, coding: Any, out: list[IndexEntry]) -> None:
    if not isinstance(coding, dict):
        return
    entry = _token_entry(param, coding.get("system"), coding.get("code"))
    if entry is not None:
        out.append(entry)
    display = coding.get("display")
    if isinstance(display, str):
        out.append(_text_entry(param, display))


def _token(param: str, value: Any, ctx: Ctx, out: list[IndexEntry]) -> None:
    kind = ctx.type
    entry: IndexEntry | None
    if isinstance(value, str):
        entry = _token_entry(param, code_system(ctx.path) if kind == "code" else None, value)
    elif isinstance(value, bool):
        entry = _token_entry(param, None, "true" if value else "false")
    elif not isinstance(value, dict):
        return
    elif kind == "CodeableConcept":
        for coding in value.get("coding") or ():
            _coding(param, coding, out)
        text = value.get("text")
        if isinstance(text, str):
            out.append(_text_entry(param, text))
        return
    elif kind == "Coding":
        _coding(param, value, out)
        return
    elif kind == "Identifier":
        entry = _token_entry(param, value.get("system"), value.get("value"))
        type_ = value.get("type")
        text = type_.get("text") if isinstance(type_, dict) else None
        if isinstance(text, str):
            out.append(_text_entry(param, text))
    elif kind == "ContactPoint":
        code = value.get("value")
        entry = _token_entry(param, None, code) if isinstance(code, str) else None
    else:
        return
    if entry is not None:
        out.append(entry)


def _date_entry(param: str, text: Any) -> IndexEntry | None:
    key = ("d", param, text)
    try:
        return _MEMO[key]
    except KeyError:
        span = date_range(text) if isinstance(text, str) else None
        return _remember(key, None if span is None else DateIndex(param, span[0], span[1]))


def _date(param: str, value: Any, ctx: Ctx, out: list[IndexEntry]) -> None:
    entry: IndexEntry | None = None
    if isinstance(value, str):
        entry = _date_entry(param, value)
    elif not isinstance(value, dict):
        return
    elif ctx.type == "Period":
        start, end = value.get("start"), value.get("end")
        key = ("p", param, start, end)
        try:
            entry = _MEMO[key]
        except KeyError:
            span = period_range(value)
            entry = _remember(key, None if span is None else DateIndex(param, span[0], span[1]))
    elif ctx.type == "Timing":
        for event in value.get("event") or ():
            entry = _date_entry(param, event)
            if entry is not None:
                out.append(entry)
        return
    if entry is not None:
        out.append(entry)


def _number_text(value: Any) -> str | None:
    """A JSON number's text as written (the memo key: 1.50 and 1.5 differ in precision)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    text = getattr(value, "text", None)
    if text is None:
        text = repr(value) if isinstance(value, float) else str(value)
    return text


def _number(param: str, value: Any, ctx: Ctx, out: list[IndexEntry]) -> None:
    text = _number_text(value)
    if text is None:
        return
    key = ("n", param, text)
    entry = _MEMO.get(key)
    if entry is None:
        low, high = number_range(value)
        entry = _remember(key, NumberIndex(param, low, high))
    assert entry is not None
    out.append(entry)


_QUANTITIES = frozenset(
    {"Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity"}
)
ISO_4217 = "urn:iso:std:iso:4217"


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _quantity(param: str, value: Any, ctx: Ctx, out: list[IndexEntry]) -> None:
    if not isinstance(value, dict):
        return
    number = value.get("value")
    text = _number_text(number)
    if text is None:
        return
    kind = ctx.type
    if kind in _QUANTITIES:
        system, code, unit = value.get("system"), value.get("code"), value.get("unit")
    elif kind == "Money":
        system, code = ISO_4217, value.get("currency")
        unit = code
    else:
        return  # Range, SampledData: not indexed
    key = ("q", param, text, system, code, unit)
    entry = _MEMO.get(key)
    if entry is None:
        low, high = number_range(number)
        entry = _remember(
            key,
            QuantityIndex(
                param, low, high, _str_or_none(system), _str_or_none(code), _str_or_none(unit)
            ),
        )
    assert entry is not None
    out.append(entry)


def parse_reference(param: str, literal: str) -> ReferenceIndex | None:
    """A Reference.reference as an entry: local `Type/id[/_history/v]`, or by url.

    Contained (`#id`) references are not searchable and give None.
    """
    if not literal or literal.startswith("#"):
        return None
    m = _LOCAL.fullmatch(literal)
    if m is not None and m.group(1) in _RESOURCE_TYPES:
        return ReferenceIndex(param, m.group(1), m.group(2), m.group(3), None)
    if literal.startswith(("http://", "https://")):
        m = _ABSOLUTE_TAIL.search(literal)
        if m is not None and m.group(1) in _RESOURCE_TYPES:
            return ReferenceIndex(param, m.group(1), m.group(2), None, literal)
        return ReferenceIndex(param, None, None, None, literal)
    return ReferenceIndex(param, None, None, None, literal)  # urn:uuid:, urn:oid:, other


def _canonical(param: str, value: str) -> ReferenceIndex | None:
    url, _, version = value.partition("|")
    if not url or url.startswith("#"):
        return None
    return ReferenceIndex(param, None, None, version or None, url)


def _reference(param: str, value: Any, ctx: Ctx, out: list[IndexEntry]) -> None:
    entry: IndexEntry | None
    if isinstance(value, str):  # canonical / uri
        key = ("c", param, value)
        try:
            entry = _MEMO[key]
        except KeyError:
            entry = _remember(key, _canonical(param, value))
        if entry is not None:
            out.append(entry)
        return
    if not isinstance(value, dict):
        return
    if ctx.type == "Resource":
        kind, id_ = value.get("resourceType"), value.get("id")
        if isinstance(kind, str) and isinstance(id_, str):
            out.append(ReferenceIndex(param, kind, id_, None, None))
        return
    literal = value.get("reference")
    if isinstance(literal, str):
        key = ("r", param, literal)
        try:
            entry = _MEMO[key]
        except KeyError:
            entry = _remember(key, parse_reference(param, literal))
        if entry is not None:
            out.append(entry)
    identifier = value.get("identifier")
    if isinstance(identifier, dict):
        code = identifier.get("value")
        if isinstance(code, str):
            entry = _token_entry(f"{param}:identifier", identifier.get("system"), code)
            if entry is not None:
                out.append(entry)


def _uri(param: str, value: Any, ctx: Ctx, out: list[IndexEntry]) -> None:
    if isinstance(value, str):
        key = ("u", param, value)
        entry = _MEMO.get(key)
        if entry is None:
            entry = _remember(key, UriIndex(param, value))
        assert entry is not None
        out.append(entry)


_EMIT: dict[str, Emit] = {
    "string": _string,
    "token": _token,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "reference": _reference,
    "uri": _uri,
}


# -- compiled parameters ---------------------------------------------------------------


class Compiled:
    """One expression compiled for one resource type: call it for (value, Ctx) pairs."""

    __slots__ = ("_run", "_search_type", "expression", "keys", "native", "resource_type")

    def __init__(self, expression: str, resource_type: str, search_type: str = "") -> None:
        self.expression, self.resource_type = expression, resource_type
        self._search_type = search_type
        self.keys: frozenset[str] | None = None
        try:
            node = _compile(_parse(expression), resource_type)
            self.native = True
            self._run: Run = node.run if node is not None else _empty
            self.keys = node.keys if node is not None else frozenset()
        except Unsupported as exc:
            log.debug("search expression %r falls back to fhirpathpy: %s", expression, exc)
            self.native = False
            self._run = self._fallback

    def __call__(self, resource: dict[str, Any]) -> Items:
        return self._run(resource)

    @property
    def run(self) -> Run:
        """The closure itself (skips this object's call overhead on the hot path)."""
        return self._run

    def _fallback(self, resource: dict[str, Any]) -> Items:
        try:
            found = fhirpath_values(self.expression, self.resource_type, resource)
        except Exception as exc:  # a broken expression must not break writes
            log.warning("search expression %r failed: %s", self.expression, exc)
            return []
        return [(_plain(v), guess_ctx(_plain(v), self._search_type)) for v in found]


def _plain(value: Any) -> Any:
    """fhirpathpy's decimal.Decimal back to float, inside lists and dicts too."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if type(value).__name__ == "Decimal" and not isinstance(value, float):
        return float(value)
    return value


@cache
def compile_expression(expression: str, resource_type: str, search_type: str = "") -> Compiled:
    """The expression compiled for `resource_type` (cached; fhirpathpy if outside the subset)."""
    return Compiled(expression, resource_type, search_type)


def applies(param: dict[str, Any], resource_type: str) -> bool:
    """Whether a SearchParameter applies to a resource type (its base or a supertype)."""
    return any(is_type(resource_type, base) for base in param.get("base") or ())


_PlanStep = tuple[str, frozenset[str] | None, Run, Emit]
_custom_plans: dict[tuple[str, str], _PlanStep | None] = {}


def _plan_for(param: dict[str, Any], resource_type: str) -> _PlanStep | None:
    expression, kind = param.get("expression"), param.get("type")
    emit = _EMIT.get(kind) if isinstance(kind, str) else None
    if not isinstance(expression, str) or emit is None or not applies(param, resource_type):
        return None
    assert isinstance(kind, str)
    compiled = compile_expression(expression, resource_type, kind)
    return param["code"], compiled.keys, compiled.run, emit


@cache
def _r4_plan(resource_type: str) -> tuple[_PlanStep, ...]:
    plans = (_plan_for(p, resource_type) for p in search_parameters())
    return tuple(p for p in plans if p is not None)


def index_entries(
    resource_type: str, resource: dict[str, Any], params: Iterable[dict[str, Any]] | None = None
) -> list[IndexEntry]:
    """All search index entries of `resource`, deduplicated, in a stable order.

    `params=None` means the R4 SearchParameters; otherwise the given SearchParameter dicts
    (same shape as `search_parameters()`), e.g. R4 plus custom ones from profiles/.
    """
    if len(_MEMO) > _MEMO_LIMIT:
        _MEMO.clear()
        _INTERN.clear()
    plan: Iterable[_PlanStep | None]
    if params is None:
        plan = _r4_plan(resource_type)
    else:
        plan = [_custom_plan(p, resource_type) for p in params]
    present = resource.keys()
    out: list[IndexEntry] = []
    for step in plan:
        if step is None:
            continue
        code, keys, run, emit = step
        if keys is not None and present.isdisjoint(keys):
            continue  # none of the elements it reads is there: nothing to evaluate
        for value, ctx in run(resource):
            if ctx.type == "Extension":
                inner = _extension_value(value)
                if inner is None:
                    continue
                value, ctx = inner
            emit(code, value, ctx, out)
    return list({id(e): e for e in out}.values())  # interned: equal entries are identical


def _custom_plan(param: dict[str, Any], resource_type: str) -> _PlanStep | None:
    key = (f"{param.get('url') or param.get('code')}|{param.get('expression')}", resource_type)
    try:
        return _custom_plans[key]
    except KeyError:
        plan = _custom_plans[key] = _plan_for(param, resource_type)
        return plan


def fallbacks() -> list[tuple[str, str]]:
    """(url, expression) of the R4 SearchParameters evaluated by fhirpathpy, not natively."""
    out = []
    for param in search_parameters():
        expression = param.get("expression")
        if param.get("type") in SKIPPED_TYPES or not isinstance(expression, str):
            continue
        try:
            _parse(expression)
        except Unsupported:
            out.append((param["url"], expression))
    return out

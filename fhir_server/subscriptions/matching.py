"""Which topics a write fires, and whether a subscription's filters let an event through.

Both run in memory, on the versions at hand: a topic's `queryCriteria` and a subscription's
filters are searches, parsed once and matched against the resource's index entries with the
engines' own semantics (`search.overlay.matches`), so "matches the criteria" means what a
search would answer; `fhirPathCriteria` is evaluated with the states before and after the
write as `%previous` and `%current`, by the validator's direct evaluator
(`validation.fastpath`: microseconds, and `now()` is the server's clock) and by fhirpathpy (R4
model) for what that evaluator does not take.

A trigger fires when its interaction is supported, its query criteria pass and its FHIRPath
criteria pass (both must hold when a topic gives both, as R5 asks of each criterion).
Query criteria: each side given is a test (a create's previous side is `resultForCreate`, a
delete's current side `resultForDelete`); `requireBoth` ANDs the tests, else one suffices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from fhir_server.search.indexer import index_entries
from fhir_server.search.overlay import matches
from fhir_server.search.parser import parse_search
from fhir_server.search.query import AnyOf, Chain, CompositeMatch, Condition, Has, Not
from fhir_server.storage.port import IndexEntry, Interaction, ResourceVersion, TopicEvent
from fhir_server.subscriptions.topics import QueryCriteria, Topics, Trigger
from fhir_server.validation.fastpath import Test, compile_simple
from fhir_server.validation.invariants import type_names

if TYPE_CHECKING:
    from fhir_server.subscriptions.model import SubscriptionSpec

_R4 = models["r4"]


def events_for(
    topics: Topics,
    type: str,
    previous: dict[str, Any] | None,
    current: dict[str, Any] | None,
    version: ResourceVersion,
    *,
    current_index: Sequence[IndexEntry] | None = None,
    now: datetime | None = None,
) -> list[TopicEvent]:
    """The topic events a write of `type` makes: `previous` None is a create, `current` None
    a delete; `version` is the version the write stored. `current_index` saves computing the
    index entries the write computed already; `now` is FHIRPath's `now()` (default: UTC
    now)."""
    triggers = topics.triggers(type)
    if not triggers:
        return []
    interaction: Interaction = (
        "delete" if current is None else "create" if previous is None else "update"
    )
    states = _States(type, previous, current, version, current_index, now)
    fired: dict[str, TopicEvent] = {}
    for topic, trigger in triggers:
        if topic.url in fired or interaction not in trigger.interactions:
            continue
        if fires(trigger, interaction, states):
            fired[topic.url] = TopicEvent(
                topic.url, type, version.id, version.version, interaction, version.last_updated
            )
    return list(fired.values())


class _States:
    """The two states of a write, with their index entries computed at most once."""

    def __init__(
        self,
        type: str,
        previous: dict[str, Any] | None,
        current: dict[str, Any] | None,
        version: ResourceVersion,
        current_index: Sequence[IndexEntry] | None,
        now: datetime | None = None,
    ) -> None:
        self.type = type
        self.previous = previous
        self.current = current
        self.version = version
        self.now = now
        self._index: dict[str, Sequence[IndexEntry]] = {}
        if current_index is not None:
            self._index["current"] = current_index

    def matches(self, side: str, where: tuple[Condition, ...]) -> bool:
        resource = self.previous if side == "previous" else self.current
        assert resource is not None
        if side not in self._index:
            self._index[side] = index_entries(self.type, resource)
        if side == "current":
            rid, instant = self.version.id, self.version.last_updated
        else:
            rid, instant = str(resource.get("id", "")), _last_updated(resource)
        return matches(where, rid, self._index[side], instant)


def fires(trigger: Trigger, interaction: Interaction, states: _States) -> bool:
    """Whether one trigger fires on this write (its interaction already checked)."""
    if trigger.query is not None and not _query_passes(trigger, interaction, states):
        return False
    if trigger.fhirpath is not None:
        return fhirpath_passes(trigger.fhirpath, states)
    return True


def fhirpath_passes(expression: str, states: _States) -> bool:
    """A trigger's fhirPathCriteria is true (empty and false do not fire)."""
    previous, current = states.previous or {}, states.current or {}
    focus = states.current if states.current is not None else states.previous
    fast = _fast_fhirpath(expression)
    if fast is not None:
        root = {**(focus or {}), "%previous": previous, "%current": current}
        root["%now"] = states.now or datetime.now(UTC)
        try:
            return fast(root) is True
        except ValueError:  # outside the direct evaluator's semantics: fhirpathpy decides
            pass
    return _fhirpath(expression)(focus, {"previous": previous, "current": current}) == [True]


_VARIABLES = frozenset({"previous", "current", "now"})


@cache
def _fast_fhirpath(expression: str) -> Test | None:
    return compile_simple(expression, type_names(), None, _VARIABLES)


def _query_passes(trigger: Trigger, interaction: Interaction, states: _States) -> bool:
    query = trigger.query
    assert query is not None
    criteria = compiled_query(trigger.resource, query)
    results: list[bool] = []
    if criteria.previous is not None:
        if interaction == "create":
            results.append(query.result_for_create == "test-passes")
        else:
            results.append(states.matches("previous", criteria.previous))
    if criteria.current is not None:
        if interaction == "delete":
            results.append(query.result_for_delete == "test-passes")
        else:
            results.append(states.matches("current", criteria.current))
    if not results:
        return True
    return all(results) if query.require_both else any(results)


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    previous: tuple[Condition, ...] | None
    current: tuple[Condition, ...] | None


@cache
def compiled_query(resource_type: str, query: QueryCriteria) -> CompiledQuery:
    """A topic's query criteria as condition trees, parsed once (with the search registry as
    the app set it up: custom parameters, local value sets)."""
    return CompiledQuery(
        _conditions(resource_type, query.previous), _conditions(resource_type, query.current)
    )


def _conditions(resource_type: str, query: str | None) -> tuple[Condition, ...] | None:
    if query is None:
        return None
    pairs = parse_qsl(query.removeprefix(f"{resource_type}?"), keep_blank_values=True)
    where = parse_search(resource_type, pairs).query.where
    for condition in where:
        if not in_memory(condition):
            raise ValueError(f"{resource_type}?{query}: chains and _has need the database")
    return where


def in_memory(condition: Condition) -> bool:
    """Whether `overlay.matches` can decide the condition on one resource's index alone."""
    match condition:
        case Chain() | Has():
            return False
        case Not(term=term):
            return in_memory(term)
        case AnyOf(terms=terms) | CompositeMatch(parts=terms):
            return all(in_memory(t) for t in terms)
    return True


@cache
def _fhirpath(expression: str) -> Callable[..., list[Any]]:
    return fhirpath_compile(expression, _R4)


def _last_updated(resource: dict[str, Any]) -> str:
    meta = resource.get("meta")
    value = meta.get("lastUpdated") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else ""


# -- a subscription's filters -------------------------------------------------------------


def filters_match(
    spec: SubscriptionSpec,
    focus_type: str,
    focus: dict[str, Any],
    *,
    index: Sequence[IndexEntry] | None = None,
) -> bool:
    """Whether the focus version passes every filter of the subscription that applies to its
    type (R5 filterBy: the conditions applicable to that resource, ANDed); a filter on another
    of the topic's types does not hold it back. For a delete, pass the last version before it.
    `index` saves recomputing the focus's index entries for each subscription."""
    where = [
        condition
        for spec_filter in spec.filters
        if focus_type in spec_filter.types
        for condition in filter_conditions(focus_type, spec_filter.name, spec_filter.value)
    ]
    if not where:
        return True
    if index is None:
        index = index_entries(focus_type, focus)
    return matches(where, str(focus.get("id", "")), index, _last_updated(focus))


@cache
def filter_conditions(resource_type: str, name: str, value: str) -> tuple[Condition, ...]:
    """One filter (`name=value`) as conditions on `resource_type`; FhirError if malformed."""
    return parse_search(resource_type, [(name, value)]).query.where

"""The SubscriptionTopics this server supports, read from the conformance resources.

R4 has no SubscriptionTopic: the Backport IG writes one as a `Basic` with code
`fhir-types#SubscriptionTopic` and the R5 elements as cross-version extensions
(`extension-SubscriptionTopic.<element>`, complex ones with sub-extensions named after the R5
child elements). They are parsed once into plain dataclasses, indexed by canonical url (what a
Subscription's `criteria` names) and by triggering resource type (what a write asks), so a
write of a type no topic watches costs one dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from fhir_server.resource_types import is_resource_type
from fhir_server.storage.port import Interaction
from fhir_server.validation.conformance import TOPIC_URL_EXTENSION, ConformanceError

if TYPE_CHECKING:
    from fhir_server.validation.conformance import Conformance

X = TOPIC_URL_EXTENSION.removesuffix("url")
"""`http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.`"""
TOPIC_CODE = ("http://hl7.org/fhir/fhir-types", "SubscriptionTopic")
CORE_SD = "http://hl7.org/fhir/StructureDefinition/"
INTERACTIONS: frozenset[Interaction] = frozenset(get_args(Interaction))

Result = Literal["test-passes", "test-fails"]


@dataclass(frozen=True, slots=True)
class QueryCriteria:
    """`resourceTrigger.queryCriteria`: search criteria on the previous and current state.

    `previous`/`current` are query strings (`status=active&code=x`); None when absent. A create
    has no previous state and a delete no current one: `result_for_create`/`_delete` stand in
    for that test.
    """

    previous: str | None
    current: str | None
    result_for_create: Result | None
    result_for_delete: Result | None
    require_both: bool


@dataclass(frozen=True, slots=True)
class Trigger:
    """`resourceTrigger`: a change to `resource` that the topic is about."""

    resource: str  # resource type
    interactions: frozenset[Interaction]
    query: QueryCriteria | None
    fhirpath: str | None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class FilterBy:
    """`canFilterBy`: a filter a Subscription may set, with the modifiers and comparators
    (value prefixes) allowed on it; none listed means none allowed."""

    resource: str
    parameter: str
    modifiers: frozenset[str]
    comparators: frozenset[str]
    definition: str | None = None


@dataclass(frozen=True, slots=True)
class Shape:
    """`notificationShape`: what a `full-resource`/`id-only` notification brings along with a
    focus of type `resource` (`Type:param` includes and revIncludes)."""

    resource: str
    include: tuple[str, ...]
    rev_include: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Topic:
    url: str
    id: str
    version: str | None
    name: str | None
    title: str | None
    status: str | None
    triggers: tuple[Trigger, ...]
    can_filter_by: tuple[FilterBy, ...]
    shapes: tuple[Shape, ...]

    @property
    def resource_types(self) -> frozenset[str]:
        return frozenset(t.resource for t in self.triggers)

    def filters(self, parameter: str, resource: str | None = None) -> list[FilterBy]:
        """The canFilterBy entries for `parameter` (on `resource`, or on any type)."""
        return [
            f
            for f in self.can_filter_by
            if f.parameter == parameter and resource in (None, f.resource)
        ]

    def shape(self, resource: str) -> Shape | None:
        return next((s for s in self.shapes if s.resource == resource), None)


class Topics:
    """The topics by canonical url and by the resource types that trigger them."""

    def __init__(self, topics: Iterable[Topic]) -> None:
        self.by_url: dict[str, Topic] = {}
        self._by_type: dict[str, list[tuple[Topic, Trigger]]] = {}
        for topic in topics:
            if topic.url in self.by_url:
                raise ConformanceError(f"SubscriptionTopic {topic.url} is defined twice")
            self.by_url[topic.url] = topic
            for trigger in topic.triggers:
                self._by_type.setdefault(trigger.resource, []).append((topic, trigger))

    def get(self, url: str) -> Topic | None:
        return self.by_url.get(url)

    def triggered_by(self, resource_type: str) -> list[Topic]:
        """The topics some write of `resource_type` can fire (each once)."""
        found = self._by_type.get(resource_type, ())
        return list({topic.url: topic for topic, _ in found}.values())

    def triggers(self, resource_type: str) -> list[tuple[Topic, Trigger]]:
        """Every (topic, trigger) on `resource_type`: the one lookup a write costs."""
        return self._by_type.get(resource_type, [])

    def __iter__(self) -> Iterator[Topic]:
        return iter(self.by_url.values())

    def __len__(self) -> int:
        return len(self.by_url)


def load_topics(conformance: Conformance) -> Topics:
    """Every `Basic` SubscriptionTopic of the conformance resources."""
    return Topics(parse_topic(r) for r in conformance.of_kind("Basic") if is_topic(r))


def is_topic(resource: dict[str, Any]) -> bool:
    codings = (resource.get("code") or {}).get("coding") or []
    return any((c.get("system"), c.get("code")) == TOPIC_CODE for c in codings)


def parse_topic(basic: dict[str, Any]) -> Topic:
    """One `Basic` as a Topic; a ConformanceError names what does not make sense."""
    where = f"Basic/{basic.get('id')}"
    elements = _elements(basic.get("extension"))
    status = _elements(basic.get("modifierExtension")).get("status", [])
    url = _single(elements, "url", "valueUri", where)
    if not isinstance(url, str):
        raise ConformanceError(f"{where}: a SubscriptionTopic needs a url")
    return Topic(
        url=url,
        id=str(basic.get("id")),
        version=_single(elements, "version", "valueString", where),
        name=_single(elements, "name", "valueString", where),
        title=_single(elements, "title", "valueString", where),
        status=status[0].get("valueCode") if status else None,
        triggers=tuple(_trigger(e, where) for e in elements.get("resourceTrigger", [])),
        can_filter_by=tuple(_filter_by(e, where) for e in elements.get("canFilterBy", [])),
        shapes=tuple(_shape(e, where) for e in elements.get("notificationShape", [])),
    )


def _elements(extensions: Any) -> dict[str, list[dict[str, Any]]]:
    """Cross-version extensions by R5 element name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for extension in extensions or ():
        url = extension.get("url", "") if isinstance(extension, dict) else ""
        if url.startswith(X):
            out.setdefault(url.removeprefix(X), []).append(extension)
    return out


def _single(elements: dict[str, list[dict[str, Any]]], name: str, key: str, where: str) -> Any:
    found = elements.get(name, [])
    if len(found) > 1:
        raise ConformanceError(f"{where}: SubscriptionTopic.{name} is given more than once")
    return found[0].get(key) if found else None


def _parts(extension: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The sub-extensions of a complex cross-version extension, by name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for sub in extension.get("extension") or ():
        out.setdefault(sub.get("url", ""), []).append(sub)
    return out


def _value(sub: dict[str, Any]) -> Any:
    return next((v for k, v in sub.items() if k.startswith("value")), None)


def _values(parts: dict[str, list[dict[str, Any]]], name: str) -> list[Any]:
    return [_value(p) for p in parts.get(name, [])]


def _one(parts: dict[str, list[dict[str, Any]]], name: str, where: str) -> Any:
    found = _values(parts, name)
    if len(found) > 1:
        raise ConformanceError(f"{where}: {name} is given more than once")
    return found[0] if found else None


def _resource_type(uri: Any, where: str) -> str:
    """`http://hl7.org/fhir/StructureDefinition/Encounter` or `Encounter` -> `Encounter`."""
    name = uri.removeprefix(CORE_SD) if isinstance(uri, str) else ""
    if not is_resource_type(name):
        raise ConformanceError(f"{where}: '{uri}' is not an R4 resource type")
    return name


def _trigger(extension: dict[str, Any], where: str) -> Trigger:
    where += ".resourceTrigger"
    parts = _parts(extension)
    interactions = frozenset(_values(parts, "supportedInteraction")) or INTERACTIONS
    if not interactions <= INTERACTIONS:
        raise ConformanceError(f"{where}: unknown supportedInteraction {sorted(interactions)}")
    query = parts.get("queryCriteria", [])
    if len(query) > 1:
        raise ConformanceError(f"{where}: queryCriteria is given more than once")
    fhirpath = _one(parts, "fhirPathCriteria", where)
    return Trigger(
        resource=_resource_type(_one(parts, "resource", where), where),
        interactions=interactions,  # type: ignore[arg-type]
        query=_query(query[0], where) if query else None,
        fhirpath=fhirpath if isinstance(fhirpath, str) else None,
        description=_one(parts, "description", where),
    )


def _query(extension: dict[str, Any], where: str) -> QueryCriteria:
    where += ".queryCriteria"
    parts = _parts(extension)
    results = {}
    for name in ("resultForCreate", "resultForDelete"):
        result = _one(parts, name, where)
        if result not in (None, "test-passes", "test-fails"):
            raise ConformanceError(f"{where}: {name} '{result}' is not test-passes/test-fails")
        results[name] = result
    return QueryCriteria(
        previous=_one(parts, "previous", where),
        current=_one(parts, "current", where),
        result_for_create=results["resultForCreate"],
        result_for_delete=results["resultForDelete"],
        require_both=_one(parts, "requireBoth", where) is True,
    )


def _filter_by(extension: dict[str, Any], where: str) -> FilterBy:
    where += ".canFilterBy"
    parts = _parts(extension)
    parameter = _one(parts, "filterParameter", where)
    if not isinstance(parameter, str) or not parameter:
        raise ConformanceError(f"{where}: a filterParameter is required")
    return FilterBy(
        resource=_resource_type(_one(parts, "resource", where), where),
        parameter=parameter,
        modifiers=frozenset(_values(parts, "modifier")),
        comparators=frozenset(_values(parts, "comparator")),
        definition=_one(parts, "filterDefinition", where),
    )


def _shape(extension: dict[str, Any], where: str) -> Shape:
    where += ".notificationShape"
    parts = _parts(extension)
    return Shape(
        resource=_resource_type(_one(parts, "resource", where), where),
        include=tuple(_values(parts, "include")),
        rev_include=tuple(_values(parts, "revInclude")),
    )

"""Which search parameters exist for which resource type.

Built from the 1,400 R4 SearchParameters generated from the official definitions (plus custom
ones from `profiles/`, registered at start-up).  The parser, the indexer and the
CapabilityStatement all read this one registry, so what is advertised is exactly what works:
parameter types the engine does not support yet (composite, special) are left out, so a
request using one is refused as unknown rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from fhir_server.resource_types import resource_types
from fhir_server.validation.definitions import CodeHierarchy, search_parameters

if TYPE_CHECKING:
    from fhir_server.validation.conformance import Conformance

SUPPORTED_TYPES = frozenset(
    {"token", "string", "date", "number", "quantity", "reference", "uri", "composite"}
)
MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"missing", "not", "text", "in", "not-in", "above", "below"}),
    "string": frozenset({"missing", "exact", "contains"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "reference": frozenset({"missing", "identifier"}),  # plus :[type]
    "uri": frozenset({"missing", "above", "below"}),
    "composite": frozenset({"missing"}),
}


@dataclass(frozen=True, slots=True)
class SearchParam:
    name: str
    type: str  # FHIR search param type: token, string, date, reference, ...
    documentation: str
    expression: str | None = None
    targets: tuple[str, ...] = ()
    url: str | None = None
    definition: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # composite: (search type, FHIRPath relative to the composite's element) per component
    components: tuple[tuple[str, str], ...] = ()


ID = SearchParam("_id", "token", "Logical id of the resource", url=None)
LAST_UPDATED = SearchParam("_lastUpdated", "date", "When the current version was stored")
SPECIAL = {ID.name: ID, LAST_UPDATED.name: LAST_UPDATED}

# Result parameters: they shape the response rather than select resources.
RESULT_PARAMS = frozenset(
    {
        "_count", "_cursor", "_total", "_format", "_pretty", "_sort", "_summary", "_elements",
        "_include", "_revinclude", "_include:iterate", "_revinclude:iterate",
    }
)  # fmt: skip

_custom: dict[str, dict[str, Any]] = {}
_valuesets: list[Callable[[str], Any]] = []
_codesystems: list[Callable[[str], CodeHierarchy | None]] = []
_generation = [0]


def generation() -> int:
    """Changes whenever what a search parameter means may have changed (the `use_*` calls),
    so a cache of parsed searches can key on it."""
    return _generation[0]


def use_valuesets(lookup: Callable[[str], Any]) -> None:
    """How `:in`/`:not-in` expand a value set url (the validator's conformance resources)."""
    _valuesets[:] = [lookup]
    _generation[0] += 1


def use_codesystems(lookup: Callable[[str], CodeHierarchy | None]) -> None:
    """How token `:above`/`:below` find a code system's hierarchy (local or core)."""
    _codesystems[:] = [lookup]
    _generation[0] += 1


def custom_urls() -> frozenset[str]:
    return frozenset(_custom)


def valueset(url: str) -> Any:
    """The expansion (`ValueSetCodes`) of a value set url, or None if unknown."""
    return _valuesets[0](url) if _valuesets else None


def codesystem(url: str) -> CodeHierarchy | None:
    """The is-a hierarchy of a code system url, or None if unknown."""
    return _codesystems[0](url) if _codesystems else None


def use_custom(params: Iterable[dict[str, Any]]) -> None:
    """The SearchParameters from `profiles/`, by url (set at start-up, before any search)."""
    wanted = {p["url"]: p for p in params}
    if wanted != _custom:
        _custom.clear()
        _custom.update(wanted)
        search_params.cache_clear()
        all_params.cache_clear()
        _generation[0] += 1


def use_conformance(conformance: Conformance) -> None:
    """Search as a server with these conformance resources does: their SearchParameters,
    value sets and code systems (the app and the standalone dispatcher both set it up)."""
    use_custom(conformance.of_kind("SearchParameter"))
    use_valuesets(conformance.valueset)
    use_codesystems(conformance.hierarchy)


@cache
def all_params() -> dict[str, dict[str, SearchParam]]:
    """Resource type -> parameter code -> parameter, for every supported parameter."""
    out: dict[str, dict[str, SearchParam]] = {t: dict(SPECIAL) for t in resource_types()}
    every = [*search_parameters(), *_custom.values()]
    by_url = {sp.get("url"): sp for sp in every}
    for sp in every:
        if sp.get("type") not in SUPPORTED_TYPES or sp["code"] in SPECIAL:
            continue
        if sp.get("url", "").rsplit("/", 1)[-1].startswith("example"):
            continue  # the specification's example SearchParameters are not real parameters
        param = SearchParam(
            name=sp["code"],
            type=sp["type"],
            documentation=sp.get("description") or f"FHIRPath: {sp.get('expression', '')}",
            expression=sp.get("expression"),
            targets=tuple(sp.get("target", ())),
            url=sp.get("url"),
            definition=sp,
            components=_components(sp, by_url),
        )
        if param.type == "composite" and not param.components:
            continue  # a component we cannot type: not offered
        for base in sp.get("base", ()):
            bases = resource_types() if base in ("Resource", "DomainResource") else {base}
            for type_name in bases:
                if type_name in out:
                    out[type_name].setdefault(param.name, param)
    return out


def _components(
    sp: dict[str, Any], by_url: dict[Any, dict[str, Any]]
) -> tuple[tuple[str, str], ...]:
    if sp.get("type") != "composite":
        return ()
    found = []
    for component in sp.get("component", ()):
        definition = by_url.get(component.get("definition"))
        if definition is None or definition.get("type") not in SUPPORTED_TYPES - {"composite"}:
            return ()
        found.append((str(definition["type"]), str(component["expression"])))
    return tuple(found)


@cache
def search_params(resource_type: str) -> dict[str, SearchParam]:
    return all_params().get(resource_type, dict(SPECIAL))

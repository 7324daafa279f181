"""Read-only access to the generated FHIR R4 definitions in ``fhir_server/definitions``.

Why: the official R4 StructureDefinitions (imported by ``tools/import_core_definitions.py``)
are the judge of what a resource may contain.  The files are parsed once per process and
exposed through small typed helpers so the validator never touches raw JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

# Plain path, not importlib.resources: works for wheels, editable and namespace imports.
_DIR = Path(__file__).resolve().parent.parent / "definitions"


@dataclass(frozen=True, slots=True)
class ElementDef:
    """One snapshot element: ``max`` is None for ``*``; ``ref`` names a contentReference."""

    path: str
    min: int
    max: int | None
    types: tuple[str, ...]
    nested: bool
    ref: str | None
    targets: tuple[str, ...] = ()  # allowed Reference target types; () means any
    summary: bool = False  # part of `_summary=true`

    @property
    def name(self) -> str:
        """The last path segment, e.g. ``value[x]``."""
        return self.path.rsplit(".", 1)[1]

    @property
    def parent(self) -> str:
        return self.path.rsplit(".", 1)[0]


def _load(name: str) -> Any:
    return json.loads((_DIR / name).read_text(encoding="utf-8"))


@cache
def _elements_file() -> dict[str, Any]:
    data: dict[str, Any] = _load("elements.json")
    return data


@cache
def resource_types() -> frozenset[str]:
    """All concrete R4 resource type names (146)."""
    return frozenset(_load("resource_types.json"))


@cache
def structure_names() -> frozenset[str]:
    """Resource types and complex datatypes that have element definitions."""
    return frozenset(_elements_file()["elements"])


@cache
def primitive_regexes() -> dict[str, str | None]:
    """Primitive type name -> regex of its value from the definition (None if not given)."""
    return dict(_elements_file()["primitives"])


def primitive_types() -> frozenset[str]:
    return frozenset(primitive_regexes())


def elements(type_name: str) -> dict[str, ElementDef]:
    """Snapshot elements of a resource or complex datatype, by path; empty if unknown.

    Only known names are cached: a name can come from a request, and remembering every
    unknown one would let clients grow the cache without bound."""
    if type_name not in _elements_file()["elements"]:
        return {}
    return _elements(type_name)


@cache
def _elements(type_name: str) -> dict[str, ElementDef]:
    raw = _elements_file()["elements"][type_name]
    return {path: _element_def(path, e) for path, e in raw.items()}


def _element_def(path: str, e: dict[str, Any]) -> ElementDef:
    return ElementDef(
        path=path,
        min=int(e["min"]),
        max=None if e["max"] == "*" else int(e["max"]),
        types=tuple(e.get("types", ())),
        nested=bool(e.get("nested", False)),
        ref=e.get("ref"),
        targets=tuple(e.get("targets", ())),
        summary=bool(e.get("summary", False)),
    )


def element(path: str) -> ElementDef | None:
    """The element at a full path such as ``Patient.contact.name``."""
    return elements(path.split(".", 1)[0]).get(path)


@cache
def children(path: str) -> tuple[ElementDef, ...]:
    """Direct child elements of a type (``Patient``) or of a backbone element path."""
    return tuple(e for e in elements(path.split(".", 1)[0]).values() if e.parent == path)


@cache
def r4b_equal_types() -> frozenset[str]:
    """Resource types whose ``fhir.resources.R4B`` model has exactly the R4 structure."""
    return frozenset(_load("r4b_equal_types.json"))


@cache
def r4b_differences() -> dict[str, str]:
    """First R4B-vs-R4 difference for each resource type that is not R4B-equal."""
    data: dict[str, str] = _load("r4b_differences.json")
    return data


@dataclass(frozen=True, slots=True)
class ValueSetCodes:
    """A value set expanded at import time; ``complete`` is False if it cannot be judged."""

    url: str
    complete: bool
    codes: frozenset[tuple[str, str]]  # (system, code)
    bare_codes: frozenset[str]  # codes without their system, for `code` elements


@dataclass(frozen=True, slots=True)
class InvariantDef:
    """One constraint of the base specification, at the element path that defines it."""

    path: str
    key: str
    severity: str
    human: str
    expression: str


@cache
def bindings() -> dict[str, tuple[str, str]]:
    """Element path -> (strength, value set url) for required and extensible bindings."""
    return {path: (b[0], b[1]) for path, b in _load("bindings.json").items()}


@cache
def _valuesets_file() -> dict[str, Any]:
    data: dict[str, Any] = _load("valuesets.json")
    return data


def core_valueset(url: str) -> ValueSetCodes | None:
    """The expansion of a value set bound somewhere in the base specification.

    As `elements`: a url can come from a request ($translate), so only known ones are cached."""
    return _core_valueset(url) if url in _valuesets_file() else None


@cache
def _core_valueset(url: str) -> ValueSetCodes:
    raw = _valuesets_file()[url]
    pairs = frozenset((s, c) for s, codes in raw["codes"].items() for c in codes)
    return ValueSetCodes(url, raw["complete"], pairs, frozenset(c for _, c in pairs))


@cache
def invariants() -> dict[str, tuple[InvariantDef, ...]]:
    """Element path (``CarePlan.activity``, ``Quantity``) -> its own invariants."""
    return {
        path: tuple(InvariantDef(path, *rule) for rule in rules)
        for path, rules in _load("invariants.json").items()
    }


@cache
def search_parameters() -> tuple[dict[str, Any], ...]:
    """All R4 SearchParameters, in their compact generated form."""
    return tuple(_load("search_parameters.json"))


@cache
def compartments() -> dict[str, dict[str, tuple[str, ...]]]:
    """Compartment type -> resource type -> the parameters that place it in the compartment."""
    return {
        compartment: {rtype: tuple(params) for rtype, params in members.items()}
        for compartment, members in _load("compartments.json").items()
    }


@dataclass(frozen=True, slots=True)
class CodeHierarchy:
    """The is-a links of one code system, both ways, for token `:above`/`:below`.

    A known flat system has no links: a code subsumes only itself.
    """

    url: str
    parents: dict[str, tuple[str, ...]]
    children: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, url: str, parents: Mapping[str, Iterable[str]]) -> CodeHierarchy:
        up = {code: tuple(sorted(set(found))) for code, found in parents.items() if found}
        down: dict[str, list[str]] = {}
        for code, found in up.items():
            for parent in found:
                down.setdefault(parent, []).append(code)
        return cls(url, up, {code: tuple(sorted(found)) for code, found in down.items()})

    def closure(self, code: str, below: bool) -> list[str]:
        """`code` and every code below it (descendants) or above it (ancestors), sorted.

        The walk remembers what it has seen, so a cycle in the data cannot loop it.
        """
        links = self.children if below else self.parents
        seen, stack = {code}, [code]
        while stack:
            for other in links.get(stack.pop(), ()):
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        return sorted(seen)


@cache
def _codesystems_file() -> dict[str, Any]:
    data: dict[str, Any] = _load("codesystems.json")
    return data


@cache
def _flat_codesystems() -> frozenset[str]:
    return frozenset(_codesystems_file()["flat"])


def core_hierarchy(url: str) -> CodeHierarchy | None:
    """The hierarchy of a complete R4 core code system; None if the package does not have it.

    As `elements`: a url can come from a request (`code:below=system|x`), so only known ones
    are cached."""
    if url not in _codesystems_file()["hierarchies"] and url not in _flat_codesystems():
        return None
    return _core_hierarchy(url)


@cache
def _core_hierarchy(url: str) -> CodeHierarchy:
    parents = _codesystems_file()["hierarchies"].get(url)
    return CodeHierarchy.of(url, parents if parents is not None else {})

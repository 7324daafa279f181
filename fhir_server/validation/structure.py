"""Structural validation of FHIR R4 JSON against the official R4 definitions.

Why: ``fhir.resources`` only has R4B models, which differ from R4 for some types, so the
generated R4 snapshot data decides which elements exist, their cardinality, choice types and
primitive formats.  Lookup tables are built once per process; the walk itself is plain dict
and list traversal (no pydantic) so it is cheap enough to run on every write.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from .bindings import Binding, core_binding
from .definitions import ElementDef, children, primitive_regexes, resource_types, structure_names
from .invariants import Invariant, Scope, core_invariants, present_names
from .primitives import Checker, _json_kind, _show, checker
from .references import reference_problem


@dataclass(frozen=True, slots=True)
class StructureIssue:
    """One problem, ready for an OperationOutcome.issue (code is a FHIR issue-type code)."""

    severity: str
    code: str
    expression: str
    message: str


_PRIMITIVE, _COMPLEX, _RESOURCE = 0, 1, 2
_BINDABLE = frozenset({"code", "Coding", "CodeableConcept"})


@dataclass(frozen=True, slots=True)
class _Slot:
    """One JSON property name allowed in an object (``valueString`` for ``value[x]``)."""

    json_name: str
    element: ElementDef
    many: bool
    kind: int
    type: str
    node: str  # table key for complex children (datatype name or backbone path)
    check: Checker | None
    choice: bool
    stem: str  # element name without [x]: what FHIRPath calls it
    binding: Binding | None
    targets: frozenset[str]  # allowed Reference targets; empty means any
    invariants: tuple[Invariant, ...]  # rules of the element itself (sqty-1, txt-1)
    fast: bool  # a single primitive with nothing but its value check


@dataclass(frozen=True, slots=True)
class _Node:
    """All properties allowed in one kind of object plus its required elements."""

    label: str
    slots: dict[str, _Slot]
    required: tuple[tuple[str, tuple[str, ...], int], ...]  # (element, JSON names + _names, min)
    invariants: tuple[Invariant, ...]


def _choice_names(element: ElementDef) -> list[tuple[str, str]]:
    if not element.name.endswith("[x]"):
        return [(element.name, element.types[0] if element.types else "")]
    stem = element.name[:-3]
    return [(stem + t[0].upper() + t[1:], t) for t in element.types]


def _build_node(
    key: str, checkers: dict[str, Checker], rules: dict[str, tuple[Invariant, ...]]
) -> _Node:
    slots: dict[str, _Slot] = {}
    required: list[tuple[str, tuple[str, ...], int]] = []
    for element in children(key):
        if element.max == 0:
            continue
        names = _choice_names(element) if element.ref is None else [(element.name, "")]
        for json_name, code in names:
            if element.ref is not None or element.nested:
                kind, node, type_code = _COMPLEX, element.ref or element.path, "BackboneElement"
            elif code in checkers:
                kind, node, type_code = _PRIMITIVE, "", code
            elif code == "Resource":
                kind, node, type_code = _RESOURCE, "", code
            else:
                kind, node, type_code = _COMPLEX, code, code
            binding = core_binding(element.path) if type_code in _BINDABLE else None
            own_rules = () if node == element.path else rules.get(element.path, ())
            many = element.max != 1
            check = checkers.get(code) if kind == _PRIMITIVE else None
            slots[json_name] = _Slot(
                json_name=json_name,
                element=element,
                many=many,
                kind=kind,
                type=type_code,
                node=node,
                check=check,
                choice=element.name.endswith("[x]"),
                stem=element.name.removesuffix("[x]"),
                binding=binding,
                targets=frozenset(element.targets) if type_code == "Reference" else frozenset(),
                invariants=own_rules,
                fast=check is not None and not many and binding is None and not own_rules,
            )
        if element.min >= 1:
            present = tuple(p for n, _ in names for p in (n, "_" + n))  # value or extension
            required.append((element.name, present, element.min))
    return _Node(key, slots, tuple(required), rules.get(key, ()))


@cache
def _tables() -> dict[str, _Node]:
    """Lookup table for every type root and every backbone path, built on first use."""
    checkers = {name: checker(name, rx) for name, rx in primitive_regexes().items()}
    rules = core_invariants()
    tables: dict[str, _Node] = {}
    pending = list(structure_names())
    while pending:
        key = pending.pop()
        if key in tables:
            continue
        node = tables[key] = _build_node(key, checkers, rules)
        pending.extend(s.node for s in node.slots.values() if s.node and s.node not in tables)
    return tables


class _Walker:
    """Collects issues while walking one resource tree."""

    __slots__ = ("extension", "extensions", "issues", "scope", "tables")

    def __init__(self, extensions: list[tuple[str, dict[str, Any]]] | None = None) -> None:
        self.tables = _tables()
        self.issues: list[StructureIssue] = []
        self.scope = Scope({}, {})
        self.extensions = extensions
        self.extension = self.tables["Extension"] if extensions is not None else None

    def add(self, code: str, expression: str, message: str, severity: str = "error") -> None:
        self.issues.append(StructureIssue(severity, code, expression, message))

    def resource(self, obj: Any, prefix: str | None, contained: bool = False) -> None:
        where = prefix or "Resource"
        if not isinstance(obj, dict):
            self.add("structure", where, f"A resource must be a JSON object, not {_json_kind(obj)}")
            return
        rtype = obj.get("resourceType")
        if rtype is None:
            self.add("required", where, "Missing 'resourceType'")
            return
        if not isinstance(rtype, str) or rtype not in resource_types():
            self.add(
                "structure", where, f"Unknown resourceType {_show(rtype)} (not an R4 resource)"
            )
            return
        outer = self.scope
        self.scope = Scope(obj, outer.root if contained else obj)
        self.obj(obj, self.tables[rtype], prefix or rtype, True)
        self.scope = outer

    def obj(
        self,
        obj: dict[str, Any],
        node: _Node,
        path: str,
        is_resource: bool = False,
        label: str = "",
    ) -> None:
        label = label or node.label
        if node is self.extension and self.extensions is not None:
            self.extensions.append((path, obj))
        if not obj:
            self.add("structure", path, f"Empty object in {label}: not allowed in FHIR JSON")
            return
        slots = node.slots
        chosen: dict[str, str] | None = None
        for key, value in obj.items():
            slot = slots.get(key)
            if slot is None:
                if is_resource and key == "resourceType":
                    continue
                base = slots.get(key[1:]) if key[:1] == "_" else None
                if base is not None and base.kind == _PRIMITIVE:
                    self.primitive_ext(value, base, path, obj.get(base.json_name))
                else:
                    self.add("structure", f"{path}.{key}", f"Unknown element '{key}' in {label}")
                continue
            if slot.choice:
                group = slot.element.path
                if chosen is None:
                    chosen = {}
                elif group in chosen:
                    self.add(
                        "structure",
                        f"{path}.{key}",
                        f"Only one of the {group} choices may be present, "
                        f"found '{chosen[group]}' and '{key}'",
                    )
                    continue
                chosen[group] = key
            self.value(value, slot, path, obj)
        for name, json_names, minimum in node.required:
            for present in json_names:
                if present in obj:
                    break
            else:
                self.add(
                    "required",
                    f"{path}.{name}",
                    f"Missing required element '{name}' of {label} (min {minimum})",
                )
        if len(obj) == 1 and "id" in obj:
            self.add("invariant", path, "ele-1: All FHIR elements must have a @value or children")
        if node.invariants:
            present = {s.stem for k in obj if (s := slots.get(k) or slots.get(k[1:]))}
            self.rules(obj, node.invariants, path, present)

    def rules(self, target: Any, rules: tuple[Invariant, ...], path: str, present: Any) -> None:
        for rule in rules:
            verdict = rule.check(target, present, self.scope)
            if verdict is None:
                self.add(
                    "not-supported",
                    path,
                    f"{rule.rule.key}: could not be evaluated here",
                    "warning",
                )
            elif not verdict:
                self.add(
                    "invariant", path, f"{rule.rule.key}: {rule.rule.human}", rule.rule.severity
                )

    def value(self, value: Any, slot: _Slot, path: str, parent: dict[str, Any]) -> None:
        # Hot path: valid single primitives build no location string and make no extra call.
        if slot.fast and value is not None and type(value) is not list:
            message = slot.check(value)  # type: ignore[misc]
            if message:
                self.add("value", f"{path}.{slot.json_name}", f"'{slot.json_name}' {message}")
            return
        loc = f"{path}.{slot.json_name}"
        if slot.many:
            if not isinstance(value, list):
                self.add(
                    "structure", loc, f"'{slot.json_name}' repeats (max *) and must be an array"
                )
                self.item(value, slot, loc)
                return
            if not value:
                self.add("structure", loc, "Empty arrays are not allowed in FHIR JSON")
                return
            if len(value) < slot.element.min:
                self.add("required", loc, f"At least {slot.element.min} items are required")
            ext = parent.get("_" + slot.json_name) if slot.kind == _PRIMITIVE else None
            for i, item in enumerate(value):
                if slot.kind == _PRIMITIVE and item is not None:
                    self.primitive(item, slot, f"{loc}[{i}]")
                elif item is None and isinstance(ext, list) and i < len(ext) and ext[i] is not None:
                    continue  # value absent, extension present: aligned null is allowed
                else:
                    self.item(item, slot, f"{loc}[{i}]")
        elif isinstance(value, list):
            self.add("structure", loc, f"'{slot.json_name}' has max 1 and must not be an array")
            for i, item in enumerate(value):
                self.item(item, slot, f"{loc}[{i}]")
        else:
            self.item(value, slot, loc)

    def item(self, item: Any, slot: _Slot, loc: str) -> None:
        if item is None:
            self.add("structure", loc, "null is not allowed here")
        elif slot.kind == _PRIMITIVE:
            self.primitive(item, slot, loc)
        elif slot.kind == _RESOURCE:
            self.resource(item, loc, slot.element.name == "contained")
        elif isinstance(item, dict):
            self.obj(item, self.tables[slot.node], loc)
            if slot.binding is not None:
                bound = slot.binding
                check = bound.check_coding if slot.type == "Coding" else bound.check_concept
                message = check(item)
                if message:
                    self.add("code-invalid", loc, message, bound.severity)
            if slot.targets or slot.type == "Reference":
                message = reference_problem(item, slot.targets, self.scope.contained_types())
                if message:
                    self.add("invalid", loc, message)
            if slot.invariants:
                self.rules(item, slot.invariants, loc, present_names(item))
        else:
            kind = _json_kind(item)
            self.add(
                "structure", loc, f"'{slot.json_name}' ({slot.type}) must be an object, not {kind}"
            )

    def primitive(self, item: Any, slot: _Slot, loc: str) -> None:
        message = slot.check(item) if slot.check else None
        if message:
            self.add("value", loc, f"'{slot.json_name}' {message}")
            return
        if slot.binding is not None and isinstance(item, str):
            message = slot.binding.check_code(item)
            if message:
                self.add("code-invalid", loc, message, slot.binding.severity)
        if slot.invariants:
            self.rules(item, slot.invariants, loc, ())

    def primitive_ext(self, value: Any, slot: _Slot, path: str, primary: Any) -> None:
        """``_name`` sibling: only id/extension; arrays align with the primitive array."""
        loc, element = f"{path}.{slot.json_name}", self.tables["Element"]
        label = f"'_{slot.json_name}' (only 'id' and 'extension' are allowed)"
        if not slot.many:
            if isinstance(value, dict):
                self.obj(value, element, loc, label=label)
            else:
                self.add(
                    "structure",
                    loc,
                    f"'_{slot.json_name}' must be an object, not {_json_kind(value)}",
                )
            return
        if not isinstance(value, list):
            self.add("structure", loc, f"'_{slot.json_name}' must be an array (max *)")
            return
        if isinstance(primary, list) and len(primary) != len(value):
            self.add(
                "structure",
                loc,
                f"'_{slot.json_name}' has {len(value)} items, '{slot.json_name}' {len(primary)}",
            )
        if not value or all(v is None for v in value):
            self.add("structure", loc, f"'_{slot.json_name}' must not be empty or all null")
            return
        for i, item in enumerate(value):
            if item is None:
                if not isinstance(primary, list) or i >= len(primary):
                    self.add("structure", f"{loc}[{i}]", "null without a matching value")
            elif isinstance(item, dict):
                self.obj(item, element, f"{loc}[{i}]", label=label)
            else:
                self.add("structure", f"{loc}[{i}]", f"must be an object, not {_json_kind(item)}")


def check_structure(
    resource: Any, extensions: list[tuple[str, dict[str, Any]]] | None = None
) -> list[StructureIssue]:
    """Validate a parsed FHIR JSON resource against the R4 definitions; [] means valid.

    `extensions`, if given, receives every Extension object met, with its location, so that
    extension definitions can be applied without walking the resource again.
    """
    walker = _Walker(extensions)
    walker.resource(resource, None)
    return walker.issues


def warm_up() -> None:
    """Build the lookup tables now (e.g. at server start) instead of on the first request."""
    _tables()

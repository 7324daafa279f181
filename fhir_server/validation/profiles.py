"""Profiles: differential StructureDefinitions from `profiles/`, compiled into checks.

Why: the SIP requirements are profiles on R4 resources.  Each differential element becomes
one compiled rule, applied to the JSON by path: cardinality (per parent), type and
targetProfile narrowing, fixed[x]/pattern[x], bindings (local or base value sets), added
FHIRPath constraints, and slices (extensions by url; value/pattern discriminators, e.g. on
codings and identifiers).  A profile applies when a resource claims it in `meta.profile`
or when its trigger expression selects the resource (see `TRIGGER_EXTENSION`), so a SIP
cannot be stored unprofiled.  Extension definitions apply to every extension with their url.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from .bindings import Binding
from .conformance import TRIGGER_EXTENSION, Conformance, ConformanceError
from .definitions import InvariantDef, resource_types
from .fastpath import compile_simple
from .invariants import Invariant, Scope, compile_invariant, present_names, type_names
from .references import reference_type

SD_BASE = "http://hl7.org/fhir/StructureDefinition/"
Located = tuple[str, Any]  # (FHIRPath location, JSON value)
Report = Callable[[str, str, str, str], None]  # (severity, code, expression, message)


@dataclass(frozen=True, slots=True)
class _Step:
    """One path segment: a JSON name (`value[x]` matches any type) and an optional slice."""

    name: str
    member: Callable[[Any], bool] | None = None


def children(located: Located, step: _Step) -> list[Located]:
    """Children of one JSON object under `step`, with their locations."""
    path, node = located
    if not isinstance(node, dict):
        return []
    out: list[Located] = []
    stem = step.name[:-3] if step.name.endswith("[x]") else None
    for key, value in node.items():
        if key != step.name and not (
            stem is not None and key.startswith(stem) and key[len(stem) : len(stem) + 1].isupper()
        ):
            continue
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            loc = f"{path}.{key}" if i is None else f"{path}.{key}[{i}]"
            if step.member is None or step.member(item):
                out.append((loc, item))
    return out


def select(root: Located, steps: tuple[_Step, ...]) -> list[Located]:
    current = [root]
    for step in steps:
        current = [c for parent in current for c in children(parent, step)]
    return current


def matches_pattern(value: Any, pattern: Any) -> bool:
    """pattern[x] semantics: every property of the pattern is present with a matching value."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            matches_pattern(value.get(k), v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(i, p) for i in items) for p in pattern)
    return value == pattern


def _prefixed(element: dict[str, Any], prefix: str) -> Any | None:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
            return value
    return None


def _type_of_url(url: str, conformance: Conformance) -> str | None:
    if url.startswith(SD_BASE) and url[len(SD_BASE) :] in resource_types():
        return url[len(SD_BASE) :]
    local = conformance.by_url.get(url)
    return local.get("type") if local else None


@dataclass(slots=True)
class _Rule:
    """One differential element, compiled."""

    id: str
    steps: tuple[_Step, ...]
    min: int = 0
    max: int | None = None
    types: frozenset[str] = frozenset()
    targets: frozenset[str] = frozenset()
    fixed: Any = None
    pattern: Any = None
    binding: Binding | None = None
    constraints: tuple[Invariant, ...] = ()


@dataclass(slots=True)
class Profile:
    """A compiled profile: the rules of its differential and of the profiles it derives from."""

    url: str
    name: str
    type: str
    rules: list[_Rule] = field(default_factory=list)
    trigger: Callable[[Any], bool] | None = None
    parent: Profile | None = None

    def triggered_by(self, resource: dict[str, Any]) -> bool:
        return self.trigger is not None and self.trigger(resource)

    def check(self, root: Located, scope: Scope, report: Report) -> None:
        if self.parent is not None:
            self.parent.check(root, scope, report)
        for rule in self.rules:
            self._apply(rule, root, scope, report)

    def _apply(self, rule: _Rule, root: Located, scope: Scope, report: Report) -> None:
        where = f"{self.name} {rule.id}"
        parents = select(root, rule.steps[:-1]) if rule.steps else []
        found: list[Located] = []
        for parent in parents:
            items = children(parent, rule.steps[-1])
            found += items
            loc = f"{parent[0]}.{rule.steps[-1].name.removesuffix('[x]')}"
            if len(items) < rule.min:
                report("error", "required", loc, f"{where}: minimum {rule.min}, found {len(items)}")
            if rule.max is not None and len(items) > rule.max:
                report(
                    "error", "processing", loc, f"{where}: maximum {rule.max}, found {len(items)}"
                )
        if not rule.steps:
            found = [root]
        for loc, item in found:
            self._item(rule, where, loc, item, scope, report)

    def _item(
        self, rule: _Rule, where: str, loc: str, item: Any, scope: Scope, report: Report
    ) -> None:
        if rule.types and rule.steps:
            key = loc.rsplit(".", 1)[-1].split("[", 1)[0]
            chosen = key[len(rule.steps[-1].name.removesuffix("[x]")) :]
            if (
                chosen
                and chosen not in rule.types
                and chosen[0].lower() + chosen[1:] not in rule.types
            ):
                allowed = ", ".join(sorted(rule.types))
                report(
                    "error", "processing", loc, f"{where}: type {chosen} is not allowed ({allowed})"
                )
        if rule.targets and isinstance(item, dict) and isinstance(item.get("reference"), str):
            target = reference_type(item["reference"])
            if target is not None and target not in rule.targets:
                allowed = ", ".join(sorted(rule.targets))
                report(
                    "error", "processing", loc, f"{where}: must reference {allowed}, not {target}"
                )
        if rule.fixed is not None and item != rule.fixed:
            report("error", "processing", loc, f"{where}: must be exactly {rule.fixed!r}")
        if rule.pattern is not None and not matches_pattern(item, rule.pattern):
            report("error", "processing", loc, f"{where}: must match the pattern {rule.pattern!r}")
        if rule.binding is not None:
            binding = rule.binding
            if isinstance(item, str):
                message = binding.check_code(item)
            elif isinstance(item, dict) and ("coding" in item or "text" in item):
                message = binding.check_concept(item)
            elif isinstance(item, dict):
                message = binding.check_coding(item)
            else:
                message = None
            if message:
                report(binding.severity, "code-invalid", loc, f"{where}: {message}")
        for constraint in rule.constraints:
            verdict = constraint.check(item, present_names(item), scope)
            key, human = constraint.rule.key, constraint.rule.human
            if verdict is None:
                report("warning", "not-supported", loc, f"{where}: {key} could not be evaluated")
            elif not verdict:
                report(constraint.rule.severity, "invariant", loc, f"{where}: {key}: {human}")


def _steps(
    element_id: str, member_of: Callable[[str], Callable[[Any], bool] | None]
) -> tuple[_Step, ...]:
    """`CarePlan.category:sip.coding` -> steps category (slice sip), coding."""
    steps: list[_Step] = []
    prefix = element_id.split(".", 1)[0]
    for part in element_id.split(".")[1:]:
        name, _, slice_name = part.partition(":")
        prefix = f"{prefix}.{name}"
        member = member_of(f"{prefix}:{slice_name}") if slice_name else None
        steps.append(_Step(name, member))
        if slice_name:
            prefix = f"{prefix}:{slice_name}"
    return tuple(steps)


def compile_profile(
    sd: dict[str, Any], conformance: Conformance, parent: Profile | None
) -> Profile:
    """Compile a differential StructureDefinition; raise ConformanceError on what we cannot do."""
    elements = {e["id"]: e for e in sd.get("differential", {}).get("element", [])}
    profile = Profile(sd["url"], sd.get("name", sd["id"]), sd["type"], parent=parent)

    def member_of(slice_id: str) -> Callable[[Any], bool] | None:
        base_id = slice_id.rpartition(":")[0]
        slice_element = elements.get(slice_id, {})
        if base_id.endswith(("extension", "modifierExtension")):
            urls = [p for t in slice_element.get("type", []) for p in t.get("profile", [])]
            if not urls:
                raise ConformanceError(f"{sd['url']}: extension slice {slice_id} names no profile")
            return lambda item, url=urls[0]: isinstance(item, dict) and item.get("url") == url
        slicing = elements.get(base_id, {}).get("slicing", {})
        tests = []
        for discriminator in slicing.get("discriminator", []):
            if discriminator["type"] not in ("value", "pattern"):
                raise ConformanceError(
                    f"{sd['url']}: discriminator type {discriminator['type']} is not supported"
                )
            path = discriminator["path"]
            target = slice_element if path == "$this" else elements.get(f"{slice_id}.{path}", {})
            expected = _prefixed(target, "fixed")
            if expected is None:
                expected = _prefixed(target, "pattern")
            if expected is None:
                raise ConformanceError(f"{sd['url']}: slice {slice_id} fixes nothing at {path}")
            steps = tuple(_Step(n) for n in path.split(".")) if path != "$this" else ()
            tests.append((steps, expected))
        if not tests:
            raise ConformanceError(f"{sd['url']}: {base_id} is sliced without discriminators")
        return lambda item: all(
            any(matches_pattern(v, expected) for _, v in select(("", item), steps))
            for steps, expected in tests
        )

    for element_id, element in elements.items():
        rule = _Rule(element_id, _steps(element_id, member_of))
        if "min" in element:
            rule.min = int(element["min"])
        if "max" in element:
            rule.max = None if element["max"] == "*" else int(element["max"])
        types = element.get("type", [])
        if types and element["path"].endswith("[x]"):
            rule.types = frozenset(t["code"] for t in types)
        rule.targets = frozenset(
            t
            for spec in types
            for url in spec.get("targetProfile", [])
            if (t := _type_of_url(url, conformance))
        )
        rule.fixed = _prefixed(element, "fixed")
        rule.pattern = _prefixed(element, "pattern")
        binding = element.get("binding")
        if binding and binding.get("strength") in ("required", "extensible"):
            valueset = conformance.valueset(binding.get("valueSet", ""))
            if valueset is None or not valueset.complete:
                raise ConformanceError(f"{sd['url']}: {element_id} binds an unknown value set")
            rule.binding = Binding(element_id, binding["strength"], valueset)
        constraints = []
        for c in element.get("constraint", []):
            rule_def = InvariantDef(
                element["path"], c["key"], c["severity"], c["human"], c["expression"]
            )
            compiled = compile_invariant(rule_def, parse_now=True)
            if isinstance(compiled, str):
                raise ConformanceError(f"{sd['url']}: constraint {c['key']}: {compiled}")
            constraints.append(compiled)
        rule.constraints = tuple(constraints)
        if rule.steps or rule.constraints or rule.fixed is not None or rule.pattern is not None:
            profile.rules.append(rule)
    trigger = next(
        (e["valueString"] for e in sd.get("extension", []) if e.get("url") == TRIGGER_EXTENSION),
        None,
    )
    if trigger is not None:
        profile.trigger = _trigger(trigger, sd["type"])
    return profile


def _trigger(expression: str, type: str) -> Callable[[Any], bool]:
    """True where the expression is true for a resource (fast path, else fhirpathpy)."""
    simple = compile_simple(expression, type_names(), type)
    compiled = fhirpathpy.compile(expression, models["r4"])
    if simple is None:
        return lambda resource: compiled(resource) == [True]

    def selects(resource: Any) -> bool:
        try:
            return simple(resource) is True
        except ValueError:
            return compiled(resource) == [True]

    return selects


def compile_profiles(conformance: Conformance) -> dict[str, Profile]:
    """All constraint StructureDefinitions by url, parents compiled before children."""
    sds = {sd["url"]: sd for sd in conformance.of_kind("StructureDefinition")}
    compiled: dict[str, Profile] = {}

    def build(url: str, seen: tuple[str, ...]) -> Profile | None:
        if url in compiled:
            return compiled[url]
        sd = sds.get(url)
        if sd is None or sd.get("derivation") != "constraint":
            return None
        if url in seen:
            raise ConformanceError(f"{url}: baseDefinition cycle")
        base = sd.get("baseDefinition", "")
        parent = build(base, (*seen, url))
        if parent is None and base != SD_BASE + sd["type"]:
            raise ConformanceError(f"{url}: baseDefinition {base} is neither R4 nor local")
        compiled[url] = compile_profile(sd, conformance, parent)
        return compiled[url]

    for url in sds:
        build(url, ())
    return compiled

"""FHIRPath invariants of the base specification (and of profiles), compiled once.

Why: rules such as `cpl-3` (an activity has a reference or a detail, not both) or `obs-6`
are written in FHIRPath.  fhirpathpy evaluates them; three things keep that cheap enough for
every write:
- each expression is parsed once and its member names recorded, so an invariant whose names
  are all absent from an element is answered from a cached result for the empty element
  (sound because such an expression can only see the element through those names; those
  that escape it, via `%resource`, `children()`, `descendants()`, `resolve()` or a top-level
  `$this`, are always evaluated);
- the commonest rules (`ele-1`, `ext-1`, `ref-1`) are native Python;
- `hasValue()`, `htmlChecks()` and `resolve()` are supplied to fhirpathpy, which lacks them.
An invariant that still cannot be evaluated is listed once at start-up (see `unsupported`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.engine.util import set_paths
from fhirpathpy.models import models
from fhirpathpy.parser import parse

from .definitions import InvariantDef, invariants, primitive_types, structure_names
from .fastpath import compile_simple
from .narrative import has_content, html_problem

log = logging.getLogger(__name__)

_R4 = models["r4"]
_SCOPED = frozenset({"children", "descendants", "resolve", "repeat"})
_PER_ITEM = frozenset({"where", "select", "all", "exists", "repeat", "any"})
_STRING_CONSTANTS = frozenset({"ucum", "sct", "loinc"})
_OPERATOR_WORDS = frozenset({"and", "or", "xor", "implies", "in", "contains", "not"})
NATIVE_ONLY = frozenset({"ele-1"})  # checked inside the structure walk


@dataclass(slots=True)
class Scope:
    """The resources an element lives in: `%resource` and `%rootResource`."""

    resource: dict[str, Any]
    root: dict[str, Any]
    _contained: dict[str, str] | None = None

    def contained_types(self) -> dict[str, str]:
        """Contained resource id -> its resourceType, in the root resource."""
        if self._contained is None:
            contained = self.root.get("contained")
            items = contained if isinstance(contained, list) else []
            self._contained = {
                c["id"]: str(c.get("resourceType"))
                for c in items
                if isinstance(c, dict) and isinstance(c.get("id"), str)
            }
        return self._contained


Evaluator = Callable[[dict[str, Any], Scope], bool]


def _has_value(inputs: list[Any]) -> bool:
    return len(inputs) == 1 and not isinstance(inputs[0], dict | list)


def _html_checks(inputs: list[Any]) -> bool:
    return all(isinstance(v, str) and html_problem(v) is None for v in inputs)


def _resolve(inputs: list[Any]) -> list[Any]:
    return []  # no store lookups inside validation: an unresolved reference is unknown


def _no_trace(*_: Any) -> None:
    """`trace()` in dom-3 would print to stdout."""


_USER_FUNCTIONS = {
    "hasValue": {"fn": _has_value},
    "htmlChecks": {"fn": _html_checks},
    "resolve": {"fn": _resolve},
}
PARTIAL = {"resolve": "resolve() finds nothing during validation, so the rule passes"}


def _ext_1(node: dict[str, Any], scope: Scope) -> bool:
    has_value = any(k.startswith("value") for k in node)
    return ("extension" in node) != has_value


def _ref_1(node: dict[str, Any], scope: Scope) -> bool:
    reference = node.get("reference")
    if not isinstance(reference, str) or not reference.startswith("#"):
        return True
    if reference == "#":
        return scope.resource is not scope.root  # a contained resource pointing at its host
    return reference[1:] in scope.contained_types()


def _dom_6(node: dict[str, Any], scope: Scope) -> bool:
    text = node.get("text")
    return isinstance(text, dict) and "div" in text


def _txt_1(div: Any, scope: Scope) -> bool:
    return not isinstance(div, str) or html_problem(div) is None


def _txt_2(div: Any, scope: Scope) -> bool:
    return not isinstance(div, str) or has_content(div)


def _local_references(node: Any, out: set[str]) -> set[str]:
    """Every string starting with '#' anywhere below `node` (references, canonicals, uris)."""
    if isinstance(node, dict):
        for value in node.values():
            _local_references(value, out)
    elif isinstance(node, list):
        for value in node:
            _local_references(value, out)
    elif isinstance(node, str) and node.startswith("#"):
        out.add(node)
    return out


def _dom_3(node: dict[str, Any], scope: Scope) -> bool:
    """Each contained resource is referred to from the resource, or refers to it ('#')."""
    contained = node.get("contained")
    if not isinstance(contained, list):
        return True
    outside = _local_references({k: v for k, v in node.items() if k != "contained"}, set())
    inside = _local_references(contained, set())
    for item in contained:
        if not isinstance(item, dict):
            continue
        own = _local_references(item, set())
        if f"#{item.get('id')}" not in outside | (inside - own) and "#" not in own:
            return False
    return True


def _per_1(node: dict[str, Any], scope: Scope) -> bool:
    """start <= end, compared as instants; different precisions are not comparable (true)."""
    start, end = node.get("start"), node.get("end")
    if not isinstance(start, str) or not isinstance(end, str):
        return True
    if "T" in start and "T" in end:
        return datetime.fromisoformat(start) <= datetime.fromisoformat(end)
    if "T" in start or "T" in end or len(start) != len(end):
        return True
    return start <= end


def _obs_7(node: dict[str, Any], scope: Scope) -> bool:
    """No value when a component has the Observation's own code (avoids %resource)."""
    if not any(k.startswith("value") for k in node):
        return True
    code = node.get("code")
    own = code.get("coding") if isinstance(code, dict) else None
    components = node.get("component")
    if not isinstance(own, list) or not isinstance(components, list):
        return True
    for component in components:
        theirs = component.get("code", {}).get("coding") if isinstance(component, dict) else None
        if isinstance(theirs, list) and any(c in own for c in theirs):
            return False
    return True


NATIVE: dict[str, Evaluator] = {
    "obs-7": _obs_7,
    "dom-3": _dom_3,
    "per-1": _per_1,
    "dom-6": _dom_6,
    "ext-1": _ext_1,
    "ref-1": _ref_1,
    "txt-1": _txt_1,
    "txt-2": _txt_2,
}


_CHOICE_STEM = re.compile(r"_?([a-z][a-z0-9]*)")


def present_names(node: Any) -> set[str]:
    """Element names present in a JSON object as FHIRPath sees them (`valueString` -> value)."""
    if not isinstance(node, dict):
        return set()
    names = set()
    for key in node:
        name = key.lstrip("_")
        names.add(name)
        stem = _CHOICE_STEM.match(key)
        if stem is not None:
            names.add(stem.group(1))
    return names


@dataclass(slots=True)
class _Analysis:
    names: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    escapes: bool = False


def _analyse(node: dict[str, Any], out: _Analysis, per_item: bool = False) -> None:
    kind = node.get("type")
    if kind == "MemberInvocation" and not per_item:
        out.names.add(node["children"][0]["text"].strip("`"))
    elif kind == "ExternalConstant":
        name = node["children"][0].get("text", "").strip("`'")
        if name not in _STRING_CONSTANTS and not name.startswith(("vs-", "ext-")) and not per_item:
            out.escapes = True
    elif kind == "ThisInvocation" and not per_item:
        out.escapes = True
    elif kind == "InvocationTerm" and not per_item:
        if node["children"][0].get("type") == "FunctionInvocation":
            out.escapes = True  # a function applied to the element itself
    elif kind == "Functn":
        name = node["children"][0]["text"]
        out.functions.add(name)
        if name in _SCOPED and not per_item:
            out.escapes = True
        inner = per_item or name in _PER_ITEM
        for child in node["children"][1:]:
            _analyse(child, out, inner)
        return
    for child in node.get("children", []):
        _analyse(child, out, per_item)


@cache
def type_names() -> frozenset[str]:
    """All R4 type names: `value` + a capitalised type name is a choice (`valueString`)."""
    return primitive_types() | structure_names()


@cache
def _parsed(expression: str) -> tuple[Any, _Analysis]:
    """Parse once per distinct expression (dom-2..6 repeat on all 146 resource types)."""
    ast = parse(expression)
    analysis = _Analysis()
    _analyse(ast, analysis)
    return ast, analysis


@dataclass(slots=True)
class Invariant:
    """One invariant, compiled on first use; `check` returns True, False, or None (error).

    Parsing with fhirpathpy's ANTLR parser costs milliseconds per expression, so the ~1,000
    base invariants are parsed when an element that carries them is first validated.
    """

    rule: InvariantDef
    native: Evaluator | None = None
    _names: frozenset[str] | None = None  # None: must always be evaluated
    _evaluate: Evaluator | None = None
    _empty: bool | None = None

    def _compile(self) -> Evaluator:
        if self.native is not None:
            self._evaluate = self.native
            return self.native
        simple = compile_simple(
            self.rule.expression,
            type_names(),
            self.rule.path.split(".")[0] if "." not in self.rule.path else None,
        )
        if simple is not None:

            def evaluate(node: Any, scope: Scope) -> bool:
                try:
                    return simple(node) is not False
                except ValueError:  # outside the fast grammar's semantics: ask fhirpathpy
                    return _fhirpath(_parsed(self.rule.expression)[0], self.rule.path)(node, scope)

            self._evaluate = evaluate
            return evaluate
        ast, analysis = _parsed(self.rule.expression)
        self._names = None if analysis.escapes else frozenset(analysis.names)
        self._evaluate = _fhirpath(ast, self.rule.path)
        return self._evaluate

    def check(self, node: Any, present: Iterable[str], scope: Scope) -> bool | None:
        try:
            evaluate = self._evaluate or self._compile()
            if self._names is not None and self._names.isdisjoint(present):
                if self._empty is None:
                    self._empty = evaluate({}, Scope({}, {}))
                return self._empty
            return evaluate(node, scope)
        except Exception as exc:
            if self.rule.key not in _failed:  # once per rule, not once per resource
                _failed.add(self.rule.key)
                log.warning("invariant %s could not be evaluated: %s", self.rule.key, exc)
            return None


def _fhirpath(ast: Any, base: str) -> Evaluator:
    options = {"userInvocationTable": _USER_FUNCTIONS, "traceFn": _no_trace}
    compiled = set_paths(apply_parsed_path, parsedPath=ast, model=_R4, options=options)

    def evaluate(node: Any, scope: Scope) -> bool:
        context = {"resource": scope.resource, "rootResource": scope.root}
        result = compiled(ResourceNode.create_node(node, base), context)
        return result != [False]  # empty means not provably broken (e.g. partial dates)

    return evaluate


_FUNCTION_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def compile_invariant(rule: InvariantDef, parse_now: bool = False) -> Invariant | str:
    """The invariant, or why it cannot be evaluated (a function fhirpathpy lacks)."""
    if rule.key in NATIVE:
        return Invariant(rule, NATIVE[rule.key])
    called = set(_FUNCTION_CALL.findall(rule.expression))
    missing = called - set(invocation_registry) - set(_USER_FUNCTIONS) - _OPERATOR_WORDS
    if missing:
        return f"fhirpathpy lacks {', '.join(sorted(missing))}()"
    if parse_now:
        try:
            _parsed(rule.expression)
        except Exception as exc:
            return f"expression does not parse: {exc}"
    return Invariant(rule)


@cache
def core_invariants() -> dict[str, tuple[Invariant, ...]]:
    """Element path -> compiled base-specification invariants (ele-1 is native, elsewhere)."""
    out: dict[str, tuple[Invariant, ...]] = {}
    for path, rules in invariants().items():
        compiled = []
        for rule in rules:
            if rule.key in NATIVE_ONLY:
                continue
            result = compile_invariant(rule)
            if isinstance(result, Invariant):
                compiled.append(result)
            else:
                _unsupported.setdefault(rule.key, result)
        if compiled:
            out[path] = tuple(compiled)
    return out


_unsupported: dict[str, str] = {}
_failed: set[str] = set()


def unsupported() -> dict[str, str]:
    """Invariants that cannot be evaluated, or only partly, by key (for the start-up log)."""
    core_invariants()
    partial = {
        rule.key: PARTIAL[name]
        for rules in invariants().values()
        for rule in rules
        for name in PARTIAL
        if f"{name}(" in rule.expression
    }
    return {**partial, **_unsupported}


def report_unsupported() -> None:
    """Log, once at start-up, every invariant the engine cannot fully evaluate."""
    for key, why in sorted(unsupported().items()):
        log.warning("invariant %s is not fully evaluated: %s", key, why)

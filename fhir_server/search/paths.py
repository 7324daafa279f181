"""FHIRPath, the subset search expressions use, compiled to closures over FHIR JSON.

Why: `extract.py` must evaluate ~30 SearchParameter expressions per write; fhirpathpy needs
~0.1 ms for each.  Each expression is parsed once and compiled, per resource type, into a
closure that walks the JSON and knows the FHIR type (`Ctx`) of every value it reaches, from
the element definitions.  Expressions outside the subset fall back to fhirpathpy
(`fhirpath_values`, with the value type guessed from the JSON shape: `guess_ctx`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from functools import cache
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from fhir_server.validation.definitions import (
    element,
    primitive_types,
    resource_types,
    structure_names,
)

_R4 = models["r4"]
_TYPE_PARENT: dict[str, str] = _R4["type2Parent"]


def _empty(root: dict[str, Any]) -> Items:
    return []


# -- typed values ------------------------------------------------------------------------


class Ctx:
    """The FHIR type of a value reached, where its children are defined, and its element.

    `base` is the element-table prefix of its children (`HumanName`, `Patient.contact`;
    None for primitives); `path` the element it came from (`Patient.gender`), for bindings.
    Interned (see `_ctx`), so it hashes by identity: cheap as a dict key on the hot path.
    """

    __slots__ = ("base", "path", "type")

    def __init__(self, type_: str, base: str | None, path: str) -> None:
        self.type, self.base, self.path = type_, base, path

    def __repr__(self) -> str:
        return f"Ctx({self.type}, {self.base}, {self.path})"


@cache
def _ctx(type_: str, base: str | None, path: str) -> Ctx:
    return Ctx(type_, base, path)


def _resource_ctx(type_: str) -> Ctx:
    return _ctx(type_, type_, type_)


@cache
def _type_ctx(type_: str, path: str) -> Ctx:
    """A value of datatype `type_` found at element `path`."""
    if type_ in _PRIMITIVES:
        return _ctx(type_, None, path)
    if type_ in ("Resource", "DomainResource"):
        return _ctx("Resource", None, path)  # resolved per value, from its resourceType
    return _ctx(type_, type_ if type_ in _STRUCTURES else None, path)


_PRIMITIVES = primitive_types()
_STRUCTURES = structure_names()
_BOOLEAN = _ctx("boolean", None, "")

Item = tuple[Any, Ctx]
Items = list[Item]
Step = Callable[[Items, dict[str, Any]], Items]
Run = Callable[[dict[str, Any]], Items]


def is_type(name: str, wanted: str) -> bool:
    """FHIRPath `is`: the same type or a subtype (`Age` is a `Quantity`, `code` a `string`)."""
    while name:
        if name == wanted:
            return True
        name = _TYPE_PARENT.get(name, "")
    return False


def _cap(type_: str) -> str:
    return type_[0].upper() + type_[1:]


@cache
def _candidates(base: str, name: str) -> tuple[tuple[str, Ctx], ...]:
    """The JSON keys that hold member `name` of `base`, each with its value's Ctx."""
    e = element(f"{base}.{name}")
    if e is not None:
        if e.ref is not None:
            return ((name, _ctx("BackboneElement", e.ref, e.path)),)
        if e.nested:
            return ((name, _ctx("BackboneElement", e.path, e.path)),)
        return ((name, _type_ctx(e.types[0] if e.types else "Element", e.path)),)
    e = element(f"{base}.{name}[x]")
    if e is not None:
        return tuple((name + _cap(t), _type_ctx(t, e.path)) for t in e.types)
    return ()


def _member(name: str) -> Step:
    def step(items: Items, root: dict[str, Any]) -> Items:
        out: Items = []
        for value, ctx in items:
            base = ctx.base
            if base is None:
                if ctx.type != "Resource" or not isinstance(value, dict):
                    continue
                kind = value.get("resourceType")
                if not isinstance(kind, str) or kind not in _RESOURCE_TYPES:
                    continue
                base = kind
            if not isinstance(value, dict):
                continue
            for key, child in _candidates(base, name):
                found = value.get(key)
                if found is None:
                    continue
                if type(found) is list:
                    out.extend((v, child) for v in found if v is not None)
                else:
                    out.append((found, child))
        return out

    return step


_RESOURCE_TYPES = resource_types()


def _of_type(wanted: str) -> Step:
    def step(items: Items, root: dict[str, Any]) -> Items:
        out: Items = []
        for value, ctx in items:
            kind = ctx.type
            if kind == "Resource" and isinstance(value, dict):
                kind = str(value.get("resourceType"))
            if is_type(kind, wanted):
                out.append((value, ctx))
        return out

    return step


def _index(n: int) -> Step:
    def step(items: Items, root: dict[str, Any]) -> Items:
        return items[n : n + 1]

    return step


def _filter(test: Callable[[Any, Ctx, dict[str, Any]], bool]) -> Step:
    def step(items: Items, root: dict[str, Any]) -> Items:
        return [item for item in items if test(item[0], item[1], root)]

    return step


# -- references ------------------------------------------------------------------------

_LOCAL = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?")
_ABSOLUTE_TAIL = re.compile(
    r"/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?/?$"
)


def reference_target_type(reference: Any, root: dict[str, Any]) -> str | None:
    """The resource type a Reference points at, as `resolve() is X` needs it.

    From the literal reference (`Type/id`, an absolute `…/Type/id`, a contained `#id`),
    else from `Reference.type` (a type name or its StructureDefinition url).
    """
    if not isinstance(reference, dict):
        return None
    literal = reference.get("reference")
    if isinstance(literal, str):
        if literal.startswith("#"):
            for item in root.get("contained") or ():
                if isinstance(item, dict) and item.get("id") == literal[1:]:
                    kind = item.get("resourceType")
                    return kind if isinstance(kind, str) else None
            return None
        m = _LOCAL.fullmatch(literal) or _ABSOLUTE_TAIL.search(literal)
        if m is not None and m.group(1) in _RESOURCE_TYPES:
            return m.group(1)
    kind = reference.get("type")
    if isinstance(kind, str):
        kind = kind.rsplit("/", 1)[-1]
        return kind if kind in _RESOURCE_TYPES else None
    return None


def _resolves_to(wanted: str) -> Callable[[Any, Ctx, dict[str, Any]], bool]:
    def test(value: Any, ctx: Ctx, root: dict[str, Any]) -> bool:
        target = reference_target_type(value, root)
        return target is not None and is_type(target, wanted)

    return test


def _equals(names: tuple[str, ...], literal: str) -> Callable[[Any, Ctx, dict[str, Any]], bool]:
    steps = [_member(n) for n in names]

    def test(value: Any, ctx: Ctx, root: dict[str, Any]) -> bool:
        items: Items = [(value, ctx)]
        for step in steps:
            items = step(items, root)
        return len(items) == 1 and items[0][0] == literal

    return test


def _has_extension(url: str) -> Callable[[Any, Ctx, dict[str, Any]], bool]:
    def test(value: Any, ctx: Ctx, root: dict[str, Any]) -> bool:
        extensions = value.get("extension") if isinstance(value, dict) else None
        return isinstance(extensions, list) and any(
            isinstance(e, dict) and e.get("url") == url for e in extensions
        )

    return test


# -- parsing ---------------------------------------------------------------------------


class Unsupported(Exception):
    """The expression is outside the natively compiled subset."""


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+)|(?P<op>!=|[().|\[\]=,])"
    r"|(?P<id>`[^`]+`|[A-Za-z_][A-Za-z0-9_]*))"
)
_DECEASED = re.compile(r"(\w+(?:\.\w+)+)\.exists\(\) and (\1) != false")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise Unsupported(f"cannot read {text[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        value = m.group(kind)
        if kind == "str":
            value = value[1:-1].replace("\\'", "'").replace("\\\\", "\\")
        elif kind == "id":
            value = value.strip("`")
        out.append((kind, value))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over the subset; builds a small tuple AST.

    union := expr ('|' expr)* ;  expr := postfix ('as' Type)* ;
    postfix := ('(' union ')' | name) ('.' name ['(' args ')'] | '[' num ']')*
    """

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, value: str | None = None) -> str | None:
        if self.i >= len(self.toks):
            return None
        tok = self.toks[self.i][1]
        return tok if value is None or tok == value else None

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise Unsupported("unexpected end")
        k, v = self.toks[self.i]
        if (kind is not None and k != kind) or (value is not None and v != value):
            raise Unsupported(f"expected {value or kind}, found {v!r}")
        self.i += 1
        return v

    def parse(self) -> tuple[Any, ...]:
        ast = self.union()
        if self.i != len(self.toks):
            raise Unsupported(f"unexpected {self.toks[self.i][1]!r}")
        return ast

    def union(self) -> tuple[Any, ...]:
        items = [self.expr()]
        while self.peek("|"):
            self.i += 1
            items.append(self.expr())
        return items[0] if len(items) == 1 else ("union", items)

    def expr(self) -> tuple[Any, ...]:
        node = self.postfix()
        while self.i < len(self.toks) and self.toks[self.i] == ("id", "as"):
            self.i += 1
            node = ("path", ("paren", node), [("as", self.take("id"))])
        return node

    def postfix(self) -> tuple[Any, ...]:
        if self.peek("("):
            self.i += 1
            head: tuple[Any, ...] = ("paren", self.union())
            self.take(value=")")
        else:
            head = ("name", self.take("id"))
        steps: list[tuple[Any, ...]] = []
        while True:
            if self.peek("."):
                self.i += 1
                name = self.take("id")
                if self.peek("("):
                    self.i += 1
                    steps.append(self.function(name))
                    self.take(value=")")
                else:
                    steps.append(("member", name))
            elif self.peek("["):
                self.i += 1
                steps.append(("index", int(self.take("num"))))
                self.take(value="]")
            else:
                return ("path", head, steps)

    def function(self, name: str) -> tuple[Any, ...]:
        if name in ("as", "ofType"):
            return ("as", self.take("id"))
        if name == "extension":
            return ("ext", self.take("str"))
        if name == "where":
            return ("where", self.condition())
        raise Unsupported(f"function {name}()")

    def condition(self) -> tuple[Any, ...]:
        first = self.take("id")
        if first == "resolve":
            self.take(value="(")
            self.take(value=")")
            self.take(value="is")
            return ("resolve_is", self.take("id"))
        if first == "hasExtension":
            self.take(value="(")
            url = self.take("str")
            self.take(value=")")
            return ("has_ext", url)
        names = [first]
        while self.peek("."):
            self.i += 1
            names.append(self.take("id"))
        self.take(value="=")
        return ("eq", tuple(names), self.take("str"))


@cache
def _parse(expression: str) -> tuple[Any, ...]:
    m = _DECEASED.fullmatch(expression.strip())
    if m is not None:
        return ("truthy", _Parser(m.group(1)).parse())
    return _Parser(expression).parse()


class _Node:
    """A compiled (sub)expression: its closure, the top-level JSON keys it can read (None:
    it may find something even when none is present) and the Ctxs of its values (None: only
    known at run time, after a Resource)."""

    __slots__ = ("ctxs", "keys", "run")

    def __init__(self, run: Run, keys: frozenset[str] | None, ctxs: tuple[Ctx, ...] | None):
        self.run, self.keys, self.ctxs = run, keys, ctxs


def _unique(ctxs: Iterable[Ctx]) -> tuple[Ctx, ...]:
    return tuple(dict.fromkeys(ctxs))


def _static_member(
    name: str, ctxs: tuple[Ctx, ...] | None
) -> tuple[Step, tuple[tuple[str, Ctx], ...] | None, tuple[Ctx, ...] | None]:
    """A member step; when the input Ctx is known, its JSON keys are fixed at compile time."""
    if ctxs is None or len(ctxs) != 1 or ctxs[0].base is None:
        out = None
        if ctxs is not None and all(c.base is not None for c in ctxs):
            out = _unique(child for c in ctxs for _, child in _candidates(c.base or "", name))
            if any(c.type == "Resource" for c in out):
                out = None
        return _member(name), None, out
    cands = _candidates(ctxs[0].base or "", name)
    children = _unique(child for _, child in cands)
    out_ctxs = None if any(c.type == "Resource" for c in children) else children
    if out_ctxs is None:
        return _member(name), cands, None
    if len(cands) == 1:
        key, child = cands[0]

        def one(items: Items, root: dict[str, Any]) -> Items:
            out: Items = []
            for value, _ in items:
                if type(value) is not dict:
                    continue
                found = value.get(key)
                if found is None:
                    continue
                if type(found) is list:
                    out.extend([(v, child) for v in found if v is not None])
                else:
                    out.append((found, child))
            return out

        return one, cands, out_ctxs

    def some(items: Items, root: dict[str, Any]) -> Items:
        out: Items = []
        for value, _ in items:
            if type(value) is not dict:
                continue
            for key, child in cands:
                found = value.get(key)
                if found is None:
                    continue
                if type(found) is list:
                    out.extend([(v, child) for v in found if v is not None])
                else:
                    out.append((found, child))
        return out

    return some, cands, out_ctxs


def _from_root(cands: tuple[tuple[str, Ctx], ...]) -> Run:
    """The first member step, straight from the resource."""
    if len(cands) == 1:
        key, child = cands[0]

        def one(root: dict[str, Any]) -> Items:
            found = root.get(key)
            if found is None:
                return []
            if type(found) is list:
                return [(v, child) for v in found if v is not None]
            return [(found, child)]

        return one

    def some(root: dict[str, Any]) -> Items:
        out: Items = []
        for key, child in cands:
            found = root.get(key)
            if found is None:
                continue
            if type(found) is list:
                out.extend([(v, child) for v in found if v is not None])
            else:
                out.append((found, child))
        return out

    return some


def _compile(ast: tuple[Any, ...], rtype: str) -> _Node | None:
    """A closure for `ast` on resources of type `rtype`; None if it is always empty."""
    kind = ast[0]
    if kind == "union":
        nodes = [n for n in (_compile(a, rtype) for a in ast[1]) if n is not None]
        if not nodes:
            return None
        if len(nodes) == 1:
            return nodes[0]
        runs = [n.run for n in nodes]

        def union(root: dict[str, Any]) -> Items:
            out: Items = []
            for run in runs:
                out.extend(run(root))
            return out

        all_keys = [n.keys for n in nodes]
        keys = None if any(k is None for k in all_keys) else frozenset().union(*all_keys)
        all_ctxs = [n.ctxs for n in nodes]
        ctxs = (
            None if any(c is None for c in all_ctxs) else _unique(c for cs in all_ctxs for c in cs)
        )
        return _Node(union, keys, ctxs)
    if kind == "truthy":
        inner = _compile(ast[1], rtype)
        inner_run = inner.run if inner is not None else _empty

        def truthy(root: dict[str, Any]) -> Items:
            found = inner_run(root)
            return [(bool(found) and all(v is not False for v, _ in found), _BOOLEAN)]

        return _Node(truthy, None, (_BOOLEAN,))
    assert kind == "path"
    head, steps_ast = ast[1], list(ast[2])
    root_ctx = _resource_ctx(rtype)
    start: Run
    keys: frozenset[str] | None = None
    ctxs: tuple[Ctx, ...] | None
    if head[0] == "paren":
        inner_node = _compile(head[1], rtype)
        if inner_node is None:
            return None
        start, keys, ctxs = inner_node.run, inner_node.keys, inner_node.ctxs
    else:
        name = head[1]
        if name[0].isupper():
            if not is_type(rtype, name):
                return None  # `Person.name` on a Patient
        else:
            steps_ast.insert(0, ("member", name))
        if steps_ast and steps_ast[0][0] == "member":
            cands = _candidates(rtype, steps_ast.pop(0)[1])
            if not cands:
                return None
            start, keys = _from_root(cands), frozenset(k for k, _ in cands)
            ctxs = _unique(child for _, child in cands)
            if any(c.type == "Resource" for c in ctxs):
                ctxs = None
        else:

            def start(root: dict[str, Any]) -> Items:
                return [(root, root_ctx)]

            ctxs = (root_ctx,)
    steps: list[Step] = []
    for step in steps_ast:
        op = step[0]
        if op == "member":
            fn, _, ctxs = _static_member(step[1], ctxs)
            steps.append(fn)
        elif op == "as":
            steps.append(_of_type(step[1]))
            if ctxs is not None:
                ctxs = tuple(c for c in ctxs if is_type(c.type, step[1]))
        elif op == "index":
            steps.append(_index(step[1]))
        elif op == "ext":
            fn, _, ctxs = _static_member("extension", ctxs)
            steps.append(fn)
            steps.append(_filter(_equals(("url",), step[1])))
        elif op == "where":
            cond = step[1]
            if cond[0] == "resolve_is":
                steps.append(_filter(_resolves_to(cond[1])))
            elif cond[0] == "has_ext":
                steps.append(_filter(_has_extension(cond[1])))
            else:
                steps.append(_filter(_equals(cond[1], cond[2])))
        else:  # pragma: no cover - the parser emits nothing else
            raise Unsupported(op)
    if not steps:
        return _Node(start, keys, ctxs)
    if len(steps) == 1:
        only = steps[0]
        return _Node(lambda root: only(start(root), root), keys, ctxs)

    def run(root: dict[str, Any]) -> Items:
        items = start(root)
        for step_fn in steps:
            if not items:
                break
            items = step_fn(items, root)
        return items

    return _Node(run, keys, ctxs)


# -- fhirpathpy fallback ---------------------------------------------------------------

_ROOT: ContextVar[dict[str, Any]] = ContextVar("search_extract_root")


def _resolve(inputs: list[Any]) -> list[Any]:
    """`resolve()` for fhirpathpy: a stub of the target's type, enough for `is Type`."""
    try:
        root = _ROOT.get()
    except LookupError:
        root = {}
    out = []
    for value in inputs:
        target = reference_target_type(value, root)
        if target is not None:
            out.append(ResourceNode.create_node({"resourceType": target}, target))
    return out


def _has_extension_fn(inputs: list[Any], url: str) -> list[bool]:
    """`hasExtension(url)` (FHIR's FHIRPath extension), which fhirpathpy lacks."""
    return [any(_has_extension(url)(v, _BOOLEAN, {}) for v in inputs)]


_OPTIONS = {
    "userInvocationTable": {
        "resolve": {"fn": _resolve, "arity": {0: []}},
        "hasExtension": {"fn": _has_extension_fn, "arity": {1: ["String"]}},
    }
}
_HEAD = re.compile(r"(?<![\w.])(?:DomainResource|Resource)\.")


@cache
def _fhirpath(expression: str, rtype: str) -> Callable[..., list[Any]]:
    # fhirpathpy does not treat `Resource.id` as `Patient.id`; say what is meant
    return fhirpath_compile(_HEAD.sub(f"{rtype}.", expression), _R4, _OPTIONS)


def fhirpath_values(expression: str, rtype: str, resource: dict[str, Any]) -> list[Any]:
    """The values fhirpathpy finds (the reference the native closures are tested against)."""
    token = _ROOT.set(resource)
    try:
        return list(_fhirpath(expression, rtype)(resource))
    finally:
        _ROOT.reset(token)


_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_SHAPES: list[tuple[str, frozenset[str]]] = [
    ("Coding", frozenset({"system", "version", "code", "display", "userSelected"})),
    ("CodeableConcept", frozenset({"coding", "text"})),
    ("Quantity", frozenset({"value", "comparator", "unit", "system", "code"})),
    ("Money", frozenset({"value", "currency"})),
    ("Period", frozenset({"start", "end"})),
    ("Reference", frozenset({"reference", "type", "identifier", "display"})),
    ("Identifier", frozenset({"use", "type", "system", "value", "period", "assigner"})),
    ("ContactPoint", frozenset({"system", "value", "use", "rank", "period"})),
    ("HumanName", frozenset({"use", "text", "family", "given", "prefix", "suffix", "period"})),
    (
        "Address",
        frozenset(
            {"use", "type", "text", "line", "city", "district", "state", "postalCode", "country"}
            | {"period"}
        ),
    ),
    ("Timing", frozenset({"event", "repeat", "code"})),
    ("Range", frozenset({"low", "high"})),
    ("Extension", frozenset({"url"})),
]


def guess_ctx(value: Any, search_type: str) -> Ctx:
    """The FHIR type of a value fhirpathpy returned, from its JSON shape."""
    if isinstance(value, bool):
        return _BOOLEAN
    if isinstance(value, int):
        return _type_ctx("integer", "")
    if isinstance(value, str):
        guess = {"date": "dateTime", "reference": "canonical", "uri": "uri"}.get(search_type)
        return _type_ctx(guess or "string", "")
    if not isinstance(value, dict):
        return _type_ctx("decimal", "") if isinstance(value, float) else _ctx("?", None, "")
    if "resourceType" in value:
        return _ctx("Resource", None, "")
    keys = {k for k in value if k not in ("id", "extension")}
    if "url" in value and any(k.startswith("value") for k in value):
        return _type_ctx("Extension", "")
    if keys <= {"system", "value", "use", "rank", "period"} and value.get("system") in (
        _CONTACT_SYSTEMS
    ):
        return _type_ctx("ContactPoint", "")
    for name, allowed in _SHAPES:
        if keys and keys <= allowed:
            return _type_ctx(name, "")
    return _ctx("?", None, "")

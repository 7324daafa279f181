"""FHIRPath, the subset patches use, resolved to places in FHIR JSON instead of to values.

Why: a FHIRPath Patch changes the element a path names, so it needs to know where each result
lives (the object, the JSON key, the list position); fhirpathpy and `search/paths.py` return
values. The element definitions give each step its type, so choice elements answer to their
FHIRPath name (`Observation.value` finds `valueQuantity`) and lists are known as lists.

Supported: member access (the leading type name may be left out), `[n]`, `first()`, `last()`,
`extension('url')` and `where(criteria)`, where criteria compare a member path (`system`,
`period.start`) or `$this` with a literal (`'text'`, a number, `true`, `false`) by `=` or
`!=`, joined by `and`. Anything else is `Unsupported`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhir_server.resource_types import is_resource_type
from fhir_server.validation.definitions import element, primitive_types, structure_names


class PathError(ValueError):
    """A path that is not well-formed, or names an element its type does not have."""


class Unsupported(PathError):
    """Well-formed FHIRPath outside the subset patches are resolved with."""


class CannotApply(PathError):
    """An operation this resource cannot take (422, not 400): its path selects too few or too
    many elements, an index is out of range, an element is there already."""


@dataclass(eq=False, slots=True)
class Node:
    """A value in the resource and where it lives: `parent.value[key]`, or `[key][index]`.

    `base` is where its children are defined (`HumanName`, `Patient.contact`); None for a
    primitive, or a value whose type is not known. `name` is the element's FHIRPath name
    (`value` for a `valueQuantity` key).
    """

    value: Any
    base: str | None
    parent: Node | None = None
    key: str = ""
    index: int | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class Member:
    """An element of a type: its FHIRPath name, JSON key(s) with their base, and whether it
    repeats. A choice element (`value[x]`) has one key per allowed type."""

    name: str
    keys: tuple[tuple[str, str | None], ...]
    repeats: bool
    choice: bool

    def key_for(self, type_suffix: str | None) -> str | None:
        """The JSON key for a value of this type (`value` + `Quantity`); None if not allowed."""
        if not self.choice:
            return self.name
        key = self.name + (type_suffix or "")
        return key if any(k == key for k, _ in self.keys) else None

    def base_of(self, key: str) -> str | None:
        return next((base for k, base in self.keys if k == key), None)


_LONGEST_NAME = 64
"""R4's longest element names are about 40 characters; a longer one is nobody's."""


def member(base: str, name: str) -> Member | None:
    """Member `name` of the type or backbone element `base`, from the R4 definitions."""
    return _member(base, name) if len(name) <= _LONGEST_NAME else None


@lru_cache(maxsize=4096)  # names come from requests: known ones and misses, a bounded few
def _member(base: str, name: str) -> Member | None:
    found = element(f"{base}.{name}")
    if found is not None:
        if found.ref is not None:
            child = found.ref
        elif found.nested:
            child = found.path
        else:
            child = _type_base(found.types[0] if found.types else "Element")
        repeats = found.max is None or found.max > 1
        return Member(name, ((name, child),), repeats, choice=False)
    found = element(f"{base}.{name}[x]")
    if found is not None:
        keys = tuple((name + t[0].upper() + t[1:], _type_base(t)) for t in found.types)
        return Member(name, keys, repeats=False, choice=True)
    return None


def _type_base(type_: str) -> str | None:
    if type_ in ("Resource", "DomainResource"):
        return "Resource"  # resolved per value, from its resourceType
    if type_ in _PRIMITIVES or type_ not in _STRUCTURES:
        return None
    return type_


_PRIMITIVES = primitive_types()
_STRUCTURES = structure_names()


def value_base(value: Any, base: str | None) -> str | None:
    """A node's base; a contained resource's comes from its own resourceType."""
    if base != "Resource":
        return base
    kind = value.get("resourceType") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) and is_resource_type(kind) else None


def children(node: Node, name: str) -> Iterator[Node]:
    """The nodes member `name` of `node` holds, list items one by one."""
    if not isinstance(node.value, dict):
        raise Unsupported(f"'{name}' of a primitive value (its id or extensions)")
    definition = member(node.base, name) if node.base is not None else None
    if definition is None:
        raise PathError(f"{node.base or 'this element'} has no element '{name}'")
    for key, base in definition.keys:
        found = node.value.get(key)
        if isinstance(found, list):
            for index, item in enumerate(found):
                yield Node(item, value_base(item, base), node, key, index, name)
        elif found is not None:
            yield Node(found, value_base(found, base), node, key, None, name)


# -- the compiled path ---------------------------------------------------------------------

Literal = str | int | float | bool
Criterion = tuple[tuple[str, ...], str, Literal]  # member path (() is $this), '=' or '!=', value
Step = tuple[str, Any]  # (member|extension, name|url), (index, n), (first|last, None), (where, …)


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed patch path: the start name, then the steps (see `parse_path`)."""

    text: str
    start: str
    steps: tuple[Step, ...]

    def locate(self, resource: dict[str, Any]) -> list[Node]:
        """The nodes the path selects in `resource`, in document order."""
        return _run(self.steps, self._start(resource))

    def collection(self, resource: dict[str, Any]) -> tuple[Node, Member]:
        """For insert and move: the one object holding the list the path names, and the list's
        element. The list itself may be absent (empty)."""
        if self.steps:
            kind, name = self.steps[-1]
            if kind != "member":
                raise PathError(f"'{self.text}' must end with the name of a list element")
            parents = _run(self.steps[:-1], self._start(resource))
        else:
            parents, name = [_root(resource)], self.start
            if name == parents[0].base:
                raise PathError(f"'{self.text}' names the resource, not a list in it")
        if len(parents) != 1:
            raise CannotApply(f"'{self.text}' must lie in exactly one element; {len(parents)} do")
        parent = parents[0]
        if not isinstance(parent.value, dict) or parent.base is None:
            raise Unsupported(f"'{name}' of a primitive value (its id or extensions)")
        definition = member(parent.base, name)
        if definition is None:
            raise PathError(f"{parent.base} has no element '{name}'")
        if not definition.repeats:
            where = f"{parent.base}.{name}"
            raise PathError(f"'{self.text}' is not a list: {where} repeats at most once")
        return parent, definition

    def _start(self, resource: dict[str, Any]) -> list[Node]:
        root = _root(resource)
        if self.start == root.base:
            return [root]
        if is_resource_type(self.start):
            raise PathError(f"'{self.text}' starts at {self.start}; the resource is a {root.base}")
        return list(children(root, self.start))


def _root(resource: dict[str, Any]) -> Node:
    return Node(resource, value_base(resource, "Resource"))


def _run(steps: tuple[Step, ...], nodes: list[Node]) -> list[Node]:
    for kind, argument in steps:
        if kind == "member":
            nodes = [child for node in nodes for child in children(node, argument)]
        elif kind == "index":
            nodes = nodes[argument : argument + 1]
        elif kind == "first":
            nodes = nodes[:1]
        elif kind == "last":
            nodes = nodes[-1:]
        elif kind == "extension":
            found = (child for node in nodes for child in children(node, "extension"))
            nodes = [
                n for n in found if isinstance(n.value, dict) and n.value.get("url") == argument
            ]
        else:
            nodes = [node for node in nodes if all(_holds(node, c) for c in argument)]
    return nodes


def _holds(node: Node, criterion: Criterion) -> bool:
    """FHIRPath `=` and `!=` against a literal: an empty side is empty (false in where())."""
    names, operator, literal = criterion
    values = [node.value]
    if names:
        values = [n.value for n in _run(tuple(("member", name) for name in names), [node])]
    if not values:
        return False
    equal = len(values) == 1 and _equal(values[0], literal)
    return equal if operator == "=" else not equal


def _equal(value: Any, literal: Literal) -> bool:
    if isinstance(literal, bool) or isinstance(value, bool):
        return type(value) is type(literal) and value == literal
    if isinstance(literal, str):
        return isinstance(value, str) and value == literal
    return isinstance(value, int | float) and value == literal


# -- parsing -------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<number>[0-9]+(?:\.[0-9]+)?)
    | (?P<name>\$?[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)
    | (?P<symbol>!=|[.\[\]()=])
    | (?P<other>[|+\-*/&<>~!,:{}%^])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "n": "\n", "r": "\r", "t": "\t"}
_FUNCTIONS = frozenset({"first", "last", "where", "extension"})


_MAX_DIGITS = 18
"""Longer numbers are no index and no value a resource holds; `int()` of 5,000 digits fails."""


def parse_path(text: str) -> Path:
    """Parse once; PathError for what is not FHIRPath, Unsupported for what we do not do."""
    return _parsed(text) if len(text) <= 256 else _Parser(text).parse()


@lru_cache(maxsize=1024)  # paths come from requests: a bounded number of short ones
def _parsed(text: str) -> Path:
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = list(self._tokens(text))
        self.at = 0

    def _tokens(self, text: str) -> Iterator[tuple[str, str]]:
        position = 0
        while text[position:].strip():
            match = _TOKEN.match(text, position)
            if match is None:
                raise PathError(f"'{text}' is not FHIRPath (at character {position + 1})")
            kind = match.lastgroup or ""
            if kind == "other":
                raise Unsupported(f"operator '{match.group(kind)}' in '{text}'")
            yield kind, match.group(kind)
            position = match.end()

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            wanted = value or kind
            found = f"'{token[1]}'" if token else "the end"
            raise PathError(f"'{self.text}': expected {wanted}, found {found}")
        self.at += 1
        return token[1]

    def name(self) -> str:
        name = self.take("name")
        if name.startswith("$"):
            raise Unsupported(f"'{name}' outside where() in '{self.text}'")
        return name.strip("`")

    def parse(self) -> Path:
        start = self.name()
        if self.peek() == ("symbol", "("):
            raise Unsupported(f"a path that starts with the function {start}()")
        steps: list[Step] = []
        while (token := self.peek()) is not None:
            if token == ("symbol", "["):
                self.at += 1
                steps.append(("index", self.index()))
                self.take("symbol", "]")
                continue
            self.take("symbol", ".")
            name = self.name()
            if self.peek() == ("symbol", "("):
                steps.append(self.function(name))
            else:
                steps.append(("member", name))
        return Path(self.text, start, tuple(steps))

    def index(self) -> int:
        number = self.take("number")
        if "." in number or len(number) > _MAX_DIGITS:
            raise PathError(f"'{self.text}': [{number}] is not an index")
        return int(number)

    def function(self, name: str) -> Step:
        if name not in _FUNCTIONS:
            supported = ", ".join(sorted(_FUNCTIONS))
            raise Unsupported(f"the function {name}() (supported: {supported})")
        self.take("symbol", "(")
        if name == "extension":
            url = _unquote(self.take("string"))
            self.take("symbol", ")")
            return ("extension", url)
        if name != "where":
            self.take("symbol", ")")
            return (name, None)
        criteria = [self.criterion()]
        while self.peek() == ("name", "and"):
            self.at += 1
            criteria.append(self.criterion())
        self.take("symbol", ")")
        return ("where", tuple(criteria))

    def criterion(self) -> Criterion:
        names: tuple[str, ...] = ()
        if self.peek() == ("name", "$this"):
            self.at += 1
        else:
            names = (self.name(),)
            while self.peek() == ("symbol", "."):
                self.at += 1
                names = (*names, self.name())
        if self.peek() == ("symbol", "("):
            raise Unsupported(f"functions inside where() in '{self.text}'")
        token = self.peek()
        if token not in (("symbol", "="), ("symbol", "!=")):
            raise Unsupported(f"where() criteria other than `name = literal` in '{self.text}'")
        self.at += 1
        return names, token[1], self.literal()

    def literal(self) -> Literal:
        token = self.peek()
        self.at += 1
        if token is not None and token[0] == "string":
            return _unquote(token[1])
        if token is not None and token[0] == "number":
            if "." in token[1] or len(token[1]) > _MAX_DIGITS:
                return float(token[1])  # never fails: too large a number is inf
            return int(token[1])
        if token in (("name", "true"), ("name", "false")):
            return token == ("name", "true")
        raise Unsupported(f"where() compares with a literal ('text', 1, true) in '{self.text}'")


def _unquote(literal: str) -> str:
    """A FHIRPath string literal's text: quotes off, escapes (`\\'`, `\\n`) resolved."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), literal[1:-1])

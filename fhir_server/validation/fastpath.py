"""A direct evaluator for the commonest shapes of invariant and profile trigger.

Why: most rules read like `detail.empty() or reference.empty()` (cpl-3),
`(status = 'draft') or goal.exists()` or `category.coding.where(system = 'x' and
code = 'SIP').exists()`.  fhirpathpy needs 0.1-0.5 ms for each; these closures need a few
microseconds.  Anything outside this small grammar returns None and is left to fhirpathpy.
Logic is FHIRPath's three-valued logic (None is the empty collection), so the result is the
FHIRPath result.

Grammar:  implies := or ('implies' or)* ;  or := and (('or'|'xor') and)* ;
          and := eq ('and' eq)* ;
          eq := term (('=' | '!=') term)? | term 'in' '(' 'string' ('|' 'string')* ')' ;
          term := ( '(' implies ')' | [path] ['.where(' implies ')'] [ '.exists()' | '.empty()' ]
                  | 'string' | true | false ) ['.not()']
A leading type name (`Appointment.status` on Appointment) is the element itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Tri = bool | None  # FHIRPath boolean; None is the empty collection
Items = Callable[[Any], list[Any]]
Test = Callable[[Any], Tri]

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')"
    r"|(?P<fn>\.(?:exists|empty|not)\(\))"
    r"|(?P<where>\.?where\()"
    r"|(?P<op>\(|\)|\||!=|=|and\b|or\b|xor\b|implies\b|in\b)"
    r"|(?P<boolean>(?:true|false)\b)"
    r"|(?P<path>(?![A-Za-z][A-Za-z0-9_]*\()[A-Za-z][A-Za-z0-9_]*"
    r"(?:\.(?![a-z][A-Za-z0-9_]*\()[a-z][A-Za-z0-9_]*)*))"
)
_KEYWORDS = frozenset({"and", "or", "xor", "implies"})


def _children(item: Any, name: str, types: frozenset[str]) -> list[Any]:
    """FHIRPath member access on FHIR JSON: `value` finds `valueQuantity`, `_x` counts."""
    if not isinstance(item, dict):
        return []
    out: list[Any] = []
    for key, value in item.items():
        if key == name or key == "_" + name:
            pass
        elif key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            rest = key[len(name) :]
            if rest[0].lower() + rest[1:] not in types and rest not in types:
                continue
        else:
            continue
        if isinstance(value, list):
            out.extend(v for v in value if v is not None)
        elif value is not None:
            out.append(value)
    return out


def _navigate(path: str, types: frozenset[str]) -> Items:
    parts = path.split(".")

    def items(node: Any) -> list[Any]:
        current = [node]
        for part in parts:
            current = [c for item in current for c in _children(item, part, types)]
            if not current:
                break
        return current

    return items


def _not(value: Tri) -> Tri:
    return None if value is None else not value


def _or(a: Tri, b: Tri) -> Tri:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _and(a: Tri, b: Tri) -> Tri:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _implies(a: Tri, b: Tri) -> Tri:
    if a is False or b is True:
        return True
    return None if a is None or b is None else False


def _xor(a: Tri, b: Tri) -> Tri:
    return None if a is None or b is None else a != b


_BINARY = {"or": _or, "xor": _xor, "and": _and, "implies": _implies}


class _Term:
    """A parsed term: either a collection (`items`) or a boolean (`test`)."""

    __slots__ = ("items", "test")

    def __init__(self, items: Items | None = None, test: Test | None = None) -> None:
        self.items, self.test = items, test

    def as_test(self) -> Test:
        if self.test is not None:
            return self.test
        items = self.items
        assert items is not None

        def singleton(node: Any) -> Tri:  # a boolean used as a condition, e.g. `active`
            found = items(node)
            if not found:
                return None
            if len(found) == 1 and isinstance(found[0], bool):
                return found[0]
            raise ValueError("not a boolean")

        return singleton


class _Parser:
    def __init__(
        self, tokens: list[tuple[str, str]], types: frozenset[str], root: str | None
    ) -> None:
        self.tokens, self.pos, self.types, self.root = tokens, 0, types, root

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("", "")

    def take(self) -> tuple[str, str]:
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expect(self, kind: str, text: str) -> None:
        if self.take() != (kind, text):
            raise ValueError(f"expected {text}")

    def binary(self, level: int) -> _Term:
        ops = (("implies",), ("or", "xor"), ("and",))
        if level == len(ops):
            return self.eq()
        left = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in ops[level]:
            combine = _BINARY[self.take()[1]]
            a, b = left.as_test(), self.binary(level + 1).as_test()
            left = _Term(test=lambda n, a=a, b=b, f=combine: f(a(n), b(n)))
        return left

    def eq(self) -> _Term:
        left = self.term()
        if self.peek() == ("op", "in"):
            self.take()
            return self._in(left)
        if self.peek() in (("op", "="), ("op", "!=")):
            negate = self.take()[1] == "!="
            right = self.term()
            if left.items is None or right.items is None:  # booleans, e.g. app-2
                p, q = left.as_test(), right.as_test()
                return _Term(test=lambda n: _xor(p(n), q(n)) if negate else _not(_xor(p(n), q(n))))
            a, b = left.items, right.items

            def equal(node: Any) -> Tri:
                x, y = a(node), b(node)
                if not x or not y:
                    return None
                if len(x) != 1 or len(y) != 1 or type(x[0]) is not type(y[0]):
                    raise ValueError("only two strings or two booleans are compared here")
                if not isinstance(x[0], str | bool):
                    raise ValueError("only two strings or two booleans are compared here")
                return (x[0] == y[0]) != negate

            return _Term(test=equal)
        return left

    def _in(self, left: _Term) -> _Term:
        """`status in ('proposed' | 'cancelled')`: a single value among string literals."""
        self.expect("op", "(")
        allowed = set()
        while True:
            kind, text = self.take()
            if kind != "string":
                raise ValueError("in: only a list of strings")
            allowed.add(text[1:-1].replace("\\'", "'"))
            if self.take() == ("op", ")"):
                break
            if self.tokens[self.pos - 1] != ("op", "|"):
                raise ValueError("in: expected |")
        items = left.items
        if items is None:
            raise ValueError("in: left side is a boolean")

        def member(node: Any) -> Tri:
            found = items(node)
            if not found:
                return None
            if len(found) != 1:
                raise ValueError("in: several values")
            return found[0] in allowed

        return _Term(test=member)

    def path(self, text: str) -> str:
        """A path relative to the element; a leading type name is the element itself."""
        first, _, rest = text.partition(".")
        if not first[0].isupper():
            return text
        if first != self.root or not rest:
            raise ValueError(f"{first} is a type name")
        return rest

    def term(self) -> _Term:
        kind, text = self.take()
        if kind == "where":
            if text.startswith("."):
                raise ValueError("where() after nothing")
            term = self._where(_Term(items=lambda node: [node]), self.binary(0).as_test())
            self.expect("op", ")")
            return self._suffixes(term)
        if kind == "string":
            value = text[1:-1].replace("\\'", "'")
            term = _Term(items=lambda node: [value])
        elif kind == "boolean":
            flag = text == "true"
            term = _Term(items=lambda node: [flag])
        elif (kind, text) == ("op", "("):
            term = self.binary(0)
            self.expect("op", ")")
        elif kind == "path" and text not in _KEYWORDS:
            return self._suffixes(_Term(items=_navigate(self.path(text), self.types)))
        else:
            raise ValueError(f"unexpected {text}")
        return self._nots(term)

    def _suffixes(self, term: _Term) -> _Term:
        """`.where(…)`, then `.exists()` / `.empty()`, then any `.not()`."""
        if self.peek()[0] == "where" and self.peek()[1].startswith("."):
            self.take()
            term = self._where(term, self.binary(0).as_test())
            self.expect("op", ")")
        if self.peek() in (("fn", ".exists()"), ("fn", ".empty()")):
            exists = self.take()[1] == ".exists()"
            items = term.items
            if items is None:
                raise ValueError("exists() on a boolean")
            term = _Term(test=lambda n, items=items, e=exists: bool(items(n)) == e)
        return self._nots(term)

    def _nots(self, term: _Term) -> _Term:
        while self.peek() == ("fn", ".not()"):
            self.take()
            inner = term.as_test()
            term = _Term(test=lambda n, inner=inner: _not(inner(n)))
        return term

    @staticmethod
    def _where(term: _Term, condition: Test) -> _Term:
        items = term.items
        if items is None:
            raise ValueError("where() on a boolean")
        return _Term(items=lambda n: [i for i in items(n) if condition(i) is True])


def compile_simple(expression: str, types: frozenset[str], root: str | None = None) -> Test | None:
    """A closure giving the expression's boolean (None: empty), or None if unsupported.

    The closure may raise ValueError where FHIRPath semantics leave this grammar (a
    comparison of several values); callers then fall back to fhirpathpy.
    """
    tokens: list[tuple[str, str]] = []
    pos, text = 0, expression.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            return None
        kind = match.lastgroup or ""
        tokens.append((kind, match[kind].strip()))
        pos = match.end()
    parser = _Parser(tokens, types, root)
    try:
        test = parser.binary(0).as_test()
    except (ValueError, IndexError):
        return None
    if parser.pos != len(tokens):
        return None
    return test

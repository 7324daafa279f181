"""A direct evaluator for the commonest shapes of invariant, profile trigger and topic criterion.

Why: most rules read like `detail.empty() or reference.empty()` (cpl-3),
`(status = 'draft') or goal.exists()` or `category.coding.where(system = 'x' and
code = 'SIP').exists()`.  fhirpathpy needs 0.1-0.5 ms for each; these closures need a few
microseconds.  Anything outside this small grammar returns None and is left to fhirpathpy.
Logic is FHIRPath's three-valued logic (None is the empty collection), so the result is the
FHIRPath result.

Grammar:  implies := or ('implies' or)* ;  or := and (('or'|'xor') and)* ;
          and := eq ('and' eq)* ;
          eq := union (('=' | '!=' | '~' | '<' | '>' | '<=' | '>=') union)?
                | union 'in' '(' 'string' ('|' 'string')* ')' ;
          union := term ('|' term)* ;
          term := ( '(' implies ')' | [path] | 'now()' | 'string' | true | false )
                  ( '.where(' implies ')' | ".extension('url')" | '.' path )*
                  [ '.exists()' | '.empty()' ] ['.not()']*
A leading type name (`Appointment.status` on Appointment) is the element itself. A path may
start with `%name`, one of the `variables` the caller names (a subscription topic's
`%current` and `%previous`): the closure's root then carries them as keys `%name`, and
`now()` reads the root's `%now` (the caller's clock, not the wall clock). Variables and
`now()` are refused inside `where()`, whose condition sees an item, not the root.
Comparisons order two dateTimes given to the second with a zone, two dates, or two numbers;
`~` compares strings, booleans, integers and such dateTimes. Anything else raises ValueError
at evaluation, and the caller asks fhirpathpy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

Tri = bool | None  # FHIRPath boolean; None is the empty collection
Items = Callable[[Any], list[Any]]
Test = Callable[[Any], Tri]

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')"
    r"|(?P<fn>\.(?:exists|empty|not)\(\))"
    r"|(?P<where>\.?where\()"
    r"|(?P<ext>\.extension\('(?:[^'\\]|\\.)*'\))"
    r"|(?P<now>now\(\))"
    r"|(?P<op>\(|\)|\||!=|=|~|<=|>=|<|>|and\b|or\b|xor\b|implies\b|in\b)"
    r"|(?P<boolean>(?:true|false)\b)"
    r"|(?P<member>(?:\.(?![a-z][A-Za-z0-9_]*\()[a-z][A-Za-z0-9_]*)+)"
    r"|(?P<path>(?:%[a-z][A-Za-z0-9_]*|(?![A-Za-z][A-Za-z0-9_]*\()[A-Za-z][A-Za-z0-9_]*)"
    r"(?:\.(?![a-z][A-Za-z0-9_]*\()[a-z][A-Za-z0-9_]*)*))"
)
_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
_DATE = re.compile(r"\d{4}(?:-\d\d(?:-\d\d)?)?")
_ORDER = {
    "<": lambda c: c < 0,
    ">": lambda c: c > 0,
    "<=": lambda c: c <= 0,
    ">=": lambda c: c >= 0,
}
_KEYWORDS = frozenset({"and", "or", "xor", "implies"})


def _children(item: Any, name: str, types: frozenset[str]) -> list[Any]:
    """FHIRPath member access on FHIR JSON: `value` finds `valueQuantity`, `_x` counts."""
    if not isinstance(item, dict):
        return []
    if name in item and "_" + name not in item:  # the common case: no scan of the keys
        value = item[name]
        if isinstance(value, list):
            return [v for v in value if v is not None]
        return [] if value is None else [value]
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


def _single(found: list[Any], what: str) -> Any:
    if len(found) != 1:
        raise ValueError(f"{what}: several values")
    return found[0]


def _moment(value: Any) -> datetime | None:
    """A dateTime to the second with a zone (or the caller's now); None for anything else."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _INSTANT.fullmatch(value):
        return datetime.fromisoformat(value)  # Python 3.11 reads `Z`
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _order(x: Any, y: Any) -> int:
    """-1, 0 or 1 for two values this grammar orders (FHIRPath's `<` family)."""
    a, b = _moment(x), _moment(y)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    if isinstance(x, str) and isinstance(y, str):
        if len(x) == len(y) and _DATE.fullmatch(x) and _DATE.fullmatch(y):
            return (x > y) - (x < y)
    elif _number(x) and _number(y):
        return (x > y) - (x < y)
    raise ValueError("only two dateTimes, two dates or two numbers are ordered here")


def _equivalent(x: list[Any], y: list[Any]) -> bool:
    """FHIRPath `~`: empty ~ empty; strings ignore case and whitespace kind."""
    if not x or not y:
        return not x and not y
    a, b = _single(x, "~"), _single(y, "~")
    ma, mb = _moment(a), _moment(b)
    if ma is not None and mb is not None:
        return ma == mb
    if isinstance(a, str) and isinstance(b, str):
        if _DATE.match(a) or _DATE.match(b):  # a date or a partial dateTime: fhirpathpy
            raise ValueError("~ on dates")
        return re.sub(r"\s", " ", a).casefold() == re.sub(r"\s", " ", b).casefold()
    if type(a) is type(b) and isinstance(a, bool | int):
        return a == b
    raise ValueError("~ compares strings, booleans, integers and dateTimes here")


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
        self,
        tokens: list[tuple[str, str]],
        types: frozenset[str],
        root: str | None,
        variables: frozenset[str],
    ) -> None:
        self.tokens, self.pos, self.types, self.root = tokens, 0, types, root
        self.variables = variables
        self.depth = 0  # inside how many where()s: there the node is an item, not the root

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
        left = self.union()
        if self.peek() == ("op", "in"):
            self.take()
            return self._in(left)
        if self.peek()[0] == "op" and self.peek()[1] in ("~", *_ORDER):
            return self._compare(left, self.take()[1], self.union())
        if self.peek() in (("op", "="), ("op", "!=")):
            negate = self.take()[1] == "!="
            right = self.union()
            if left.items is None or right.items is None:  # booleans, e.g. app-2
                p, q = left.as_test(), right.as_test()
                return _Term(test=lambda n: _xor(p(n), q(n)) if negate else _not(_xor(p(n), q(n))))
            a, b = left.items, right.items

            def equal(node: Any) -> Tri:
                x, y = a(node), b(node)
                if not x or not y:
                    return None
                if len(x) == 1 and len(y) == 1:
                    mx, my = _moment(x[0]), _moment(y[0])
                    if mx is not None and my is not None:  # the same moment in two zones
                        return (mx == my) != negate
                if len(x) != 1 or len(y) != 1 or type(x[0]) is not type(y[0]):
                    raise ValueError("only two strings or two booleans are compared here")
                if not isinstance(x[0], str | bool):
                    raise ValueError("only two strings or two booleans are compared here")
                return (x[0] == y[0]) != negate

            return _Term(test=equal)
        return left

    def union(self) -> _Term:
        """`a | b`: both collections, duplicates dropped (FHIRPath union)."""
        left = self.term()
        while self.peek() == ("op", "|"):
            self.take()
            right = self.term()
            a, b = left.items, right.items
            if a is None or b is None:
                raise ValueError("| on a boolean")

            def both(node: Any, a: Items = a, b: Items = b) -> list[Any]:
                out: list[Any] = []
                for item in (*a(node), *b(node)):
                    if item not in out:
                        out.append(item)
                return out

            left = _Term(items=both)
        return left

    @staticmethod
    def _compare(left: _Term, op: str, right: _Term) -> _Term:
        """`~` and the orderings, on two single values (`_order`, `_equivalent`)."""
        a, b = left.items, right.items
        if a is None or b is None:
            raise ValueError(f"{op} on a boolean")
        if op == "~":
            return _Term(test=lambda n: _equivalent(a(n), b(n)))
        holds = _ORDER[op]

        def ordered(node: Any) -> Tri:
            x, y = a(node), b(node)
            if not x or not y:
                return None
            return holds(_order(_single(x, op), _single(y, op)))

        return _Term(test=ordered)

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
        if first.startswith("%"):
            if first[1:] not in self.variables or self.depth:
                raise ValueError(f"{first}: not a variable here")
            return text  # the root carries it as the key `%name`
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
            term = self._where(_Term(items=lambda node: [node]), self._condition())
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
            if term.items is not None:  # `(%previous | %current).serviceType`
                return self._suffixes(term)
        elif kind == "now":
            if "now" not in self.variables or self.depth:
                raise ValueError("now() without the caller's clock")
            return self._suffixes(_Term(items=lambda node: [node["%now"]]))
        elif kind == "path" and text not in _KEYWORDS:
            return self._suffixes(_Term(items=_navigate(self.path(text), self.types)))
        else:
            raise ValueError(f"unexpected {text}")
        return self._nots(term)

    def _condition(self) -> Test:
        """A where()'s condition, up to its closing parenthesis."""
        self.depth += 1
        condition = self.binary(0).as_test()
        self.depth -= 1
        self.expect("op", ")")
        return condition

    def _suffixes(self, term: _Term) -> _Term:
        """`.where(…)`, `.extension('url')` and member steps, then `.exists()` / `.empty()`,
        then any `.not()`."""
        while True:
            kind, text = self.peek()
            if kind == "where" and text.startswith("."):
                self.take()
                term = self._where(term, self._condition())
            elif kind in ("ext", "member") and term.items is not None:
                self.take()
                term = _Term(items=self._step(term.items, kind, text))
            else:
                break
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

    def _step(self, items: Items, kind: str, text: str) -> Items:
        if kind == "member":
            inner = _navigate(text[1:], self.types)
            return lambda n: [c for item in items(n) for c in inner(item)]
        url = text[len(".extension('") : -2].replace("\\'", "'")
        return lambda n: [
            e
            for item in items(n)
            for e in _children(item, "extension", self.types)
            if isinstance(e, dict) and e.get("url") == url
        ]

    @staticmethod
    def _where(term: _Term, condition: Test) -> _Term:
        items = term.items
        if items is None:
            raise ValueError("where() on a boolean")
        return _Term(items=lambda n: [i for i in items(n) if condition(i) is True])


def compile_simple(
    expression: str,
    types: frozenset[str],
    root: str | None = None,
    variables: frozenset[str] = frozenset(),
) -> Test | None:
    """A closure giving the expression's boolean (None: empty), or None if unsupported.
    `variables` names the `%name`s the root will carry (and "now" for `now()`).

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
    parser = _Parser(tokens, types, root, variables)
    try:
        test = parser.binary(0).as_test()
    except (ValueError, IndexError):
        return None
    if parser.pos != len(tokens):
        return None
    return test

"""JSON Patch (RFC 6902) over FHIR JSON, with JSON Pointers (RFC 6901).

Why our own: the document is small, the semantics are exact, and FHIR decimals must keep their
text (`fhirjson.Decimal`), which general-purpose libraries would turn into floats. A document
that is not a JSON Patch is 400; a patch that cannot be applied to this resource (a missing
target, an index out of range, a failed `test`) is 422, as FHIR's http.html#patch says; one
whose result would outgrow a request body (copies that double the resource) is 422
`too-costly` (`cost.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fhir_server import fhirjson
from fhir_server.errors import FhirError, error
from fhir_server.patch.cost import DEFAULT_LIMIT, Budget, TooCostly, check_result

Pointer = tuple[str, ...]

_NEEDS_VALUE = frozenset({"add", "replace", "test"})
_NEEDS_FROM = frozenset({"move", "copy"})
OPERATIONS = frozenset({"remove"} | _NEEDS_VALUE | _NEEDS_FROM)
_INDEX = re.compile(r"0|[1-9][0-9]{0,17}")
"""An array index (RFC 6901): ASCII digits, no leading zero; at most 18, so `int()` is cheap
and cannot fail (5,000 digits would) and no longer index is in range anyway."""
_BAD_ESCAPE = re.compile(r"~(?![01])")
_MISSING: Any = object()


class PointerError(ValueError):
    """A JSON Pointer that is not well-formed (RFC 6901 section 3)."""


class NotApplicable(Exception):
    """A well-formed operation that this document cannot take (becomes 422)."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation object of the patch document; `number` counts from 0 for messages."""

    number: int
    op: str
    path: Pointer
    value: Any = _MISSING
    source: Pointer = ()  # RFC 6902 `from`

    def describe(self) -> str:
        return f"JSON Patch operation {self.number} ({self.op} {format_pointer(self.path)})"


def parse_pointer(text: str) -> Pointer:
    """`/name/0/given` → ('name', '0', 'given'); `~1` is '/', `~0` is '~'; '' is the root."""
    if text == "":
        return ()
    if not text.startswith("/"):
        raise PointerError(f"JSON Pointer '{text}' must be empty or start with '/'")
    if _BAD_ESCAPE.search(text):
        raise PointerError(f"JSON Pointer '{text}' has '~' not followed by 0 or 1")
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in text[1:].split("/"))


def format_pointer(pointer: Pointer) -> str:
    return "".join("/" + token.replace("~", "~0").replace("/", "~1") for token in pointer)


def parse_json_patch(document: Any) -> list[Operation]:
    """The operations of a JSON Patch document; anything malformed is a 400 outcome."""
    if not isinstance(document, list):
        raise error(400, "invalid", "A JSON Patch document must be a JSON array of operations")
    return [_operation(number, raw) for number, raw in enumerate(document)]


def _operation(number: int, raw: Any) -> Operation:
    where = f"JSON Patch operation {number}"
    if not isinstance(raw, dict):
        raise error(400, "invalid", f"{where} must be a JSON object")
    op = raw.get("op")
    if op not in OPERATIONS:
        known = ", ".join(sorted(OPERATIONS))
        raise error(400, "invalid", f"{where}: 'op' is {op!r}; it must be one of {known}")
    path = _pointer(raw, "path", where)
    value = raw.get("value", _MISSING)
    if op in _NEEDS_VALUE and value is _MISSING:
        raise error(400, "invalid", f"{where} ({op}) has no 'value'")
    source = _pointer(raw, "from", where) if op in _NEEDS_FROM else ()
    if value is not _MISSING and fhirjson.too_deep(value):
        message = f"{where}: 'value' nests deeper than {fhirjson.MAX_DEPTH} levels"
        raise error(400, "too-costly", message)
    return Operation(number, op, path, value, source)


def _pointer(raw: dict[str, Any], member: str, where: str) -> Pointer:
    text = raw.get(member)
    if not isinstance(text, str):
        raise error(400, "invalid", f"{where} has no '{member}' string")
    try:
        return parse_pointer(text)
    except PointerError as exc:
        raise error(400, "invalid", f"{where}: {exc}") from None


def apply_json_patch(document: Any, operations: list[Operation], limit: int = DEFAULT_LIMIT) -> Any:
    """Apply the operations in order to a copy of `document`: all of them or none (422).

    `limit` bounds the size of the result's JSON, in bytes."""
    result = clone(document)
    budget = Budget.of(result, limit)
    for operation in operations:
        try:
            result = _apply(result, operation, budget)
        except NotApplicable as exc:
            raise _not_applicable(operation, str(exc)) from None
        except TooCostly as exc:
            message = f"{operation.describe()} is refused: {exc}"
            raise error(422, "too-costly", message) from None
    check_result(result, limit)  # moves can nest what no single operation measured
    return result


def _apply(document: Any, operation: Operation, budget: Budget) -> Any:
    op, path = operation.op, operation.path
    if op in ("add", "replace"):
        budget.charge(operation.value)
    if op == "add":
        return add(document, path, clone(operation.value))
    if op == "remove":
        remove(document, path)
        return document
    if op == "replace":
        return replace(document, path, clone(operation.value))
    if op == "test":
        if not json_equal(get(document, path), operation.value):
            raise NotApplicable("the value differs")
        return document
    value = get(document, operation.source)
    if op == "copy":
        budget.charge(value)  # before cloning: the clone is what would cost
        return add(document, path, clone(value))
    if path[: len(operation.source)] == operation.source and path != operation.source:
        raise NotApplicable("a value cannot be moved into one of its own children")
    remove(document, operation.source)
    return add(document, path, value)


def get(document: Any, pointer: Pointer) -> Any:
    """The value the pointer names; NotApplicable if there is none."""
    value = document
    for depth, token in enumerate(pointer):
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and _INDEX.fullmatch(token) and int(token) < len(value):
            value = value[int(token)]
        else:
            raise NotApplicable(f"{format_pointer(pointer[: depth + 1])} does not exist")
    return value


def add(document: Any, pointer: Pointer, value: Any) -> Any:
    """RFC 6902 add: set a member, or insert into an array (`-` appends); returns the root."""
    if not pointer:
        return value
    parent, token = get(document, pointer[:-1]), pointer[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        if token == "-":
            parent.append(value)
        elif _INDEX.fullmatch(token) and int(token) <= len(parent):
            parent.insert(int(token), value)
        else:
            raise NotApplicable(f"'{token}' is not an index from 0 to {len(parent)} or '-'")
    else:
        raise NotApplicable(f"{format_pointer(pointer[:-1])} is not an object or an array")
    return document


def replace(document: Any, pointer: Pointer, value: Any) -> Any:
    """RFC 6902 replace: the target must exist; a member keeps its place in its object."""
    get(document, pointer)
    if not pointer:
        return value
    parent, token = get(document, pointer[:-1]), pointer[-1]
    parent[token if isinstance(parent, dict) else int(token)] = value
    return document


def remove(document: Any, pointer: Pointer) -> None:
    if not pointer:
        raise NotApplicable("the whole resource cannot be removed")
    get(document, pointer)
    parent, token = get(document, pointer[:-1]), pointer[-1]
    if isinstance(parent, dict):
        del parent[token]
    else:
        del parent[int(token)]


def json_equal(left: Any, right: Any) -> bool:
    """RFC 6902 `test` equality: numbers by value, objects unordered, no bool/number mixing."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(v, right[k]) for k, v in left.items())
    return type(left) is type(right) and left == right


def clone(value: Any) -> Any:
    """A deep copy of parsed JSON (scalars, including `fhirjson.Decimal`, are immutable)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def _not_applicable(operation: Operation, reason: str) -> FhirError:
    return error(422, "processing", f"{operation.describe()} cannot be applied: {reason}")

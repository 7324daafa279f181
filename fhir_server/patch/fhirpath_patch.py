"""FHIRPath Patch (R4 fhirpatch.html): a Parameters resource of `operation`s, applied in order.

Why a module of its own: the document is a FHIR resource with its own rules (closed `part`
names, which parts each type needs, values given as value[x] or as a list of parts), and
every failure should point at the operation at fault (`Parameters.parameter[2].part[1]`).

Statuses: a document that is not a FHIRPath Patch (a missing or unknown part, a path that is
not FHIRPath) is 400 `invalid`; a path outside the supported subset (`locate.py`) is 400
`not-supported`; an operation this resource cannot take (its path matches no element or more
than one, an index out of range, adding a single element that exists, a value of a type the
element does not allow) is 422 `processing`. Delete of a path that matches nothing does nothing.
Values come only from the document (no operation duplicates one), so a result can outgrow
the resource by no more than the body; it is still checked once, whole, as JSON Patch's is:
422 `too-costly` when larger than a body may be or nested too deeply (`cost.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.errors import FhirError, error
from fhir_server.patch.cost import DEFAULT_LIMIT, check_result
from fhir_server.patch.json_patch import clone
from fhir_server.patch.locate import (
    CannotApply,
    Member,
    Node,
    Path,
    PathError,
    Unsupported,
    member,
    parse_path,
)

# The parts each operation type needs (R4 fhirpatch.html table); `type` and `path` always.
REQUIRED = {
    "add": ("name", "value"),
    "insert": ("value", "index"),
    "delete": (),
    "replace": ("value",),
    "move": ("source", "destination"),
}
PARTS = frozenset({"type", "path", "name", "value", "index", "source", "destination"})


@dataclass(frozen=True, slots=True)
class Operation:
    """One `operation` parameter; `number` is its position in `Parameters.parameter`."""

    number: int
    type: str
    path: Path
    positions: dict[str, int]  # part name -> its position in `part`, for error locations
    name: str | None = None
    value: dict[str, Any] | None = None  # the `value` part itself: value[x], resource or part
    index: int | None = None
    source: int | None = None
    destination: int | None = None

    def at(self, part: str | None = None) -> str:
        where = f"Parameters.parameter[{self.number}]"
        return where if part is None else f"{where}.part[{self.positions[part]}]"


def parse_fhirpath_patch(document: Any) -> list[Operation]:
    """The operations of a FHIRPath Patch Parameters resource; a malformed one is 400."""
    if not isinstance(document, dict) or document.get("resourceType") != "Parameters":
        raise error(400, "invalid", "A FHIRPath Patch body must be a Parameters resource")
    parameters = document.get("parameter", [])
    if not isinstance(parameters, list):
        raise error(400, "structure", "Parameters.parameter must be an array", "Parameters")
    return [_operation(number, raw) for number, raw in enumerate(parameters)]


def _operation(number: int, raw: Any) -> Operation:
    at = f"Parameters.parameter[{number}]"
    if not isinstance(raw, dict) or raw.get("name") != "operation":
        raise error(400, "invalid", "Each FHIRPath Patch parameter must be an 'operation'", at)
    parts = _Parts(at, raw.get("part"))
    kind = parts.primitive("type", "valueCode", str)
    if kind not in REQUIRED:
        known = " | ".join(REQUIRED)
        raise error(400, "invalid", f"Operation type {kind!r} is not one of {known}", at)
    for needed in ("path", *REQUIRED[kind]):
        if needed not in parts.found:
            raise error(400, "invalid", f"A {kind} operation needs the part '{needed}'", at)
    text = parts.primitive("path", "valueString", str)
    try:
        path = parse_path(text)
    except Unsupported as exc:
        raise error(400, "not-supported", f"Path not supported: {exc}", parts.at("path")) from None
    except PathError as exc:
        raise error(400, "invalid", str(exc), parts.at("path")) from None
    numbers = {
        name: parts.primitive(name, "valueInteger", int)
        for name in ("index", "source", "destination")
        if name in parts.found
    }
    name = parts.primitive("name", "valueString", str) if "name" in parts.found else None
    value = parts.found.get("value")
    return Operation(number, kind, path, parts.positions, name, value, **numbers)


class _Parts:
    """An operation's parts by name: each known, none twice (the profile's slicing is closed)."""

    def __init__(self, at: str, raw: Any) -> None:
        if not isinstance(raw, list):
            raise error(400, "invalid", "An operation must have parts ('type', 'path', …)", at)
        self.operation = at
        self.found: dict[str, dict[str, Any]] = {}
        self.positions: dict[str, int] = {}
        for position, part in enumerate(raw):
            name = part.get("name") if isinstance(part, dict) else None
            where = f"{at}.part[{position}]"
            if name not in PARTS:
                raise error(400, "invalid", f"Unknown operation part {name!r}", where)
            if name in self.found:
                raise error(400, "invalid", f"The part '{name}' appears twice", where)
            self.found[name], self.positions[name] = part, position

    def at(self, name: str) -> str:
        return f"{self.operation}.part[{self.positions[name]}]"

    def primitive(self, name: str, key: str, kind: type) -> Any:
        """The value[x] of a part that holds a primitive (`type`, `path`, `index`, …)."""
        if name not in self.found:
            raise error(400, "invalid", f"The operation has no part '{name}'", self.operation)
        value = self.found[name].get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            raise error(400, "invalid", f"The part '{name}' must have a {key}", self.at(name))
        if kind is int and value < 0:
            raise error(400, "invalid", f"The part '{name}' must not be negative", self.at(name))
        if kind is int and value > _MAX_INTEGER:
            message = f"The part '{name}' must be at most {_MAX_INTEGER} (a FHIR integer)"
            raise error(400, "invalid", message, self.at(name))
        return value


_MAX_INTEGER = 2**31 - 1


def apply_fhirpath_patch(
    resource: dict[str, Any], operations: list[Operation], limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """Apply the operations in order to a copy of `resource`: all of them or none.

    `limit` bounds the size of the result's JSON, in bytes."""
    result: dict[str, Any] = clone(resource)
    for operation in operations:
        try:
            _APPLY[operation.type](result, operation)
        except CannotApply as exc:
            raise _cannot(operation, str(exc)) from None
        except Unsupported as exc:
            message = f"Path not supported: {exc}"
            raise error(400, "not-supported", message, operation.at("path")) from None
        except PathError as exc:
            raise error(400, "invalid", str(exc), operation.at("path")) from None
    check_result(result, limit)
    return result


def _add(resource: dict[str, Any], op: Operation) -> None:
    target = _one(op, resource)
    if not isinstance(target.value, dict) or target.base is None:
        raise CannotApply(f"'{op.path.text}' is a primitive; '{op.name}' cannot be added to it")
    assert op.name is not None and op.value is not None
    definition = member(target.base, op.name)
    if definition is None:
        raise PathError(f"{target.base} has no element '{op.name}'")
    key, value = _typed_value(op, definition)
    if definition.repeats:
        items = target.value.setdefault(key, [])
        items.append(value)
        _companion_insert(target.value, key, len(items) - 1)
    elif any(k in target.value for k, _ in definition.keys):
        raise CannotApply(f"{target.base}.{op.name} exists already and repeats at most once")
    else:
        target.value[key] = value


def _insert(resource: dict[str, Any], op: Operation) -> None:
    parent, definition = op.path.collection(resource)
    key, value = _typed_value(op, definition)
    items = parent.value.setdefault(key, [])
    assert op.index is not None
    if op.index > len(items):
        raise CannotApply(f"index {op.index} is beyond the {len(items)} items of '{op.path.text}'")
    items.insert(op.index, value)
    _companion_insert(parent.value, key, op.index)


def _delete(resource: dict[str, Any], op: Operation) -> None:
    found = op.path.locate(resource)
    if not found:
        return
    if len(found) > 1:
        raise CannotApply(f"'{op.path.text}' matches {len(found)} elements; delete takes one")
    node = found[0]
    if node.parent is None:
        raise CannotApply("the resource itself cannot be deleted by a patch")
    _detach(node)
    parent = node.parent
    while parent.parent is not None and parent.value == {}:  # FHIR allows no empty objects
        _detach(parent)
        parent = parent.parent


def _replace(resource: dict[str, Any], op: Operation) -> None:
    node = _one(op, resource)
    if node.parent is None:
        raise CannotApply("the resource itself cannot be replaced by a patch; use update (PUT)")
    assert node.parent.base is not None
    definition = member(node.parent.base, node.name)
    assert definition is not None
    key, value = _typed_value(op, definition)
    holder = node.parent.value
    if node.index is not None:
        holder[node.key][node.index] = value
    elif key == node.key:
        holder[key] = value
    else:  # a choice element changes type: valueQuantity becomes valueString
        del holder[node.key]
        holder.pop("_" + node.key, None)
        holder[key] = value


def _move(resource: dict[str, Any], op: Operation) -> None:
    parent, definition = op.path.collection(resource)
    key = definition.keys[0][0]
    items = parent.value.get(key, [])
    assert op.source is not None and op.destination is not None
    for name, position in (("source", op.source), ("destination", op.destination)):
        if position >= len(items):
            raise CannotApply(f"{name} {position} is beyond the {len(items)} items of '{key}'")
    items.insert(op.destination, items.pop(op.source))
    companion = parent.value.get("_" + key)
    if isinstance(companion, list) and len(companion) == len(items):
        companion.insert(op.destination, companion.pop(op.source))


_APPLY = {"add": _add, "insert": _insert, "delete": _delete, "replace": _replace, "move": _move}


def _one(op: Operation, resource: dict[str, Any]) -> Node:
    found = op.path.locate(resource)
    if len(found) != 1:
        count = "no element" if not found else f"{len(found)} elements"
        raise CannotApply(f"'{op.path.text}' matches {count}; {op.type} needs exactly one")
    return found[0]


def _detach(node: Node) -> None:
    """Remove the node from its parent, with its primitive extensions (`_given`)."""
    assert node.parent is not None
    holder = node.parent.value
    companion = holder.get("_" + node.key)
    if node.index is None:
        del holder[node.key]
        holder.pop("_" + node.key, None)
        return
    items = holder[node.key]
    del items[node.index]
    if isinstance(companion, list) and node.index < len(companion):
        del companion[node.index]
    if not items or (isinstance(companion, list) and all(c is None for c in companion)):
        holder.pop("_" + node.key, None)
    if not items:
        del holder[node.key]


def _companion_insert(holder: dict[str, Any], key: str, index: int) -> None:
    """Keep a primitive list's extensions (`_given`) aligned with the list."""
    companion = holder.get("_" + key)
    if isinstance(companion, list):
        companion.insert(index, None)


def _typed_value(op: Operation, definition: Member) -> tuple[str, Any]:
    """The JSON key and value an operation's `value` part gives `definition`."""
    assert op.value is not None
    try:
        return _part_value(op.value, definition)
    except _BadValue as exc:
        status = 400 if exc.malformed else 422
        code = "invalid" if exc.malformed else "processing"
        raise error(status, code, str(exc), op.at("value")) from None


class _BadValue(Exception):
    def __init__(self, message: str, malformed: bool) -> None:
        super().__init__(message)
        self.malformed = malformed


def _part_value(part: dict[str, Any], definition: Member | None) -> tuple[str, Any]:
    """A part's value as (JSON key, JSON value): value[x] as given, `resource`, or an object
    built from nested parts (for anonymous elements such as Patient.contact)."""
    typed = [k for k in part if k.startswith("value") and k[5:6].isupper()]
    name = definition.name if definition is not None else str(part.get("name"))
    if len(typed) > 1 or (typed and ("part" in part or "resource" in part)):
        raise _BadValue(f"The value for '{name}' is given more than once", malformed=True)
    suffix = typed[0][5:] if typed else None
    if typed:
        value = clone(part[typed[0]])
    elif isinstance(part.get("resource"), dict):
        value = clone(part["resource"])
    elif isinstance(part.get("part"), list):
        value = None  # built below, once the element's type is known
    else:
        raise _BadValue(f"The value for '{name}' has no value[x], resource or part", True)
    if definition is None:
        key, base = name, None
    else:
        found = definition.key_for(suffix)
        if found is None:
            allowed = ", ".join(k for k, _ in definition.keys)
            message = f"A {suffix or 'complex'} value cannot go in '{name}' ({allowed})"
            raise _BadValue(message, malformed=False)
        key, base = found, definition.base_of(found)
    if value is None:
        value = _object(part["part"], base)
    return key, value


def _object(parts: list[Any], base: str | None) -> dict[str, Any]:
    """An element given as parts: each part one of its members (lists where they repeat)."""
    result: dict[str, Any] = {}
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise _BadValue("Each part of a complex value needs a name", malformed=True)
        definition = member(base, part["name"]) if base is not None else None
        if base is not None and definition is None:
            raise _BadValue(f"{base} has no element '{part['name']}'", malformed=False)
        key, value = _part_value(part, definition)
        if (definition is not None and definition.repeats) or key in result:
            existing = result.setdefault(key, [])
            if not isinstance(existing, list):
                result[key] = existing = [existing]
            existing.append(value)
        else:
            result[key] = value
    return result


def _cannot(op: Operation, reason: str) -> FhirError:
    return error(422, "processing", f"The {op.type} operation cannot be applied: {reason}", op.at())

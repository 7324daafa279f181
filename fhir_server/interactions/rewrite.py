"""References inside a transaction: temporary ids and conditional references made real.

An EHR sends an Encounter, a Communication and a Task that point at each other by
`urn:uuid:…` fullUrls, or at a Patient by `Patient?identifier=…`. Before any of them is
validated and stored, every `Reference.reference` of every resource, however deeply nested
(contained resources, extensions, backbone elements), is rewritten to `Type/id`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fhir_server.errors import error
from fhir_server.resource_types import is_resource_type

PLACEHOLDERS = ("urn:uuid:", "urn:oid:")  # temporary ids: only meaningful inside the bundle


def holders(value: Any) -> list[dict[str, Any]]:
    """Every object in a resource with a `reference` string (a Reference, in practice)."""
    found: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if type(item.get("reference")) is str:
                found.append(item)
            stack.extend(v for v in item.values() if type(v) is dict or type(v) is list)
        elif type(item) is list:
            stack.extend(v for v in item if type(v) is dict or type(v) is list)
    return found


def is_conditional(reference: str) -> bool:
    """`Patient?identifier=…`: a search that must find exactly one resource."""
    head, question, _ = reference.partition("?")
    return bool(question) and is_resource_type(head)


async def resolve_all(
    resource: dict[str, Any],
    mapping: dict[str, str],
    resolve: Callable[[str], Awaitable[str]],
) -> None:
    """Rewrite, in place, every reference `mapping` knows (fullUrl -> Type/id), and every
    conditional one (`resolve` searches; the answer joins `mapping`)."""
    for holder in holders(resource):
        reference = holder["reference"]
        if reference not in mapping:
            if reference.startswith(PLACEHOLDERS):
                raise error(
                    400, "not-found",
                    f"Reference '{reference}' names no entry of this transaction (fullUrl)",
                )  # fmt: skip
            if not is_conditional(reference):
                continue
            mapping[reference] = await resolve(reference)
        holder["reference"] = mapping[reference]

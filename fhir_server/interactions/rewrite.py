"""References inside a transaction: temporary ids and conditional references made real.

An EHR sends an Encounter, a Communication and a Task that point at each other by
`urn:uuid:…` fullUrls, or at a Patient by `Patient?identifier=…`. Before any of them is
validated and stored, every `Reference.reference` of every resource, however deeply nested
(contained resources, extensions, backbone elements), is rewritten to `Type/id`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fhir_server.resource_types import is_resource_type


def references(value: Any) -> set[str]:
    """Every `reference` string in a resource."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            reference = item.get("reference")
            if isinstance(reference, str):
                found.add(reference)
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return found


def is_conditional(reference: str) -> bool:
    """`Patient?identifier=…`: a search that must find exactly one resource."""
    head, question, _ = reference.partition("?")
    return bool(question) and is_resource_type(head)


def rewrite(value: Any, mapping: dict[str, str]) -> None:
    """Replace, in place, each `reference` found in `mapping` by its `Type/id`."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            reference = item.get("reference")
            if isinstance(reference, str) and reference in mapping:
                item["reference"] = mapping[reference]
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))


async def resolve_all(
    resource: dict[str, Any],
    mapping: dict[str, str],
    resolve: Callable[[str], Awaitable[str]],
) -> None:
    """Add to `mapping` the conditional references of `resource` (`resolve` searches), then
    rewrite the resource."""
    for reference in sorted(references(resource)):
        if reference not in mapping and is_conditional(reference):
            mapping[reference] = await resolve(reference)
    rewrite(resource, mapping)

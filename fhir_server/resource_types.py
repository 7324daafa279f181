"""The R4 resource types the server accepts, from the generated official definitions."""

from __future__ import annotations

from functools import cache

from fhir_server.validation import definitions


@cache
def resource_types() -> frozenset[str]:
    return definitions.resource_types()


def is_resource_type(name: str) -> bool:
    return name in resource_types()


def has_element(resource_type: str, element: str) -> bool:
    """Whether the type has a top-level element of that name (e.g. `identifier`)."""
    return definitions.element(f"{resource_type}.{element}") is not None


def element_type(resource_type: str, element: str) -> tuple[str, ...]:
    """The type codes of a top-level element (empty if the type has no such element)."""
    found = definitions.element(f"{resource_type}.{element}")
    return found.types if found is not None else ()

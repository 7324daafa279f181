"""The ``fhir.resources.R4B`` model for an R4 resource type, only where it equals R4.

Why: R4B models add typed parsing of primitives, but R4B is not R4 for every type.  The
importer (``tools/import_core_definitions.py``) compared each R4B model with the official R4
definitions and wrote the equal types to ``definitions/r4b_equal_types.json``; for any other
type this returns None and the server relies on ``check_structure`` alone.
"""

from __future__ import annotations

from functools import cache

from pydantic import BaseModel

from .definitions import r4b_differences, r4b_equal_types

__all__ = ["r4b_difference", "r4b_model"]


def r4b_model(resource_type: str) -> type[BaseModel] | None:
    """The R4B model class when it has exactly the R4 structure, else None (not cached: a
    type name can come from a request, and the cache holds only the known ones)."""
    return _model(resource_type) if resource_type in r4b_equal_types() else None


@cache
def _model(resource_type: str) -> type[BaseModel]:
    from fhir.resources.R4B import get_fhir_model_class  # heavy import, only when needed

    model: type[BaseModel] = get_fhir_model_class(resource_type)
    return model


def r4b_difference(resource_type: str) -> str | None:
    """Why the R4B model is not used for this type (first difference found), if it is not."""
    return r4b_differences().get(resource_type)

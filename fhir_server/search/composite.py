"""Composite search values: the components of one element, kept together.

Why: `Observation?code-value-quantity=http://loinc.org|8480-6$gt140` must match a systolic
value above 140, not any Observation with that code and some other value above 140.  Each
element the composite's expression reaches yields one `CompositeIndex` per combination of its
components' values, and the engines match the parts of one entry together.
"""

from __future__ import annotations

import itertools
from typing import Any

from fhir_server.search.extract import _EMIT, compile_expression
from fhir_server.search.registry import SearchParam
from fhir_server.storage.port import CompositeIndex, IndexEntry, TextIndex

MAX_COMBINATIONS = 64  # per element: a guard against pathological repetition


def composite_entries(
    resource_type: str, resource: dict[str, Any], param: SearchParam
) -> list[IndexEntry]:
    if param.expression is None:
        return []
    out: list[IndexEntry] = []
    for value, ctx in compile_expression(param.expression, resource_type, "composite")(resource):
        if not isinstance(value, dict) or ctx.base is None:
            continue
        parts: list[list[IndexEntry]] = []
        for kind, expression in param.components:
            found: list[IndexEntry] = []
            for inner, inner_ctx in compile_expression(expression, ctx.base, kind)(value):
                _EMIT[kind]("#", inner, inner_ctx, found)
            parts.append([e for e in found if e.param == "#" and not isinstance(e, TextIndex)])
        for combination in itertools.islice(itertools.product(*parts), MAX_COMBINATIONS):
            out.append(CompositeIndex(param.name, tuple(combination)))
    return out

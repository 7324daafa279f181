"""Which search parameters exist for which resource type.

This stage registers `_id` and `identifier` (what conditional interactions and clients need
first); the search issue replaces the hand list with all R4 SearchParameters generated from
the official definitions. The parser, the indexer and the CapabilityStatement all read this
one registry, so what is advertised is exactly what works.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from fhir_server.resource_types import element_type, has_element


@dataclass(frozen=True, slots=True)
class SearchParam:
    name: str
    type: str  # FHIR search param type: token, string, date, reference, ...
    documentation: str
    element: str | None = None  # top-level element the indexer reads; None: a column


ID = SearchParam("_id", "token", "Logical id of the resource")
IDENTIFIER = SearchParam(
    "identifier", "token", "A business identifier (system|value)", "identifier"
)

URL = SearchParam("url", "uri", "The canonical URL of a conformance resource", "url")

# Result parameters: they shape the response rather than select resources.
RESULT_PARAMS = frozenset({"_count", "_cursor", "_total", "_format", "_pretty"})


@cache
def search_params(resource_type: str) -> dict[str, SearchParam]:
    params = {ID.name: ID}
    if has_element(resource_type, "identifier"):
        params[IDENTIFIER.name] = IDENTIFIER
    if element_type(resource_type, "url") == ("uri",):
        params[URL.name] = URL
    return params

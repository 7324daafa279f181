"""Search values extracted on write and stored with the current version.

Reads and searches never look inside the JSON: whatever a parameter can match is computed
here once, normalised (`extract.py`, `normalise.py`), and handed to the storage engine as
typed index entries.  `index_version()` names the parameter set, so a server that learns new
parameters re-indexes what it stored before (`interactions/reindex.py`).
"""

from __future__ import annotations

import hashlib
from functools import cache, lru_cache
from typing import Any

import orjson

from fhir_server.search import extract
from fhir_server.search.composite import composite_entries
from fhir_server.search.registry import (
    SearchParam,
    all_params,
    custom_urls,
    generation,
    search_params,
)
from fhir_server.storage.port import IndexEntry, ReferenceIndex

EXTRACTOR_VERSION = "2"  # bump when extraction or normalisation changes what is stored


def index_entries(resource_type: str, resource: dict[str, Any]) -> list[IndexEntry]:
    entries = extract.index_entries(resource_type, resource)  # R4: one cached plan per type
    custom, composites = _extra(resource_type)
    if custom:
        entries += extract.index_entries(resource_type, resource, custom)
    for param in composites:
        entries += composite_entries(resource_type, resource, param)
    return entries


def reference_entries(
    resource_type: str, resource: dict[str, Any], param: str
) -> list[ReferenceIndex]:
    """The references one reference parameter (`*`: every one) finds in `resource`.

    Why: `_include` needs a page's outgoing references; evaluating only the included
    parameter costs a fraction of a full `index_entries`.
    """
    definitions = [
        p.definition
        for p in search_params(resource_type).values()
        if p.type == "reference" and (param == "*" or p.name == param)
    ]
    entries = extract.index_entries(resource_type, resource, definitions)
    return [e for e in entries if isinstance(e, ReferenceIndex)]


def _extra(resource_type: str) -> tuple[list[dict[str, Any]], list[SearchParam]]:
    """Custom (profiles/) parameters of a type, and its composite parameters."""
    return _extra_of(resource_type, generation())


@lru_cache(maxsize=1024)
def _extra_of(
    resource_type: str, _generation: int
) -> tuple[list[dict[str, Any]], list[SearchParam]]:
    """`_extra`, listed once per type while the parameters stay the same (every write
    asked again)."""
    params = search_params(resource_type).values()
    urls = custom_urls()
    custom = [p.definition for p in params if p.url in urls and p.type != "composite"]
    return custom, [p for p in params if p.type == "composite"]


@cache
def index_version() -> str:
    """A digest of every indexed parameter (type, code, expression) and the extractor."""
    described = sorted(
        (type_name, p.name, p.type, p.expression or "")
        for type_name, params in all_params().items()
        for p in params.values()
    )
    digest = hashlib.sha256(orjson.dumps([EXTRACTOR_VERSION, described])).hexdigest()
    return digest[:16]

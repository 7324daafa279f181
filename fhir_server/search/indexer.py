"""Search values extracted on write and stored with the current version.

Reads and searches never look inside the JSON: whatever a parameter can match is computed
here once, normalised, and handed to the storage engine as typed index entries.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search.registry import search_params
from fhir_server.storage.port import IndexEntry, TokenIndex


def index_entries(resource_type: str, resource: dict[str, Any]) -> list[IndexEntry]:
    entries: list[IndexEntry] = []
    for param in search_params(resource_type).values():
        if param.element is None:
            continue
        if param.type == "uri":
            value = resource.get(param.element)
            if isinstance(value, str):
                entries.append(TokenIndex(param.name, None, value))
            continue
        for value in _as_list(resource.get(param.element)):
            if isinstance(value, dict) and isinstance(value.get("value"), str):
                entries.append(TokenIndex(param.name, value.get("system"), value["value"]))
    return entries


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]

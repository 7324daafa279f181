"""Bundle assembly. Resources go in as their stored bytes (orjson.Fragment), never re-parsed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from fhir_server.interactions.versions import INSTANT_FORMAT, etag, http_date, new_id
from fhir_server.storage.port import ResourceVersion


def bundle(type: str, total: int | None, links: dict[str, str], entries: list[dict[str, Any]]):
    body: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": datetime.now(UTC).strftime(INSTANT_FORMAT)},
        "type": type,
    }
    if total is not None:
        body["total"] = total
    if links:  # FHIR JSON has no empty arrays
        body["link"] = [{"relation": relation, "url": url} for relation, url in links.items()]
    if entries:
        body["entry"] = entries
    return body


def link(base_url: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base_url}/{path}" if path else base_url
    return f"{url}?{urlencode(params)}" if params else url


def full_url(base_url: str, version: ResourceVersion) -> str:
    return f"{base_url}/{version.type}/{version.id}"


def resource_fragment(version: ResourceVersion) -> orjson.Fragment:
    assert version.json is not None
    return orjson.Fragment(version.json)


def response_status(version: ResourceVersion) -> str:
    if version.deleted:
        return "204 No Content"
    return "201 Created" if version.version == 1 else "200 OK"


def version_response(version: ResourceVersion) -> dict[str, Any]:
    return {
        "status": response_status(version),
        "etag": etag(version),
        "lastModified": version.last_updated,
    }


def last_modified_header(version: ResourceVersion) -> str:
    return http_date(version.last_updated)

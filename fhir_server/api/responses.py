"""HTTP responses carrying FHIR JSON, with the headers FHIR clients rely on."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from fhir_server import fhirjson
from fhir_server.errors import Issue, operation_outcome
from fhir_server.interactions.versions import etag, http_date
from fhir_server.storage.port import ResourceVersion

CONTENT_TYPE = "application/fhir+json; charset=utf-8"


def fhir_response(
    body: bytes | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body if body is not None else b"", status, headers, CONTENT_TYPE)


def json_response(value: Any, status: int = 200, *, pretty: bool = False, headers=None):
    return fhir_response(fhirjson.dumps(value, pretty=pretty), status, headers)


def stored_bytes(version: ResourceVersion, pretty: bool) -> bytes:
    """The stored bytes as they are; re-indented only when `_pretty=true` asks for it."""
    assert version.json is not None
    if pretty:
        return orjson.dumps(orjson.loads(version.json), option=orjson.OPT_INDENT_2)
    return version.json


def version_headers(version: ResourceVersion, base_url: str | None = None) -> dict[str, str]:
    headers = {"ETag": etag(version), "Last-Modified": http_date(version.last_updated)}
    if base_url is not None:
        headers["Location"] = f"{base_url}/{version.type}/{version.id}/_history/{version.version}"
    return headers


def outcome_response(issues: list[Issue], status: int, headers: dict[str, str] | None = None):
    return json_response(operation_outcome(issues), status, headers=headers)


def prefer(request_headers: Any) -> dict[str, str]:
    """The Prefer header as a dict: `return=minimal, handling=lenient` → two keys."""
    preferences: dict[str, str] = {}
    for header in request_headers.getlist("prefer"):
        for token in header.replace(";", ",").split(","):
            key, _, value = token.strip().partition("=")
            if key:
                preferences[key.lower()] = value.strip().strip('"')
    return preferences

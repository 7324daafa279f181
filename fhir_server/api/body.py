"""Reading request bodies with a size limit: an oversized body is refused before it is kept."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from fhir_server import fhirjson
from fhir_server.api.negotiation import check_request_format
from fhir_server.errors import error
from fhir_server.integers import parse_int


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        text = declared.strip()
        if not (text.isascii() and text.isdigit()):
            raise error(400, "invalid", "Content-Length is not a number", "Content-Length")
        size = parse_int(text)
        if size is None or size > limit:  # None: more digits than any body we take
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_resource(request: Request, limit: int) -> dict[str, Any]:
    check_request_format(request)
    return fhirjson.loads_resource(await read_body(request, limit))


def _too_large(limit: int):
    return error(413, "too-costly", f"Request body is larger than the limit of {limit} bytes")

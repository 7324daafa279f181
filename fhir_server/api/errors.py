"""Every error leaves as an OperationOutcome: ours, the router's (404/405), and the unexpected."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from fhir_server.api.responses import outcome_response
from fhir_server.errors import FhirError, Issue, internal_error
from fhir_server.storage.port import StorageError

log = logging.getLogger("fhir_server")

HTTP_ISSUE_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly"}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return outcome_response(exc.issues, exc.status, exc.headers or None)


async def _storage_error(request: Request, exc: Exception) -> Response:
    """Contention the engine reports (a lock not had in time, a version taken first): nothing
    was stored, and trying again may succeed."""
    message = f"The data is being changed concurrently ({exc}); nothing was stored: try again"
    return outcome_response([Issue("error", "conflict", message)], 409)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client left while its body was read: nobody hears the answer, nothing was done."""
    log.info("client disconnected during %s %s", request.method, request.url.path)
    issue = Issue("error", "incomplete", "The client disconnected before the body arrived")
    return outcome_response([issue], 400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_ISSUE_CODES.get(exc.status_code, "processing")
    message = {
        404: f"No FHIR interaction is served at {request.url.path}",
        405: f"{request.method} is not supported on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    headers = dict(exc.headers or {})
    return outcome_response([Issue("error", code, message)], exc.status_code, headers or None)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return outcome_response(internal_error(exc).issues, 500)

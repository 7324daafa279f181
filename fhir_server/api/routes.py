"""FHIR REST routes: HTTP in, an interaction call, HTTP out.

`ROUTES` is the registry the router is built from and the CapabilityStatement is generated
from, so `/metadata` states exactly what is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from fhir_server import fhirjson
from fhir_server.api.base_url import base_url
from fhir_server.api.body import read_body, read_resource
from fhir_server.api.negotiation import check_response_format
from fhir_server.api.responses import (
    fhir_response,
    json_response,
    outcome_response,
    prefer,
    stored_bytes,
    version_headers,
)
from fhir_server.bulk.export.endpoints import export_group, export_patient, export_system
from fhir_server.errors import Issue, clipped, error, operation_outcome
from fhir_server.interactions import crud
from fhir_server.interactions import patch as patching
from fhir_server.interactions.context import Context
from fhir_server.interactions.history import history
from fhir_server.interactions.indicator_request import read_request as read_indicator_request
from fhir_server.interactions.indicators import indicator_reports
from fhir_server.interactions.payment_liability import liability_of_stay
from fhir_server.interactions.search import search_system, search_type
from fhir_server.interactions.subsetting import parse_subset, subset
from fhir_server.interactions.transaction import process_bundle
from fhir_server.interactions.translate import read_request, translate
from fhir_server.interactions.validate import unpack, validate
from fhir_server.interactions.versions import parse_instant, version_of_etag
from fhir_server.patch import MEDIA_TYPES as PATCH_MEDIA_TYPES
from fhir_server.resource_types import is_resource_type
from fhir_server.security.principal import ANONYMOUS
from fhir_server.storage.port import ResourceVersion
from fhir_server.subscriptions import operations as subscription_operations
from fhir_server.subscriptions import websocket as subscription_websocket

Handler = Callable[[Request], Awaitable[Response]]
Level = Literal["instance", "type", "system"]


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    method: str
    handler: Handler
    interaction: str  # CapabilityStatement interaction code, or `$name` for an operation
    level: Level


def context(request: Request) -> Context:
    """The request's context; every request carries a principal (anonymous until tokens)."""
    state = request.app.state
    base = base_url(request.scope, state.settings)
    return Context(state.storage, state.settings, ANONYMOUS, base, state.validator, state.clock)


def resource_type(request: Request) -> str:
    name = request.path_params["type"]
    if not is_resource_type(name):
        raise error(404, "not-supported", f"Resource type '{name}' is not known to FHIR R4")
    return name


def query_pairs(request: Request) -> list[tuple[str, str]]:
    if not request.scope.get("query_string"):  # most reads and writes: no URL to build
        return []
    return parse_qsl(request.url.query, keep_blank_values=True)


def if_match(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if header is None:
        return None
    version = version_of_etag(header)
    if version is None:
        message = f"If-Match '{clipped(header)}' is not an ETag like W/\"3\""
        raise error(400, "invalid", message, "If-Match")
    return version


def criteria(request: Request) -> list[tuple[str, str]]:
    """The search criteria of a conditional interaction: the query less output parameters."""
    return [(k, v) for k, v in query_pairs(request) if k not in ("_format", "_pretty")]


def write_response(
    request: Request, ctx: Context, result: crud.WriteResult, pretty: bool
) -> Response:
    """Answer a create or update as `Prefer: return=` asks (representation by default)."""
    version, status = result.version, 201 if result.created else 200
    headers = version_headers(version, ctx.base_url)
    wanted = prefer(request.headers).get("return", "representation")
    if wanted == "minimal":
        return fhir_response(None, status, headers)
    if wanted == "OperationOutcome":
        verb = "Created" if status == 201 else "Updated"
        message = f"{verb} {version.type}/{version.id} version {version.version}"
        return outcome_response([Issue("information", "informational", message)], status, headers)
    return fhir_response(stored_bytes(version, pretty), status, headers)


def deleted_response(version: ResourceVersion | None, what: str) -> Response:
    if version is None:
        message = f"Nothing to delete: {what} does not exist or is deleted already"
        return outcome_response([Issue("information", "not-found", message)], 200)
    message = f"Deleted {version.type}/{version.id} (version {version.version})"
    headers = {"ETag": f'W/"{version.version}"'}
    return outcome_response([Issue("information", "informational", message)], 200, headers)


async def read(request: Request) -> Response:
    pretty = check_response_format(request)
    ctx = context(request)
    version = await crud.read(ctx, resource_type(request), request.path_params["id"])
    headers = version_headers(version)
    if _not_modified(request, version, headers):
        return Response(status_code=304, headers=headers)
    wanted = parse_subset(query_pairs(request))
    if not wanted.whole and version.json is not None:
        body = subset(fhirjson.loads_resource(version.json), wanted)
        return fhir_response(fhirjson.dumps(body, pretty=pretty), 200, headers)
    return fhir_response(stored_bytes(version, pretty), 200, headers)


async def vread(request: Request) -> Response:
    pretty = check_response_format(request)
    params = request.path_params
    version = await crud.vread(
        context(request), resource_type(request), params["id"], params["vid"]
    )
    return fhir_response(stored_bytes(version, pretty), 200, version_headers(version))


async def create(request: Request) -> Response:
    pretty = check_response_format(request)
    ctx = context(request)
    type = resource_type(request)
    resource = await read_resource(request, ctx.settings.max_body_bytes)
    conditions = criteria(request)
    if_none_exist = request.headers.get("if-none-exist")
    if if_none_exist is not None:
        conditions = parse_qsl(if_none_exist.partition("?")[2] or if_none_exist, True)
    result = await crud.create(ctx, type, resource, conditions)
    return write_response(request, ctx, result, pretty)


async def update(request: Request) -> Response:
    pretty = check_response_format(request)
    ctx = context(request)
    type = resource_type(request)
    resource = await read_resource(request, ctx.settings.max_body_bytes)
    result = await crud.update(ctx, type, request.path_params["id"], resource, if_match(request))
    return write_response(request, ctx, result, pretty)


async def conditional_update(request: Request) -> Response:
    pretty = check_response_format(request)
    ctx = context(request)
    type = resource_type(request)
    resource = await read_resource(request, ctx.settings.max_body_bytes)
    result = await crud.conditional_update(
        ctx, type, criteria(request), resource, if_match(request)
    )
    return write_response(request, ctx, result, pretty)


async def patch(request: Request) -> Response:
    pretty = check_response_format(request)
    ctx = context(request)
    type, id = resource_type(request), request.path_params["id"]
    media = patch_media_type(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    result = await patching.patch(ctx, type, id, body, media, if_match(request))
    return write_response(request, ctx, result, pretty)


async def conditional_patch(request: Request) -> Response:
    pretty = check_response_format(request)
    ctx = context(request)
    type = resource_type(request)
    media = patch_media_type(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    result = await patching.conditional_patch(
        ctx, type, criteria(request), body, media, if_match(request)
    )
    return write_response(request, ctx, result, pretty)


def patch_media_type(request: Request) -> str:
    """What the PATCH body is: JSON Patch, or FHIRPath Patch Parameters (415 otherwise)."""
    header = request.headers.get("content-type", "")
    media, *params = (part.strip() for part in header.split(";"))
    charset = dict(p.partition("=")[::2] for p in params).get("charset", "utf-8").strip('"')
    if media.lower() not in PATCH_MEDIA_TYPES or charset.lower() not in ("utf-8", "utf8"):
        raise error(
            415,
            "not-supported",
            f"Content-Type '{header}' is not a patch: send application/json-patch+json "
            "(JSON Patch) or application/fhir+json (FHIRPath Patch Parameters) in UTF-8",
        )
    return media.lower()


async def delete(request: Request) -> Response:
    check_response_format(request)
    type, id = resource_type(request), request.path_params["id"]
    version = await crud.delete(context(request), type, id, if_match(request))
    return deleted_response(version, f"{type}/{id}")


async def conditional_delete(request: Request) -> Response:
    check_response_format(request)
    type = resource_type(request)
    version = await crud.conditional_delete(context(request), type, criteria(request))
    return deleted_response(version, f"{type} matching the criteria")


async def search_get(request: Request) -> Response:
    return await _search(request, query_pairs(request))


async def search_post(request: Request) -> Response:
    """POST [type]/_search: parameters in a form body, and in the URL too."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("application/x-www-form-urlencoded", ""):
        raise error(415, "not-supported", "POST _search takes application/x-www-form-urlencoded")
    limit = request.app.state.settings.max_body_bytes
    try:
        body = (await read_body(request, limit)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(400, "invalid", f"Form body is not UTF-8 (byte {exc.start})") from None
    return await _search(request, [*query_pairs(request), *parse_qsl(body, True)])


async def _search(request: Request, params: list[tuple[str, str]]) -> Response:
    pretty = check_response_format(request)
    lenient = prefer(request.headers).get("handling") == "lenient"
    result = await search_type(context(request), resource_type(request), params, lenient=lenient)
    return json_response(result, pretty=pretty)


async def search_system_get(request: Request) -> Response:
    """GET [base]?_type=…: search across resource types."""
    pretty = check_response_format(request)
    lenient = prefer(request.headers).get("handling") == "lenient"
    result = await search_system(context(request), query_pairs(request), lenient=lenient)
    return json_response(result, pretty=pretty)


async def search_compartment(request: Request) -> Response:
    """GET [Compartment]/[id]/[type]: e.g. Patient/123/CarePlan."""
    pretty = check_response_format(request)
    compartment, id = resource_type(request), request.path_params["id"]
    target = request.path_params["target"]
    if not is_resource_type(target):
        raise error(404, "not-supported", f"Resource type '{target}' is not known to FHIR R4")
    lenient = prefer(request.headers).get("handling") == "lenient"
    result = await search_type(
        context(request),
        target,
        query_pairs(request),
        lenient=lenient,
        compartment=(compartment, id),
    )
    return json_response(result, pretty=pretty)


async def history_instance(request: Request) -> Response:
    pretty = check_response_format(request)
    type, id = resource_type(request), request.path_params["id"]
    result = await history(context(request), type, id, query_pairs(request))
    return json_response(result, pretty=pretty)


async def history_type(request: Request) -> Response:
    pretty = check_response_format(request)
    result = await history(context(request), resource_type(request), None, query_pairs(request))
    return json_response(result, pretty=pretty)


async def history_system(request: Request) -> Response:
    pretty = check_response_format(request)
    result = await history(context(request), None, None, query_pairs(request))
    return json_response(result, pretty=pretty)


async def validate_type(request: Request) -> Response:
    return await _validate(request, None)


async def validate_instance(request: Request) -> Response:
    return await _validate(request, request.path_params["id"])


async def _validate(request: Request, id: str | None) -> Response:
    pretty = check_response_format(request)
    ctx = context(request)
    type = resource_type(request)
    body = await _operation_body(request, ctx) or {}
    resource, mode, profile = unpack(body, query_pairs(request))
    issues = await validate(ctx, type, id, resource, mode, profile)
    return json_response(operation_outcome(issues), 200, pretty=pretty)


async def _operation_body(request: Request, ctx: Context) -> dict[str, Any] | None:
    """An operation's body: read (size-capped) on POST; a GET has its parameters in the query."""
    if request.method != "POST":
        return None
    return await read_resource(request, ctx.settings.max_body_bytes)


async def translate_type(request: Request) -> Response:
    return await _translate(request, None)


async def translate_instance(request: Request) -> Response:
    return await _translate(request, request.path_params["id"])


async def _translate(request: Request, id: str | None) -> Response:
    """`$translate`: parameters in the query (GET) or a Parameters body (POST)."""
    pretty = check_response_format(request)
    ctx = context(request)
    ask = read_request(ctx, query_pairs(request), await _operation_body(request, ctx))
    return json_response(await translate(ctx, ask, id), 200, pretty=pretty)


_CONDITIONAL_READ = frozenset({b"if-none-match", b"if-modified-since"})


def _not_modified(request: Request, version: ResourceVersion, headers: dict[str, str]) -> bool:
    """Conditional read: If-None-Match (ETag) or If-Modified-Since (second precision)."""
    if not any(name in _CONDITIONAL_READ for name, _ in request.scope["headers"]):
        return False  # the common read: no header lookups
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        return headers["ETag"] in (tag.strip() for tag in none_match.split(",")) or (
            none_match.strip() == "*"
        )
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        threshold = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False  # an unreadable date is ignored, as RFC 9110 says
    if threshold.tzinfo is None:  # `-0000`: "UTC, zone unknown" (RFC 5322)
        threshold = threshold.replace(tzinfo=UTC)
    return parse_instant(version.last_updated).replace(microsecond=0) <= threshold


async def payment_liability(request: Request) -> Response:
    """`Encounter/[id]/$payment-liability` (R-DIS-09)."""
    pretty = check_response_format(request)
    result = await liability_of_stay(context(request), request.path_params["id"])
    return json_response(result, 200, pretty=pretty)


async def indicators_system(request: Request) -> Response:
    """`[base]/$indicators` (R-IND-01): the indicators over all the data."""
    return await _indicators(request, None)


async def indicators_organization(request: Request) -> Response:
    """`Organization/[id]/$indicators` (R-IND-01): the indicators of one organisation."""
    return await _indicators(request, request.path_params["id"])


async def _indicators(request: Request, id: str | None) -> Response:
    """Parameters in the query (GET) or a Parameters body (POST, query too)."""
    pretty = check_response_format(request)
    ctx = context(request)
    body = await _operation_body(request, ctx)
    ask = read_indicator_request(ctx, query_pairs(request), body)
    return json_response(await indicator_reports(ctx, ask, id), 200, pretty=pretty)


async def _subscription_call(request: Request) -> tuple[bool, Context, list[tuple[str, str]]]:
    """What each Subscription operation reads first: the response format, the context and
    its parameters (query and Parameters body together)."""
    pretty = check_response_format(request)
    ctx = context(request)
    body = await _operation_body(request, ctx)
    return pretty, ctx, subscription_operations.operation_params(query_pairs(request), body)


async def subscription_status(request: Request) -> Response:
    """`Subscription/$status` and `Subscription/[id]/$status` (Backport IG)."""
    pretty, ctx, params = await _subscription_call(request)
    id = request.path_params.get("id")
    if id is not None:
        crud.check_id(id)
    result = await subscription_operations.status(ctx, request.app.state.topics, id, params)
    return json_response(result, 200, pretty=pretty)


async def subscription_events(request: Request) -> Response:
    """`Subscription/[id]/$events`: retained notifications replayed (Backport IG)."""
    pretty, ctx, params = await _subscription_call(request)
    id = request.path_params["id"]
    crud.check_id(id)
    result = await subscription_operations.events(ctx, request.app.state.topics, id, params)
    return json_response(result, 200, pretty=pretty)


async def subscription_binding_token(request: Request) -> Response:
    """`Subscription/$get-ws-binding-token` and `Subscription/[id]/$get-ws-binding-token`."""
    pretty, ctx, params = await _subscription_call(request)
    ids = [i for k, v in params if k == "id" for i in v.split(",") if i]
    for id in ids:
        crud.check_id(id, "Parameters.parameter('id')")
    state = request.app.state
    result = await subscription_websocket.binding_token(
        ctx, state.websockets, state.topics, request.path_params.get("id"), ids
    )
    return json_response(result, 200, pretty=pretty)


async def bundle_post(request: Request) -> Response:
    """`POST [base]`: a batch or transaction Bundle; the response Bundle says what happened."""
    pretty = check_response_format(request)
    ctx = context(request)
    body = await read_resource(request, ctx.settings.max_bundle_bytes)
    return json_response(await process_bundle(ctx, body), 200, pretty=pretty)


ROUTES: tuple[Route, ...] = (
    Route("/", "POST", bundle_post, "transaction", "system"),
    Route("", "POST", bundle_post, "transaction", "system"),
    # Before `/{type}` and `/{type}/{id}/{target}`, which would take `$indicators` as a type
    # or a compartment type.
    Route("/$indicators", "GET", indicators_system, "$indicators", "system"),
    Route("/$indicators", "POST", indicators_system, "$indicators", "system"),
    Route(
        "/Organization/{id}/$indicators",
        "GET",
        indicators_organization,
        "$indicators",
        "instance",
    ),
    Route(
        "/Organization/{id}/$indicators",
        "POST",
        indicators_organization,
        "$indicators",
        "instance",
    ),
    # Bulk Data `$export` (its status and file URLs are `bulk.export.endpoints.ENDPOINTS`).
    *(
        Route(path, method, handler, "$export", level)
        for path, handler, level in (
            ("/$export", export_system, "system"),
            ("/Patient/$export", export_patient, "type"),
            ("/Group/{id}/$export", export_group, "instance"),
        )
        for method in ("GET", "POST")
    ),
    # Subscriptions (Backport IG): before `/{type}/{id}` and `/{type}/{id}/{target}` too.
    *(
        Route(path, method, handler, name, level)
        for path, handler, name, level in (
            ("/Subscription/$status", subscription_status, "$status", "type"),
            ("/Subscription/{id}/$status", subscription_status, "$status", "instance"),
            ("/Subscription/{id}/$events", subscription_events, "$events", "instance"),
            (
                "/Subscription/$get-ws-binding-token",
                subscription_binding_token,
                "$get-ws-binding-token",
                "type",
            ),
            (
                "/Subscription/{id}/$get-ws-binding-token",
                subscription_binding_token,
                "$get-ws-binding-token",
                "instance",
            ),
        )
        for method in ("GET", "POST")
    ),
    Route("/{type}/$validate", "POST", validate_type, "$validate", "type"),
    Route("/{type}/{id}/$validate", "POST", validate_instance, "$validate", "instance"),
    Route("/{type}/{id}/$validate", "GET", validate_instance, "$validate", "instance"),
    # Before `/{type}/{id}` and `/{type}/{id}/{target}`, which would take `$translate` as an id
    # or a compartment type.
    Route("/ConceptMap/$translate", "GET", translate_type, "$translate", "type"),
    Route("/ConceptMap/$translate", "POST", translate_type, "$translate", "type"),
    Route("/ConceptMap/{id}/$translate", "GET", translate_instance, "$translate", "instance"),
    Route("/ConceptMap/{id}/$translate", "POST", translate_instance, "$translate", "instance"),
    Route(
        "/Encounter/{id}/$payment-liability",
        "GET",
        payment_liability,
        "$payment-liability",
        "instance",
    ),
    Route("/_history", "GET", history_system, "history-system", "system"),
    Route("/", "GET", search_system_get, "search-system", "system"),
    Route("", "GET", search_system_get, "search-system", "system"),
    Route("/{type}/_history", "GET", history_type, "history-type", "type"),
    Route("/{type}/_search", "POST", search_post, "search-type", "type"),
    Route("/{type}/{id}/_history/{vid}", "GET", vread, "vread", "instance"),
    Route("/{type}/{id}/_history", "GET", history_instance, "history-instance", "instance"),
    Route("/{type}/{id}", "GET", read, "read", "instance"),
    Route("/{type}/{id}/{target}", "GET", search_compartment, "search-type", "type"),
    Route("/{type}/{id}", "PUT", update, "update", "instance"),
    Route("/{type}/{id}", "PATCH", patch, "patch", "instance"),
    Route("/{type}/{id}", "DELETE", delete, "delete", "instance"),
    Route("/{type}", "GET", search_get, "search-type", "type"),
    Route("/{type}", "POST", create, "create", "type"),
    Route("/{type}", "PUT", conditional_update, "update", "type"),
    Route("/{type}", "PATCH", conditional_patch, "patch", "type"),
    Route("/{type}", "DELETE", conditional_delete, "delete", "type"),
)

# What the conditional and versioning features of the handlers above support, for /metadata.
RESOURCE_FEATURES = {
    "versioning": "versioned-update",
    "readHistory": True,
    "updateCreate": True,
    "conditionalCreate": True,
    "conditionalRead": "full-support",
    "conditionalUpdate": True,
    "conditionalDelete": "single",
}

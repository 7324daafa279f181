"""`POST [base]` with a batch or transaction Bundle (R4 http.html#transaction).

A transaction is all or nothing: its writes run in one unit of work (one SQLite transaction;
on MongoDB one multi-document transaction, or the engine's buffered fallback), in the order
the spec prescribes (DELETE, POST, PUT/PATCH), after every identity is settled and every
`urn:uuid:` and conditional reference rewritten to `Type/id`. Any failing entry fails the
whole bundle, with an OperationOutcome that names the entry. Its GET entries run after the
commit and answer in place. A batch runs each entry on its own and answers each in place.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import FhirError, clipped, error, internal_error, operation_outcome
from fhir_server.integers import parse_int
from fhir_server.interactions import crud
from fhir_server.interactions.bundle_entries import ORDER, Entry, at_entry, read_entries
from fhir_server.interactions.bundles import bundle, resource_fragment
from fhir_server.interactions.context import Context
from fhir_server.interactions.patch import conditional_patch, patch, patch_version
from fhir_server.interactions.rewrite import resolve_all
from fhir_server.interactions.search import search_type
from fhir_server.interactions.subsetting import parse_subset
from fhir_server.interactions.versions import etag, stored_version
from fhir_server.patch import JSON_PATCH, parse_patch
from fhir_server.search.parser import parse_search
from fhir_server.sip.process import check_gates, gates_deferred
from fhir_server.storage.port import ResourceVersion, StorageError, UnitOfWork, VersionConflict

log = logging.getLogger("fhir_server")


@dataclass(slots=True)
class _Plan:
    """A write entry's settled target: the id it writes, or the version it found."""

    id: str | None
    found: ResourceVersion | None = None  # conditional create that matched: nothing written


async def process_bundle(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("resourceType") != "Bundle":
        raise error(400, "invalid", "POST to the base expects a Bundle", "Bundle")
    kind = body.get("type")
    if kind not in ("transaction", "batch"):
        raise error(
            400, "not-supported", f"Bundle.type '{kind}': only batch and transaction are "
            "processed here", "Bundle.type",
        )  # fmt: skip
    entries = read_entries(body, ctx.base_url, ctx.settings.max_bundle_entries)
    _limit_searches(entries, ctx.settings.max_batch_searches)
    if kind == "batch":
        return bundle("batch-response", None, {}, [await _batch_entry(ctx, e) for e in entries])
    for entry in entries:
        if isinstance(entry, FhirError):
            raise entry
    checked: list[Entry] = entries  # type: ignore[assignment]
    for entry in checked:
        if entry.method in ("GET", "HEAD"):
            _check_read(ctx, entry)
    return bundle("transaction-response", None, {}, await _transaction(ctx, checked))


def _limit_searches(entries: list[Entry | FhirError], limit: int) -> None:
    searches = sum(
        1 for e in entries if isinstance(e, Entry) and e.method in ("GET", "HEAD") and e.id is None
    )
    if searches > limit:
        raise error(
            413, "too-costly", f"The bundle has {searches} search entries; the limit is {limit}",
            "Bundle.entry",
        )  # fmt: skip


# -- transaction ---------------------------------------------------------------------------


async def _transaction(ctx: Context, entries: list[Entry]) -> list[dict[str, Any]]:
    responses: dict[int, dict[str, Any]] = {}
    writes = sorted((e for e in entries if ORDER[e.method] < 3), key=lambda e: ORDER[e.method])
    for entry in writes:
        crud.check_writable(ctx, entry.type)
    try:
        async with ctx.storage.unit_of_work() as uow:
            plans: dict[int, _Plan] = {}
            mapping: dict[str, str] = {}  # fullUrl -> Type/id
            written: dict[tuple[str, str], int] = {}
            for entry in writes:
                plan = await _guard(entry, _identify(ctx, uow, entry))
                plans[entry.index] = plan
                if plan.id is not None:
                    first = written.setdefault((entry.type, plan.id), entry.index)
                    if first != entry.index:
                        raise at_entry(entry.index, error(
                            400, "invalid", f"Bundle.entry[{first}] and [{entry.index}] both "
                            f"write {entry.type}/{plan.id}",
                        ))  # fmt: skip
                    if entry.full_url:
                        mapping[entry.full_url] = f"{entry.type}/{plan.id}"
            with gates_deferred() as written_versions:
                for entry in writes:
                    step = _apply(ctx, uow, entry, plans[entry.index], mapping)
                    responses[entry.index] = await _guard(entry, step)
            for version, resource in written_versions:  # the process's gates, on the whole
                entry_of = written[(version.type, version.id)]
                await _guard(entries[entry_of], check_gates(ctx, uow, version, resource))
    except VersionConflict:
        raise error(409, "conflict", "A resource in the transaction was changed concurrently; "
                    "nothing was stored: try again") from None  # fmt: skip
    for entry in entries:
        if entry.index not in responses:  # GET and HEAD: after the commit, each in place
            responses[entry.index] = await _answer(ctx, entry)
    return [responses[i] for i in range(len(entries))]


def _check_read(ctx: Context, entry: Entry) -> None:
    """What a GET/HEAD entry asks is checked before the writes commit: its failing to parse
    fails the transaction while nothing is stored yet. What it finds is answered in place."""
    try:
        if entry.id is None:
            settings = ctx.settings
            criteria = entry.criteria or []
            parse_search(
                entry.type,
                criteria,
                default_count=settings.default_page_size,
                max_count=settings.max_page_size,
            )
            parse_subset(criteria)
        elif entry.version is not None and parse_int(entry.version) is None:
            message = f"Version '{clipped(entry.version)}' is not a version number"
            raise error(404, "not-found", message)
    except FhirError as failure:
        raise at_entry(entry.index, failure) from None


async def _guard(entry: Entry, step: Any) -> Any:
    try:
        return await step
    except FhirError as failure:
        raise at_entry(entry.index, failure) from None


async def _identify(ctx: Context, uow: UnitOfWork, entry: Entry) -> _Plan:
    """The id an entry writes, conditional criteria searched inside the unit of work."""
    if entry.method == "POST":
        if entry.if_none_exist:
            query = crud.criteria_query(entry.type, entry.if_none_exist)
            found = await crud.match_one(ctx, uow, query, "create")
            if found is not None:
                return _Plan(found.id, found)
        return _Plan(uow.mint(entry.type))
    if entry.id is not None:
        return _Plan(entry.id)
    query = crud.criteria_query(entry.type, entry.criteria or [])
    found = await crud.match_one(ctx, uow, query, entry.method.lower())
    if found is not None:
        return _Plan(found.id, found if entry.method == "DELETE" else None)
    if entry.method == "PUT":
        body_id = (entry.resource or {}).get("id")
        if body_id is not None:
            crud.check_id(str(body_id), f"{entry.type}.id")
        return _Plan(str(body_id) if body_id is not None else uow.mint(entry.type))
    if entry.method == "PATCH":
        raise error(404, "not-found", f"PATCH {entry.type}: no resource matches the criteria")
    return _Plan(None)  # a conditional delete that matches nothing: nothing to do


async def _apply(
    ctx: Context, uow: UnitOfWork, entry: Entry, plan: _Plan, mapping: dict[str, str]
) -> dict[str, Any]:
    if entry.method == "DELETE":
        if plan.id is None:
            return {"response": {"status": "204 No Content"}}
        current = await uow.current(entry.type, plan.id)
        if entry.if_match is not None and (current is None or current.version != entry.if_match):
            raise crud.precondition_failed(entry.type, plan.id, entry.if_match)
        deleted = await crud.delete_current(uow, current, ctx)
        if deleted is None:
            return {"response": {"status": "204 No Content"}}
        return _response(deleted, "204 No Content")
    if plan.found is not None:  # conditional create that found its resource
        return _response(plan.found, "200 OK")
    assert plan.id is not None and entry.resource is not None
    resource = entry.resource

    async def conditional(reference: str) -> str:
        return await _resolve_reference(ctx, uow, reference)

    await resolve_all(resource, mapping, conditional)  # also in a FHIRPath Patch's values
    if entry.method == "PATCH":
        current = await uow.current(entry.type, plan.id)
        if current is None:
            raise error(404, "not-found", f"Resource {entry.type}/{plan.id} is not known")
        document = parse_patch(*patch_body(resource))
        patched = await patch_version(ctx, uow, current, document, entry.if_match)
        return _response(patched.version, "200 OK")
    if entry.method == "POST":
        crud.accept(ctx, resource, entry.type)
        version = stored_version(resource, entry.type, plan.id, None, "POST")
        await crud.store(ctx, uow, version, resource)
        return _response(version, "201 Created")
    if entry.id is not None and resource.get("id") != entry.id:
        raise error(
            400, "invalid", f"Resource id '{resource.get('id')}' must equal the url's id "
            f"'{entry.id}'", f"{entry.type}.id",
        )  # fmt: skip
    resource = {**resource, "id": plan.id}
    crud.accept(ctx, resource, entry.type)
    result = await crud.put_version(ctx, uow, entry.type, plan.id, resource, entry.if_match)
    return _response(result.version, "201 Created" if result.created else "200 OK")


async def _resolve_reference(ctx: Context, uow: UnitOfWork, reference: str) -> str:
    """`Patient?identifier=…` -> `Patient/id`: exactly one match, else the transaction fails."""
    type, _, query = reference.partition("?")
    try:
        parsed = parse_search(type, parse_qsl(query, keep_blank_values=True))
    except FhirError as failure:
        raise error(400, "invalid", f"Conditional reference '{reference}': {failure}") from None
    matches = await uow.find(replace(parsed.query, total=False), ctx.access)
    if not matches:
        raise error(400, "not-found", f"Conditional reference '{reference}' matches no resource")
    if len(matches) > 1:
        raise error(
            412, "multiple-matches",
            f"Conditional reference '{reference}' matches {len(matches)} resources; it must "
            "match exactly one",
        )  # fmt: skip
    return f"{type}/{matches[0].id}"


def _response(version: ResourceVersion, status: str) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status}
    if not version.deleted:
        response["location"] = f"{version.type}/{version.id}/_history/{version.version}"
    response["etag"] = etag(version)
    response["lastModified"] = version.last_updated
    return {"response": response}


# -- batch and reads -------------------------------------------------------------------------


async def _batch_entry(ctx: Context, entry: Entry | FhirError) -> dict[str, Any]:
    """One batch entry on its own: its response, or its failure as an outcome.

    Entries before it may have committed, so even a defect of ours is answered in its entry
    (logged, as status 500 there) and never fails the bundle: the response must say what
    was stored.
    """
    try:
        if isinstance(entry, FhirError):
            raise entry
        return await _run_alone(ctx, entry)
    except FhirError as failure:
        return _failed(failure)
    except StorageError as exc:  # contention: this entry stored nothing, a retry may succeed
        return _failed(error(409, "conflict", f"Changed concurrently ({exc}); try again"))
    except Exception as exc:
        return _unexpected(exc, getattr(entry, "index", -1))


async def _run_alone(ctx: Context, entry: Entry) -> dict[str, Any]:
    if entry.method in ("GET", "HEAD"):
        return await _answer(ctx, entry, raising=True)
    if entry.method == "DELETE":
        if entry.id is not None:
            deleted = await crud.delete(ctx, entry.type, entry.id, entry.if_match)
        else:
            deleted = await crud.conditional_delete(ctx, entry.type, entry.criteria or [])
        if deleted is None:
            return {"response": {"status": "204 No Content"}}
        return _response(deleted, "204 No Content")
    assert entry.resource is not None
    if entry.method == "PATCH":
        body, media = patch_body(entry.resource)
        if entry.id is not None:
            patched = await patch(ctx, entry.type, entry.id, body, media, entry.if_match)
        else:
            criteria, if_match = entry.criteria or [], entry.if_match
            patched = await conditional_patch(ctx, entry.type, criteria, body, media, if_match)
        return _response(patched.version, "200 OK")
    if entry.method == "POST":
        result = await crud.create(ctx, entry.type, entry.resource, entry.if_none_exist or [])
    elif entry.id is not None:
        result = await crud.update(ctx, entry.type, entry.id, entry.resource, entry.if_match)
    else:
        result = await crud.conditional_update(
            ctx, entry.type, entry.criteria or [], entry.resource, entry.if_match
        )
    return _response(result.version, "201 Created" if result.created else "200 OK")


async def _answer(ctx: Context, entry: Entry, raising: bool = False) -> dict[str, Any]:
    """A GET/HEAD entry: the resource or searchset in `resource`, or its failure in place."""
    try:
        if entry.id is None:
            found: Any = await search_type(ctx, entry.type, entry.criteria or [], lenient=False)
            out: dict[str, Any] = {"response": {"status": "200 OK"}}
        else:
            if entry.version is not None:
                version = await crud.vread(ctx, entry.type, entry.id, entry.version)
            else:
                version = await crud.read(ctx, entry.type, entry.id)
            found = resource_fragment(version)
            out = _response(version, "200 OK")
        if entry.method == "GET":
            out["resource"] = found
        return out
    except FhirError as failure:
        if raising:
            raise
        return _failed(at_entry(entry.index, failure))
    except Exception as exc:
        if raising:
            raise
        return _unexpected(exc, entry.index)  # after the commit: the writes stand


def patch_body(resource: dict[str, Any]) -> tuple[Any, str]:
    """A PATCH entry's document: FHIRPath Patch `Parameters`, or a `Binary` holding a JSON
    Patch (`contentType` application/json-patch+json, base64 `data`)."""
    if resource.get("resourceType") == "Parameters":
        return resource, "application/fhir+json"
    if resource.get("resourceType") == "Binary" and resource.get("contentType") == JSON_PATCH:
        try:
            return base64.b64decode(str(resource.get("data", "")), validate=True), JSON_PATCH
        except binascii.Error:
            raise error(400, "invalid", "Binary.data is not base64", "Binary.data") from None
    raise error(
        400, "invalid", "A PATCH entry holds Parameters (FHIRPath Patch) or a Binary with "
        f"contentType {JSON_PATCH}", "Bundle.entry.resource",
    )  # fmt: skip


def _unexpected(exc: Exception, index: int) -> dict[str, Any]:
    log.exception("unexpected error in Bundle.entry[%d]", index)
    return _failed(internal_error(exc))


def _failed(failure: FhirError) -> dict[str, Any]:
    status = f"{failure.status} {HTTPStatus(failure.status).phrase}"
    return {"response": {"status": status, "outcome": operation_outcome(failure.issues)}}

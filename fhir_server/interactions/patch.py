"""patch and conditional patch (FHIR R4 http.html#patch): change part of the current version.

Why read inside the unit of work: a patch is computed from the version it changes, so the
read, the patch, the validation and the write must see the same version; the engine's unique
(type, id, version) catches a writer that got in between, and the patch is then re-applied
to the newer version (unless If-Match pinned the old one: 412).

Semantics (HAPI FHIR's, where the specification leaves a choice):
- PATCH never creates: 404 for an unknown resource, 410 for a deleted one; conditional PATCH
  with no match is 404, with several 412 (as conditional update and delete).
- The result is validated exactly as an update; any error in it is 422 (the document was
  well-formed, its outcome is not an acceptable resource), and nothing is stored.
- A patch must not change `resourceType` or `id`: 422 `processing` at that element.
- A patch whose result would be larger than a request body may be (`max_body_bytes`) is 422
  `too-costly`: it could not have been PUT, and copies could otherwise grow it without bound.
- A patch that changes nothing (only `test` operations, a delete that matched nothing) makes
  no new version: 200 with the current one, as HAPI's JPA server does for an unchanged update
  (`suppressUpdatesWithNoChange`, on by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_server import fhirjson
from fhir_server.errors import FhirError, error
from fhir_server.interactions.context import Context
from fhir_server.interactions.crud import (
    WriteResult,
    accept,
    check_id,
    check_writable,
    concurrent_change,
    criteria_query,
    gone,
    match_one,
    precondition_failed,
    retried,
    store,
)
from fhir_server.interactions.versions import stored_version
from fhir_server.patch import Patch, parse_patch
from fhir_server.storage.port import ResourceVersion, UnitOfWork, VersionConflict


async def patch(
    ctx: Context, type: str, id: str, body: bytes, media_type: str, if_match: int | None
) -> WriteResult:
    """PATCH [type]/[id]: apply the body's patch to the current version."""
    check_writable(ctx, type)
    check_id(id)
    document = parse_patch(body, media_type)

    async def step(uow: UnitOfWork) -> WriteResult:
        current = await uow.current(type, id)
        if current is None:
            raise error(404, "not-found", f"Resource {type}/{id} is not known")
        return await patch_version(ctx, uow, current, document, if_match)

    return await retried(ctx, type, id, if_match, step)


async def conditional_patch(
    ctx: Context,
    type: str,
    criteria: Sequence[tuple[str, str]],
    body: bytes,
    media_type: str,
    if_match: int | None,
) -> WriteResult:
    """PATCH [type]?criteria: patch the one resource the criteria match."""
    check_writable(ctx, type)
    query = criteria_query(type, criteria)
    document = parse_patch(body, media_type)
    try:
        async with ctx.storage.unit_of_work() as uow:
            match = await match_one(ctx, uow, query, "patch")
            if match is None:
                raise error(404, "not-found", f"No {type} resource matches the criteria")
            return await patch_version(ctx, uow, match, document, if_match)
    except VersionConflict:
        raise concurrent_change(f"{type} matching the criteria") from None


async def patch_version(
    ctx: Context,
    uow: UnitOfWork,
    current: ResourceVersion,
    document: Patch,
    if_match: int | None,
) -> WriteResult:
    """Patch `current` (read in `uow`), validate the result and store it as the next version."""
    type, id = current.type, current.id
    if current.json is None:
        raise gone(current)
    if if_match is not None and current.version != if_match:
        raise precondition_failed(type, id, if_match)
    resource = fhirjson.loads_resource(current.json)
    patched = document(resource, limit=ctx.settings.max_body_bytes)
    _check_identity(patched, type, id)
    if fhirjson.dumps(patched) == fhirjson.dumps(resource):
        return WriteResult(current, created=False)
    try:
        accept(ctx, patched, type)
    except FhirError as failure:
        raise FhirError(422, failure.issues, failure.headers) from None
    version = stored_version(patched, type, id, current, "PATCH")
    await store(ctx, uow, version, patched)
    return WriteResult(version, created=False)


def _check_identity(patched: dict[str, Any], type: str, id: str) -> None:
    if not isinstance(patched, dict) or patched.get("resourceType") != type:
        raise error(422, "processing", f"A patch must not change the resourceType {type}")
    if patched.get("id") != id:
        raise error(
            422,
            "processing",
            f"A patch must not change the id: '{patched.get('id')}' is not '{id}'",
            f"{type}.id",
        )

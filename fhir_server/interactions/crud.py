"""read, vread, create, update, delete — plain and conditional (FHIR R4 http.html).

Every write runs in one unit of work. Conditional interactions lock their criteria first and
search inside the same unit of work, so two concurrent conditional creates for the same
identifier make one resource. Optimistic locking (If-Match) compares inside the unit of work;
the engine's unique (type, id, version) catches the writer that lost a race.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fhir_server.errors import FhirError, clipped, error
from fhir_server.integers import parse_int
from fhir_server.interactions.context import Context
from fhir_server.interactions.swedish_ids import normalise_identifiers
from fhir_server.interactions.versions import deleted_version, stored_version
from fhir_server.search.indexer import index_entries
from fhir_server.search.parser import criteria_key, parse_search
from fhir_server.search.query import SearchQuery
from fhir_server.sip.process import on_write
from fhir_server.storage.port import ResourceVersion, UnitOfWork, VersionConflict
from fhir_server.subscriptions import events as subscriptions

ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
MAX_ATTEMPTS = 5
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: ResourceVersion
    created: bool


def check_id(id: str, *expression: str) -> None:
    if not ID_RE.fullmatch(id):
        raise error(400, "invalid", f"'{id}' is not a valid resource id", *expression)


async def read(ctx: Context, type: str, id: str) -> ResourceVersion:
    check_id(id)
    version = await ctx.storage.read(type, id, ctx.access)
    if version is None:
        raise error(404, "not-found", f"Resource {type}/{id} is not known")
    if version.deleted:
        raise gone(version)
    return version


async def vread(ctx: Context, type: str, id: str, version_id: str) -> ResourceVersion:
    check_id(id)
    number = parse_int(version_id)
    if number is None:
        message = f"Version '{clipped(version_id)}' of {type}/{id} is not known"
        raise error(404, "not-found", message)
    version = await ctx.storage.vread(type, id, number, ctx.access)
    if version is None:
        raise error(404, "not-found", f"Version {version_id} of {type}/{id} is not known")
    if version.deleted:
        raise gone(version)
    return version


async def create(
    ctx: Context, type: str, resource: dict[str, Any], criteria: Sequence[tuple[str, str]] = ()
) -> WriteResult:
    """Create with a server-assigned id; with criteria (If-None-Exist) only if none match."""
    check_writable(ctx, type)
    accept(ctx, resource, type)
    query = criteria_query(type, criteria) if criteria else None
    async with ctx.storage.unit_of_work() as uow:
        if query is not None:
            existing = await match_one(ctx, uow, query, "create")
            if existing is not None:
                return WriteResult(existing, created=False)
        version = stored_version(resource, type, uow.mint(type), None, "POST")
        await store(ctx, uow, version, resource)
    return WriteResult(version, created=True)


async def update(
    ctx: Context, type: str, id: str, resource: dict[str, Any], if_match: int | None
) -> WriteResult:
    """PUT [type]/[id]: update, or create with the client's id when it does not exist."""
    check_writable(ctx, type)
    check_id(id)
    accept(ctx, resource, type)
    if resource.get("id") != id:
        raise error(
            400,
            "invalid",
            f"Resource id '{resource.get('id')}' must equal the URL's id '{id}'",
            f"{type}.id",
        )
    return await retried(
        ctx, type, id, if_match, lambda uow: put_version(ctx, uow, type, id, resource, if_match)
    )


async def conditional_update(
    ctx: Context,
    type: str,
    criteria: Sequence[tuple[str, str]],
    resource: dict[str, Any],
    if_match: int | None,
) -> WriteResult:
    """PUT [type]?criteria: update the one match, or create when nothing matches."""
    check_writable(ctx, type)
    accept(ctx, resource, type)
    query = criteria_query(type, criteria)
    body_id = resource.get("id")
    if body_id is not None:
        check_id(str(body_id), f"{type}.id")
    try:
        async with ctx.storage.unit_of_work() as uow:
            match = await match_one(ctx, uow, query, "update")
            if match is not None and body_id is not None and body_id != match.id:
                raise error(
                    400,
                    "invalid",
                    f"Resource id '{body_id}' differs from the id "
                    f"'{match.id}' of the resource the criteria match",
                    f"{type}.id",
                )
            id = match.id if match is not None else body_id or uow.mint(type)
            resource = {**resource, "id": id}
            return await put_version(ctx, uow, type, id, resource, if_match)
    except VersionConflict:
        raise concurrent_change(f"{type} matching the criteria") from None


async def delete(ctx: Context, type: str, id: str, if_match: int | None) -> ResourceVersion | None:
    """DELETE [type]/[id]: a deleted version; None when there was nothing to delete."""
    check_writable(ctx, type)
    check_id(id)

    async def step(uow: UnitOfWork) -> ResourceVersion | None:
        current = await uow.current(type, id)
        if if_match is not None and (current is None or current.version != if_match):
            raise precondition_failed(type, id, if_match)
        return await delete_current(uow, current, ctx)

    return await retried(ctx, type, id, if_match, step)


async def conditional_delete(
    ctx: Context, type: str, criteria: Sequence[tuple[str, str]]
) -> ResourceVersion | None:
    """DELETE [type]?criteria: deletes the one match (single mode); 412 for several."""
    check_writable(ctx, type)
    query = criteria_query(type, criteria)
    try:
        async with ctx.storage.unit_of_work() as uow:
            return await delete_current(uow, await match_one(ctx, uow, query, "delete"), ctx)
    except VersionConflict:
        raise concurrent_change(f"{type} matching the criteria") from None


async def put_version(
    ctx: Context,
    uow: UnitOfWork,
    type: str,
    id: str,
    resource: dict[str, Any],
    if_match: int | None,
) -> WriteResult:
    current = await uow.current(type, id)
    if if_match is not None and (current is None or current.version != if_match):
        raise precondition_failed(type, id, if_match)
    method = "PUT"
    version = stored_version(resource, type, id, current, method)
    await store(ctx, uow, version, resource)
    return WriteResult(version, created=current is None or current.deleted)


async def store(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, resource: dict[str, Any]
) -> None:
    """Every write of a resource's new version: the process's rules first (gates may refuse,
    obligations open and close in the same unit of work), then the version and its index,
    then the subscription topics it fires (read against the version it replaces)."""
    watched = subscriptions.watches(ctx, version.type)
    previous = await uow.current(version.type, version.id) if watched else None
    await on_write(ctx, uow, version, resource)
    index = index_entries(version.type, resource)
    await uow.put(version, index)
    if watched:
        await subscriptions.on_write(
            ctx, uow, version.type, previous, version, resource, index=index
        )


async def delete_current(
    uow: UnitOfWork, current: ResourceVersion | None, ctx: Context | None = None
) -> ResourceVersion | None:
    """Delete the current version; with `ctx`, the delete fires the topics watching it."""
    if current is None or current.deleted:
        return None
    version = deleted_version(current)
    await uow.put(version, ())
    if ctx is not None:
        await subscriptions.on_write(ctx, uow, version.type, current, version, None)
    return version


def accept(ctx: Context, resource: dict[str, Any], type: str) -> None:
    """What every write does before storing: Swedish person numbers to their stored form,
    then validation (R4 and profiles; FhirError if refused); a Subscription must be one the
    server can honour (422 naming the element) and its status is the server's to set."""
    normalise_identifiers(resource)
    ctx.validator.check(resource, type)
    if type == "Subscription":
        subscriptions.check_subscription(ctx, resource)


async def retried(
    ctx: Context,
    type: str,
    id: str,
    if_match: int | None,
    step: Callable[[UnitOfWork], Awaitable[T]],
) -> T:
    """`step` in a unit of work, run again when another writer took the version first.

    With If-Match the client pinned that version, so losing the race is 412 at once.
    """
    for _ in range(MAX_ATTEMPTS):
        try:
            async with ctx.storage.unit_of_work() as uow:
                return await step(uow)
        except VersionConflict:
            if if_match is not None:
                raise precondition_failed(type, id, if_match) from None
    raise concurrent_change(f"{type}/{id}")


def criteria_query(type: str, criteria: Sequence[tuple[str, str]]) -> SearchQuery:
    parsed = parse_search(type, criteria)
    if not parsed.query.where:
        raise error(400, "invalid", "A conditional interaction needs search criteria")
    return parsed.query


async def match_one(
    ctx: Context, uow: UnitOfWork, query: SearchQuery, interaction: str
) -> ResourceVersion | None:
    await uow.lock(criteria_key(query))
    matches = await uow.find(query, ctx.access)
    if len(matches) > 1:
        raise error(
            412,
            "multiple-matches",
            f"Conditional {interaction}: {len(matches)} "
            f"{query.type} resources match the criteria; they must match at most one",
        )
    return matches[0] if matches else None


def check_writable(ctx: Context, type: str) -> None:
    """Writes obey the principal's access filter as reads do."""
    if not ctx.access.allows(type):
        raise error(403, "forbidden", f"Writing {type} resources is not allowed")


def concurrent_change(what: str) -> FhirError:
    return error(409, "conflict", f"{what} is being changed concurrently; try again")


def precondition_failed(type: str, id: str, if_match: int) -> FhirError:
    return error(
        412, "conflict", f"If-Match version {if_match} is not the current version of {type}/{id}"
    )


def gone(version: ResourceVersion) -> FhirError:
    failure = error(
        410,
        "deleted",
        f"Resource {version.type}/{version.id} was deleted (version {version.version})",
    )
    failure.headers["ETag"] = f'W/"{version.version}"'
    return failure

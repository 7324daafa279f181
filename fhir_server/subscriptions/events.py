"""The write path's side of subscriptions: topic events into the outbox, Subscriptions checked.

Why in the writer's unit of work: an event is appended with the data that caused it
(`uow.add_event`), so a rollback leaves none and the commit orders it (`seq`); the dispatcher
fans events out later. Topics are static (the conformance resources), loaded once per
conformance set, so a write of a type no topic watches costs a dict lookup or two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.storage.port import IndexEntry, ResourceVersion, UnitOfWork
from fhir_server.subscriptions.matching import events_for
from fhir_server.subscriptions.model import SubscriptionSpec, parse_subscription, requested_status
from fhir_server.subscriptions.topics import Topics, load_topics

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context
    from fhir_server.sip.clock import Clock
    from fhir_server.validation.conformance import Conformance

_loaded: dict[int, tuple[Conformance, Topics]] = {}
"""Topics per conformance set (by identity; the validator, and so its conformance, is built
once per set of profile directories)."""


def topics_of(conformance: Conformance) -> Topics:
    """The topics of a conformance set, loaded on first use."""
    found = _loaded.get(id(conformance))
    if found is None or found[0] is not conformance:
        found = (conformance, load_topics(conformance))
        _loaded[id(conformance)] = found
    return found[1]


_served: list[tuple[Topics, Clock]] = []
"""The topics and clock of the app that serves (`serve`): the server's own writes (the SIP
process's Tasks and EpisodeOfCares, the obligation sweep) have no request context to name
them."""


def serve(topics: Topics, clock: Clock) -> None:
    _served[:] = [(topics, clock)]


async def on_server_write(
    uow: UnitOfWork,
    previous: ResourceVersion | None,
    version: ResourceVersion,
    resource: dict[str, Any],
    index: Sequence[IndexEntry],
) -> None:
    """The server's own write fires the topics like a client's: an obligation Task is an
    event like any other write."""
    if _served:
        topics, clock = _served[0]
        await _append(topics, clock, uow, version.type, previous, version, resource, index)


def watches(ctx: Context, type: str) -> bool:
    """Whether some topic triggers on writes of `type` (then a write reads its previous
    version for the criteria)."""
    return bool(topics_of(ctx.validator.conformance).triggers(type))


async def on_write(
    ctx: Context,
    uow: UnitOfWork,
    type: str,
    previous: ResourceVersion | None,
    version: ResourceVersion,
    resource: dict[str, Any] | None,
    *,
    index: Sequence[IndexEntry] | None = None,
) -> None:
    """Append the topic events of one write: `previous` is the version it replaced (None or
    deleted: a create), `version` the one it stored, `resource` its content (None: a delete).
    `index` is the stored version's index entries, when the caller has them."""
    topics = topics_of(ctx.validator.conformance)
    await _append(topics, ctx.clock, uow, type, previous, version, resource, index)


async def _append(
    topics: Topics,
    clock: Clock,
    uow: UnitOfWork,
    type: str,
    previous: ResourceVersion | None,
    version: ResourceVersion,
    resource: dict[str, Any] | None,
    index: Sequence[IndexEntry] | None,
) -> None:
    """The events of one write, client's or server's, into the unit of work's outbox."""
    if not topics.triggers(type):
        return
    before = _content(previous)
    current = None if resource is None else _stored(resource, version)
    now = clock.now()
    for event in events_for(topics, type, before, current, version, current_index=index, now=now):
        await uow.add_event(event)


def check_subscription(ctx: Context, resource: dict[str, Any]) -> SubscriptionSpec:
    """A client's Subscription write: refused (422) unless the server can honour it; its
    status becomes what a client may ask for (`model.requested_status`)."""
    spec = parse_subscription(resource, topics_of(ctx.validator.conformance), ctx.settings)
    resource["status"] = requested_status(spec.status)
    return spec


def _content(version: ResourceVersion | None) -> dict[str, Any] | None:
    if version is None or version.json is None:
        return None
    return orjson.loads(version.json)


def _stored(resource: dict[str, Any], version: ResourceVersion) -> dict[str, Any]:
    """The content as stored (id and meta set as `stored_version` sets them), without
    parsing the stored bytes again."""
    meta = resource.get("meta")
    meta = {**(meta if isinstance(meta, dict) else {}), "versionId": str(version.version)}
    meta["lastUpdated"] = version.last_updated
    return {**resource, "resourceType": version.type, "id": version.id, "meta": meta}

"""Document shapes, keys and indexes of the MongoDB engine, shared by reads and writes.

`resources` holds one document per resource (its current version plus the `idx` array of
search values); `history` holds one document per version, keyed `{type}/{id}/{version}` so
that the unique `_id` decides which writer gets a version number. `locks` holds leases.
The subscriptions' outbox (see `outbox`): `topic_events` (`_id` = seq, from the `counters`
document `topic_events`), `subscription_states` (`_id` = Subscription id), `notifications`
(`_id` = `{subscription}/{number}`), `leases` (named leases: the one dispatcher).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bson import Binary

from fhir_server.search.mongo import index_document, sort_keys
from fhir_server.storage.port import IndexEntry, ResourceVersion, TopicEvent

RESOURCES = "resources"
HISTORY = "history"
LOCKS = "locks"
META = "meta"  # small key/value facts about the stored data, e.g. the index version
TOPIC_EVENTS = "topic_events"
SUBSCRIPTION_STATES = "subscription_states"
NOTIFICATIONS = "notifications"
COUNTERS = "counters"
LEASES = "leases"
EVENT_COUNTER = "topic_events"  # the `counters` document whose `seq` numbers topic events

# Everything a ResourceVersion needs; leaves out `idx`, which can be large.
VERSION_FIELDS: dict[str, int] = {
    "type": 1,
    "id": 1,
    "version": 1,
    "last_updated": 1,
    "method": 1,
    "json": 1,
}

# The one total order of history listings (newest first); the keyset cursor follows it.
HISTORY_SORT: list[tuple[str, int]] = [
    ("last_updated", -1),
    ("type", -1),
    ("id", -1),
    ("version", -1),
]

# (collection, keys, options). Named explicitly so `open()` is idempotent.
INDEXES: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = [
    (RESOURCES, [("type", 1), ("id", 1)], {"name": "type_id"}),
    (
        RESOURCES,
        [("type", 1), ("idx.p", 1), ("idx.s", 1), ("idx.c", 1)],
        {"name": "type_idx_system"},
    ),
    (RESOURCES, [("type", 1), ("idx.p", 1), ("idx.c", 1)], {"name": "type_idx_code"}),
    # strings, text, uris (`v`); ranges of dates, numbers, quantities (`lo`, `hi`);
    # references by target (`t`, `i`) and by url (`u`).
    (RESOURCES, [("type", 1), ("idx.p", 1), ("idx.v", 1)], {"name": "type_idx_value"}),
    (RESOURCES, [("type", 1), ("idx.p", 1), ("idx.e", 1)], {"name": "type_idx_exact"}),
    (
        RESOURCES,
        [("type", 1), ("idx.p", 1), ("idx.lo", 1), ("idx.hi", 1)],
        {"name": "type_idx_range"},
    ),
    (
        RESOURCES,
        [("type", 1), ("idx.p", 1), ("idx.i", 1), ("idx.t", 1)],
        {"name": "type_idx_target"},
    ),
    (RESOURCES, [("idx.i", 1), ("idx.t", 1), ("type", 1)], {"name": "idx_referrers"}),
    (RESOURCES, [("type", 1), ("idx.p", 1), ("idx.u", 1)], {"name": "type_idx_url"}),
    (HISTORY, HISTORY_SORT, {"name": "time_type_id_version"}),
    (HISTORY, [("type", 1), ("last_updated", -1)], {"name": "type_time"}),
    (HISTORY, [("type", 1), ("id", 1), ("version", -1)], {"name": "type_id_version"}),
    # TTL: the server eventually removes abandoned leases; takeover does not wait for it.
    (LOCKS, [("expires_at", 1)], {"name": "lease_ttl", "expireAfterSeconds": 0}),
    # A subscription's notifications by number ($events, delivery); retention by event.
    (
        NOTIFICATIONS,
        [("subscription", 1), ("number", 1)],
        {"name": "subscription_number", "unique": True},
    ),
    (NOTIFICATIONS, [("seq", 1)], {"name": "seq"}),
    (TOPIC_EVENTS, [("at", 1)], {"name": "at"}),  # retention (and the collection exists)
]


def resource_key(type: str, id: str) -> str:
    return f"{type}/{id}"


def history_key(type: str, id: str, version: int) -> str:
    return f"{type}/{id}/{version}"


def history_document(version: ResourceVersion) -> dict[str, Any]:
    v = version
    return {
        "_id": history_key(v.type, v.id, v.version),
        "type": v.type,
        "id": v.id,
        "version": v.version,
        "last_updated": v.last_updated,
        "method": v.method,
        "json": None if v.json is None else Binary(v.json),
        "deleted": v.deleted,
    }


def current_document(version: ResourceVersion, index: Sequence[IndexEntry]) -> dict[str, Any]:
    """The `resources` document; a deleted version keeps no search values."""
    document = history_document(version)
    document["_id"] = resource_key(version.type, version.id)
    document["idx"] = [] if version.deleted else index_documents(index)
    document["sort"] = sort_keys(document["idx"])
    return document


def index_documents(index: Sequence[IndexEntry]) -> list[dict[str, Any]]:
    return [index_document(entry) for entry in index]


def event_document(event: TopicEvent, seq: int) -> dict[str, Any]:
    e = event
    return {
        "_id": seq,
        "topic": e.topic,
        "focus_type": e.focus_type,
        "focus_id": e.focus_id,
        "focus_version": e.focus_version,
        "interaction": e.interaction,
        "at": e.at,
    }


def to_event(document: Mapping[str, Any]) -> TopicEvent:
    d = document
    return TopicEvent(
        topic=d["topic"],
        focus_type=d["focus_type"],
        focus_id=d["focus_id"],
        focus_version=int(d["focus_version"]),
        interaction=d["interaction"],
        at=d["at"],
        seq=int(d["_id"]),
    )


def to_version(document: Mapping[str, Any]) -> ResourceVersion:
    raw = document["json"]
    return ResourceVersion(
        type=document["type"],
        id=document["id"],
        version=int(document["version"]),
        last_updated=document["last_updated"],
        method=document["method"],
        json=None if raw is None else bytes(raw),
    )


def utc_now() -> datetime:
    """Naive UTC, as BSON dates round-trip without tz_aware (and as mongomock compares)."""
    return datetime.now(UTC).replace(tzinfo=None)

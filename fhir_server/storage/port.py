"""The storage port: the one async interface every engine implements.

Interactions talk only to this module's types, never to an engine (Medplum's `FhirRepository`
idea). The port is deliberately small: reads that serve stored bytes, paged history and search,
and a unit of work through which every write goes. The unit of work is also where later stages
record subscription events and audit entries, so they commit or roll back with the data.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from fhir_server.search.query import SearchQuery

Method = Literal["POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    """One stored version of one resource.

    `json` holds the exact bytes served to clients (meta.versionId and meta.lastUpdated already
    set), so reads never re-serialise. A delete is a version too: `deleted` is true and `json`
    is None.
    """

    type: str
    id: str
    version: int
    last_updated: str  # FHIR instant in UTC with microseconds: sortable as text
    method: Method
    json: bytes | None

    @property
    def deleted(self) -> bool:
        return self.json is None


# Search values, precomputed on write and stored with the current version (one row or
# embedded entry each).  `fhir_server.search.extract` produces them; the engines store and
# match them; nothing else looks inside a resource's JSON to search.


@dataclass(frozen=True, slots=True)
class TokenIndex:
    """A token: `system|code` (Coding, Identifier, ContactPoint, code, boolean, id...)."""

    param: str
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class TextIndex:
    """Text behind a token for `:text` (CodeableConcept.text, Coding.display), normalised."""

    param: str
    value: str


@dataclass(frozen=True, slots=True)
class StringIndex:
    """A string: `value` normalised (case and accents folded) and `exact` as written."""

    param: str
    value: str
    exact: str


@dataclass(frozen=True, slots=True)
class DateIndex:
    """A date/dateTime/instant/Period as the instant range it covers, in UTC.

    `low`/`high` are fixed-width ISO texts (`2026-03-01T00:00:00.000000Z`), so they compare
    correctly as strings on both engines; an open Period end is `9999-…`, an open start `0001-…`.
    """

    param: str
    low: str
    high: str


@dataclass(frozen=True, slots=True)
class NumberIndex:
    """A number (or a Quantity's value) as the range its precision implies: 100 -> [99.5, 100.5]."""

    param: str
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class QuantityIndex:
    """A Quantity: value range plus system, code and unit (each may be None)."""

    param: str
    low: float
    high: float
    system: str | None
    code: str | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class ReferenceIndex:
    """A reference: local target (type, id, version) or, for others, the absolute/canonical url."""

    param: str
    type: str | None
    id: str | None
    version: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class UriIndex:
    """A uri/url/canonical value as written (`:above`/`:below` compare prefixes)."""

    param: str
    value: str


@dataclass(frozen=True, slots=True)
class CompositeIndex:
    """One combination of a composite parameter's components, found in the same element
    (e.g. an Observation.component's code and value); `parts[i]` is component i."""

    param: str
    parts: tuple[IndexEntry, ...]


IndexEntry = (
    CompositeIndex
    | TokenIndex
    | TextIndex
    | StringIndex
    | DateIndex
    | NumberIndex
    | QuantityIndex
    | ReferenceIndex
    | UriIndex
)


@dataclass(frozen=True, slots=True)
class AccessFilter:
    """The storage-level predicate that limits what a principal's queries can see.

    Built by `fhir_server.security` from the request's principal; every read and search takes
    one. `resource_types=None` means every type.
    """

    resource_types: frozenset[str] | None = None

    def allows(self, resource_type: str) -> bool:
        return self.resource_types is None or resource_type in self.resource_types


@dataclass(frozen=True, slots=True)
class HistoryCursor:
    """Keyset position in a history listing (newest first): stable while data changes."""

    last_updated: str
    type: str
    id: str
    version: int


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    type: str | None = None  # None: system level
    id: str | None = None  # None: type (or system) level
    since: str | None = None  # FHIR instant, inclusive
    count: int = 50
    before: HistoryCursor | None = None


@dataclass(slots=True)
class Page:
    """One page of versions plus what the Bundle needs around it."""

    items: list[ResourceVersion]
    total: int | None
    has_more: bool = False
    # Sorted searches: the last item's sort values, for a keyset `next` position.
    last_key: list[Any] | None = None
    # In a keyset order other than by id (sorted, or a date walk): `next` uses `last_key`.
    keyed: bool = False


class StorageError(Exception):
    """Base for storage failures the interactions layer turns into FHIR outcomes."""


class VersionConflict(StorageError):
    """Another writer created this (type, id, version) first."""


class LockTimeout(StorageError):
    """A conditional interaction could not get its lock in time."""


# The subscriptions' outbox (issue 13): topic events appended with the write that caused them,
# fanned out by the one dispatcher to each subscription's numbered notifications.

Interaction = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class TopicEvent:
    """A write that fired a SubscriptionTopic; `seq` (global, commit order) is assigned by
    the engine when the unit of work commits."""

    topic: str  # the topic's canonical url
    focus_type: str
    focus_id: str
    focus_version: int  # the version the write made (a delete's version for a delete)
    interaction: Interaction
    at: str  # FHIR instant of the write (the version's last_updated)
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Notification:
    """One topic event as one subscription's event number `number`
    (eventsSinceSubscriptionStart: 1, 2, 3, … without gaps)."""

    subscription: str  # Subscription id
    number: int
    event: TopicEvent


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """Where a subscription's delivery stands (kept by the outbox, not in the resource)."""

    subscription: str
    topic: str
    start_seq: int  # topic events with a greater seq are this subscription's
    number: int  # notifications fanned out to it so far
    delivered: int  # the highest number delivered, 0 if none
    failures: int  # consecutive failed attempts
    next_attempt: str | None  # FHIR instant; None: as soon as there is something to send
    last_error: str | None
    last_sent: str | None  # the last successful send (for heartbeats)


@dataclass(frozen=True, slots=True)
class Progress:
    """One change of a subscription's delivery state, as `Outbox.record` writes it:
    `delivered` only moves forward and None leaves it (and `last_sent`) as it is;
    `failures`, `next_attempt` and `last_error` are set as given."""

    subscription: str
    failures: int = 0
    next_attempt: str | None = None
    last_error: str | None = None
    delivered: int | None = None
    last_sent: str | None = None


class Outbox(Protocol):
    """`Storage.outbox`: what the dispatcher reads and records. Only the holder of the
    `subscriptions` lease fans out and records, so these need no further locking."""

    async def last_seq(self) -> int: ...

    async def events_after(self, seq: int, limit: int = 500) -> list[TopicEvent]: ...

    async def cursor(self) -> int:
        """The seq up to which events are fanned out (0 at first)."""

    async def fan_out(
        self, after: int, cursor: int, notifications: list[tuple[str, TopicEvent]]
    ) -> bool:
        """Atomically, if the cursor is still `after`: each (subscription id, event) becomes
        the subscription's next number, in list order, and the cursor becomes `cursor`. A
        subscription without a state is skipped. False, and nothing written, when the cursor
        moved: a dispatcher that stalled past its lease must not number events its successor
        numbered already."""

    async def start(self, subscription: str, topic: str, start_seq: int) -> SubscriptionState:
        """The subscription's state, created if absent (an existing one is returned as is)."""

    async def state(self, subscription: str) -> SubscriptionState | None: ...

    async def states(self) -> list[SubscriptionState]: ...

    async def stop(self, subscription: str) -> None:
        """Drop the subscription's state and notifications."""

    async def notifications(
        self, subscription: str, since: int, until: int | None = None, limit: int = 100
    ) -> list[Notification]:
        """Retained notifications with since < number <= until, in number order."""

    async def record(self, progress: Sequence[Progress]) -> None:
        """Update delivery states, in order, in one write (the dispatcher batches a round's
        deliveries: one transaction, not one per notification); a subscription the outbox
        does not track is left out."""

    async def prune(self, before: str) -> int:
        """Drop events older than the instant `before` that every subscription has
        delivered, with their notifications; how many events went."""

    async def take_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Acquire or renew `name` for `seconds`; False while another owner holds it."""

    async def release_lease(self, name: str, owner: str) -> None: ...


def lease_owner() -> str:
    """A lease owner name unique to this process and its taker (host, pid, a random part):
    what `Outbox.take_lease` compares across processes and machines."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Minted(set[tuple[str, str]]):
    """The (type, id) a unit of work minted or derived from a minted id: what every engine's
    `UnitOfWork.mint` and `derive` keep, and what `search.overlay.scoped_to` asks about."""

    def mint(self, type: str) -> str:
        id = str(uuid.uuid4())
        self.add((type, id))
        return id

    def derive(self, type: str, id: str, source: str) -> str:
        if tuple(source.split("/", 1)) in self:
            self.add((type, id))
        return id


class UnitOfWork(Protocol):
    """An atomic write scope: everything put through it commits together or not at all.

    Leaving the `async with` block normally commits; an exception rolls back.
    """

    async def lock(self, key: str) -> None:
        """Serialise interactions that share `key` (e.g. a conditional create's criteria)
        across concurrent requests and processes until this unit of work ends."""

    def mint(self, type: str) -> str:
        """A new id, drawn at random, for a resource of `type` this unit of work creates.
        Nothing stored refers to it, so a search that must refer to it is answered from
        this unit of work's own writes (`search.overlay.scoped_to`), without the database."""

    def derive(self, type: str, id: str, source: str) -> str:
        """`id`, which the server computes from the reference `source` ("Type/id") for a
        resource of `type`: when this unit of work minted `source`, nobody could compute it
        before, so it counts as minted too. Returns `id`."""

    async def add_event(self, event: TopicEvent) -> None:
        """Append a topic event to the outbox with this unit of work: a rollback drops it,
        the commit gives it its `seq`."""

    async def current(self, type: str, id: str) -> ResourceVersion | None:
        """The current version (deleted or not) as this unit of work sees it."""

    async def find(self, query: SearchQuery, access: AccessFilter) -> list[ResourceVersion]:
        """Current, non-deleted versions matching `query`, as this unit of work sees them."""

    async def put(self, version: ResourceVersion, index: Sequence[IndexEntry]) -> None:
        """Store a new version and make it current with its search index values.

        Raises VersionConflict when (type, id, version) exists already.
        """

    async def reindex(self, type: str, id: str, index: Sequence[IndexEntry]) -> None:
        """Replace the search values of the current version without a new version (used
        when the server learns new search parameters)."""

    async def meta(self, key: str) -> str | None:
        """A stored fact about the data (e.g. which search index version it carries)."""

    async def set_meta(self, key: str, value: str) -> None: ...


class Storage(Protocol):
    """An engine: SQLite (embedded default) or MongoDB (production)."""

    name: str
    outbox: Outbox

    async def open(self) -> None:
        """Connect and create schema and indexes (idempotent)."""

    async def close(self) -> None: ...

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]: ...

    async def read(self, type: str, id: str, access: AccessFilter) -> ResourceVersion | None:
        """The current version, deleted or not; None if the resource never existed."""

    async def vread(
        self, type: str, id: str, version: int, access: AccessFilter
    ) -> ResourceVersion | None: ...

    async def history(self, query: HistoryQuery, access: AccessFilter) -> Page:
        """Versions newest first (last_updated, type, id, version descending)."""

    async def search(self, query: SearchQuery, access: AccessFilter) -> Page:
        """Current, non-deleted versions matching `query`, in the query's order."""

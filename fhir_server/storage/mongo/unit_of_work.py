"""The MongoDB unit of work: buffered writes, applied at commit.

Writes wait in memory until the `async with` block ends, so a rollback is simply dropping
them; `current` and `find` overlay the buffer on the database, so later steps of a transaction
bundle see earlier ones. How the buffer is applied depends on the deployment (see `engine`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from fhir_server.search.mongo import compile_where, sort_keys
from fhir_server.search.overlay import Resolved, matches, scoped_to
from fhir_server.search.query import SearchQuery
from fhir_server.storage.mongo.budget import Budget
from fhir_server.storage.mongo.documents import (
    META,
    VERSION_FIELDS,
    current_document,
    history_document,
    history_key,
    index_documents,
    resource_key,
    to_version,
)
from fhir_server.storage.mongo.locks import acquire_lease, release_lease
from fhir_server.storage.mongo.outbox import append_events
from fhir_server.storage.mongo.plans import choose_index
from fhir_server.storage.mongo.transactions import TRANSIENT, run_in_transaction
from fhir_server.storage.port import (
    AccessFilter,
    IndexEntry,
    Minted,
    ResourceVersion,
    StorageError,
    TopicEvent,
    VersionConflict,
)

if TYPE_CHECKING:
    from fhir_server.storage.mongo.engine import MongoStorage


@dataclass(frozen=True, slots=True)
class _Write:
    version: ResourceVersion
    index: tuple[IndexEntry, ...]


class MongoUnitOfWork:
    """One unit of work; `MongoStorage.unit_of_work` commits or discards it and releases its
    locks."""

    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage
        self._owner = uuid.uuid4().hex
        self._writes: list[_Write] = []
        self._latest: dict[str, _Write] = {}  # resource key -> last buffered write
        self._events: list[TopicEvent] = []  # seqs given at commit (see `outbox`)
        self._held: list[str] = []
        self._created = Minted()  # minted here: nothing stored refers to them
        self._closed = False

    async def lock(self, key: str) -> None:
        """Reentrant within this unit of work; held until it commits or rolls back."""
        self._check_open()
        if key in self._held:
            return
        storage = self._storage
        started = _loop_time()
        await storage.key_locks.acquire(key, storage.lock_timeout)
        remaining = storage.lock_timeout - (_loop_time() - started)
        try:
            await acquire_lease(
                storage.locks_col, key, self._owner, storage.lease_seconds, remaining
            )
        except BaseException:
            storage.key_locks.release(key)
            raise
        self._held.append(key)

    def mint(self, type: str) -> str:
        return self._created.mint(type)

    def derive(self, type: str, id: str, source: str) -> str:
        return self._created.derive(type, id, source)

    async def add_event(self, event: TopicEvent) -> None:
        """Buffered like the writes: a rollback drops it, the commit numbers and stores it."""
        self._check_open()
        self._events.append(event)

    async def current(self, type: str, id: str) -> ResourceVersion | None:
        write = self._latest.get(resource_key(type, id))
        if write is not None:
            return write.version
        if (type, id) in self._created:  # minted here and not yet written
            return None
        return await self._storage.current_version(type, id)

    async def find(self, query: SearchQuery, access: AccessFilter) -> list[ResourceVersion]:
        """All matches (no paging), the buffer overriding what the database holds."""
        if not access.allows(query.type):
            return []
        storage = self._storage
        found: dict[str, ResourceVersion] = {}
        where: Sequence[Resolved] = query.where
        if not (self._created and scoped_to(query.where, self._created)):
            budget = Budget(storage.search_timeout)
            with budget.guard():
                where = await storage.resolve(query, budget)
                filter_ = {"type": query.type, "deleted": False, **compile_where(where)}
                cursor = storage.resources_col.find(filter_, VERSION_FIELDS)
                if (index := choose_index(filter_)) is not None:
                    cursor = cursor.hint(index)
                async for document in cursor.max_time_ms(budget.ms()):
                    found[document["_id"]] = to_version(document)
        for key, write in self._latest.items():
            version = write.version
            if version.type != query.type:
                continue
            found.pop(key, None)
            entries = write.index
            if not version.deleted and matches(where, version.id, entries, version.last_updated):
                found[key] = version
        return sorted(found.values(), key=lambda v: v.id)

    async def put(self, version: ResourceVersion, index: Sequence[IndexEntry]) -> None:
        """Buffer the write. Known conflicts are reported now; a writer racing us is caught by
        the unique history `_id` at commit."""
        self._check_open()
        key = resource_key(version.type, version.id)
        hkey = history_key(version.type, version.id, version.version)
        if any(w.version.version == version.version for w in self._writes_of(key)):
            raise VersionConflict(f"{hkey} is already written in this unit of work")
        if await self._storage.history_col.find_one({"_id": hkey}, {"_id": 1}) is not None:
            raise VersionConflict(f"{hkey} exists")
        write = _Write(version, () if version.deleted else tuple(index))
        self._writes.append(write)
        self._latest[key] = write

    async def reindex(self, type: str, id: str, index: Sequence[IndexEntry]) -> None:
        """Replace the search values of the current version now (maintenance, no new version)."""
        docs = index_documents(tuple(index))
        await self._storage.resources_col.update_one(
            {"_id": resource_key(type, id)}, {"$set": {"idx": docs, "sort": sort_keys(docs)}}
        )

    async def meta(self, key: str) -> str | None:
        found = await self._storage.db[META].find_one({"_id": key})
        return None if found is None else str(found["value"])

    async def set_meta(self, key: str, value: str) -> None:
        await self._storage.db[META].replace_one({"_id": key}, {"value": value}, upsert=True)

    async def commit(self) -> None:
        self._check_open()
        self._closed = True
        if not self._writes and not self._events:
            return
        if self._storage.transactions:
            await self._commit_transaction()
        else:
            await self._commit_in_order()

    async def release(self) -> None:
        """End of the unit of work, whatever happened: drop the buffer and every lock."""
        self._closed = True
        self._writes.clear()
        self._latest.clear()
        self._events.clear()
        storage = self._storage
        while self._held:
            key = self._held.pop()
            try:
                await release_lease(storage.locks_col, key, self._owner)
            finally:
                storage.key_locks.release(key)

    async def _commit_transaction(self) -> None:
        """Replica set or sharded cluster: all writes in one multi-document transaction
        (`run_in_transaction` may run `apply` again after a transient error; it only writes
        through the session, so each run starts from nothing)."""
        storage = self._storage

        async def apply(session: Any) -> None:
            for write in self._writes:
                v = write.version
                await storage.history_col.insert_one(history_document(v), session=session)
                await storage.resources_col.replace_one(
                    {"_id": resource_key(v.type, v.id)},
                    current_document(v, write.index),
                    upsert=True,
                    session=session,
                )
            if self._events:  # last: the counter's write conflict orders the commits
                await append_events(storage.db, self._events, session)

        try:
            await run_in_transaction(storage.client, apply)
        except DuplicateKeyError as exc:
            raise VersionConflict(_conflict_message(exc)) from None
        except PyMongoError as exc:
            if exc.has_error_label(TRANSIENT):  # still conflicting after the retries: 409
                raise StorageError(f"transaction kept conflicting: {exc}") from exc
            raise

    async def _commit_in_order(self) -> None:
        """Standalone server (or mongomock): the non-atomic fallback described in `engine`."""
        storage = self._storage
        keys = [history_key(w.version.type, w.version.id, w.version.version) for w in self._writes]
        existing = await storage.history_col.find({"_id": {"$in": keys}}, {"_id": 1}).to_list(None)
        if existing:
            # Fail before writing anything when a conflict is already visible.
            raise VersionConflict(f"{existing[0]['_id']} exists")
        for write in self._writes:
            v = write.version
            try:
                await storage.history_col.insert_one(history_document(v))
            except DuplicateKeyError:
                raise VersionConflict(f"{history_key(v.type, v.id, v.version)} exists") from None
            # The history insert won this version; now move the current pointer forward,
            # never back (a later writer may already be ahead). No match on an existing
            # document makes the upsert collide on `_id`: it is at this version or newer.
            with suppress(DuplicateKeyError):
                await storage.resources_col.replace_one(
                    {"_id": resource_key(v.type, v.id), "version": {"$lt": v.version}},
                    current_document(v, write.index),
                    upsert=True,
                )
        if self._events:  # after the data; counter and insert together, within this process
            async with storage.event_lock:
                await append_events(storage.db, self._events)

    def _writes_of(self, key: str) -> list[_Write]:
        return [w for w in self._writes if resource_key(w.version.type, w.version.id) == key]

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("unit of work has ended")


def _conflict_message(exc: DuplicateKeyError) -> str:
    key = (exc.details or {}).get("keyValue", {}).get("_id", "a version")
    return f"{key} exists"


def _loop_time() -> float:
    return asyncio.get_running_loop().time()

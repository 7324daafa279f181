"""The MongoDB engine of the storage port, on PyMongo's async API (`AsyncMongoClient`).

Collections (see `documents`): `resources` (current version + `idx` search values per
resource), `history` (every version, `_id = "{type}/{id}/{version}"`), `locks` (leases), and
the subscriptions' outbox (`outbox`).

Version numbers are race-safe because the history `_id` is unique: of two writers creating the
same version, the second insert fails with a duplicate key and becomes `VersionConflict`.

Commit, by deployment (detected once in `open()` with the `hello` command):

* Replica set member or mongos: a unit of work's writes run in one multi-document
  transaction, so a multi-resource unit of work is atomic (`transactions`: a session per
  commit, the whole transaction run again on `TransientTransactionError`, the commit again
  on `UnknownTransactionCommitResult`, both bounded).
* Standalone server (and mongomock in tests), the fallback: writes are applied one by one, each
  as "insert the history document, then move the current document forward" (a replace that
  only matches an older version). This is NOT atomic across resources: a conflict or crash
  half-way leaves the earlier resources written. A crash between the two steps of one write
  leaves the current document one version behind its history. Reads and `current()` repair
  that on the fly in this mode: they follow `history` by `_id` past the current version
  (point lookups of version+1, +2, ...), so readers see the committed version and the next
  writer builds on it (its forward-only replace then fixes the current document, including
  `idx`). Until that next write, search still uses the stale current document.

History order (one total order, also the keyset cursor's): `last_updated` desc, `type` desc,
`id` desc, `version` desc. Search order: `id` ascending (binary string order), or the sort
keys then id; an unsorted date window walks in SQLite's date order (`walk`).  Every search
read names its index (`plans`).

Costs are bounded in time: a search (its chains' lookups, count and page together) or a
history listing gets `search_timeout` seconds; every query carries what is left as
`maxTimeMS`, and the server's ExecutionTimeout becomes a 400 too-costly.  A large query tree
is compiled on a worker thread, so it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from pymongo.errors import OperationFailure

from fhir_server.errors import error
from fhir_server.search.mongo import Resolved, compile_where, resolve
from fhir_server.search.query import SearchQuery, terms
from fhir_server.search.sql import date_walk
from fhir_server.storage.mongo.budget import SEARCH_TIMEOUT, Budget
from fhir_server.storage.mongo.documents import (
    HISTORY,
    HISTORY_SORT,
    INDEXES,
    LOCKS,
    RESOURCES,
    VERSION_FIELDS,
    history_key,
    resource_key,
    to_version,
)
from fhir_server.storage.mongo.locks import KeyLocks
from fhir_server.storage.mongo.outbox import MongoOutbox, ensure_outbox
from fhir_server.storage.mongo.plans import choose_index
from fhir_server.storage.mongo.unit_of_work import MongoUnitOfWork
from fhir_server.storage.mongo.walk import WALK_INDEX, walk_match, walk_page
from fhir_server.storage.port import (
    AccessFilter,
    HistoryCursor,
    HistoryQuery,
    Page,
    ResourceVersion,
)

log = logging.getLogger(__name__)

LOCK_TIMEOUT_SECONDS = 10.0
LEASE_SECONDS = 30.0
COMPILE_IN_THREAD = 100  # leaf terms from which compiling pays a thread hop (~0.1 ms)


class MongoStorage:
    name = "mongo"

    def __init__(
        self,
        uri: str,
        database: str,
        *,
        lock_timeout: float = LOCK_TIMEOUT_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        search_timeout: float = SEARCH_TIMEOUT,
    ) -> None:
        from pymongo import AsyncMongoClient

        # Lazy: the client connects on its first operation, on the loop that runs it.
        self._setup(AsyncMongoClient(uri), database, lock_timeout, lease_seconds)
        self.search_timeout = search_timeout
        self._owns_client = True

    @classmethod
    def from_client(
        cls,
        client: Any,
        database: str,
        *,
        lock_timeout: float = LOCK_TIMEOUT_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        search_timeout: float = SEARCH_TIMEOUT,
    ) -> MongoStorage:
        """Use an existing client with PyMongo's async surface (an `AsyncMongoClient`, or the
        tests' double); `close()` leaves it open."""
        storage = cls.__new__(cls)
        storage._setup(client, database, lock_timeout, lease_seconds)
        storage.search_timeout = search_timeout
        return storage

    def _setup(self, client: Any, database: str, lock_timeout: float, lease: float) -> None:
        self.client = client
        self.db = client[database]
        self.resources_col = self.db[RESOURCES]
        self.history_col = self.db[HISTORY]
        self.locks_col = self.db[LOCKS]
        self.lock_timeout = lock_timeout
        self.lease_seconds = lease
        self.key_locks = KeyLocks()
        # The fallback commit's event counter and insert, one unit of work at a time.
        self.event_lock = asyncio.Lock()
        self.outbox = MongoOutbox(self)
        self.transactions = False
        self.search_timeout = SEARCH_TIMEOUT
        self._owns_client = False

    async def open(self) -> None:
        """Create indexes (idempotent: same names and specs) and detect transaction support."""
        for collection, keys, options in INDEXES:
            await self.db[collection].create_index(keys, **options)
        await ensure_outbox(self.db)
        self.transactions = await self._supports_transactions()
        log.info("mongo storage open; multi-document transactions: %s", self.transactions)

    async def _supports_transactions(self) -> bool:
        """Transactions need a replica set member or mongos; a standalone server (and the
        tests' mongomock double, which answers as one) gets the fallback."""
        try:
            hello = await self.client.admin.command("hello")
        except OperationFailure:  # servers before 4.4.2 without `hello`: no transactions here
            return False
        return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"

    async def close(self) -> None:
        if self._owns_client:
            await self.client.close()  # a coroutine in PyMongo async (Motor's was not)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[MongoUnitOfWork]:
        unit = MongoUnitOfWork(self)
        try:
            yield unit
            await unit.commit()
        finally:
            await unit.release()

    async def read(self, type: str, id: str, access: AccessFilter) -> ResourceVersion | None:
        if not access.allows(type):
            return None
        return await self.current_version(type, id)

    async def current_version(self, type: str, id: str) -> ResourceVersion | None:
        """The current version, repaired from history in the non-transactional mode."""
        document = await self.resources_col.find_one(
            {"_id": resource_key(type, id)}, VERSION_FIELDS
        )
        current = to_version(document) if document is not None else None
        if self.transactions:
            return current
        version = current.version if current is not None else 0
        while True:
            newer = await self.history_col.find_one(
                {"_id": history_key(type, id, version + 1)}, VERSION_FIELDS
            )
            if newer is None:
                return current
            current = to_version(newer)
            version = current.version

    async def vread(
        self, type: str, id: str, version: int, access: AccessFilter
    ) -> ResourceVersion | None:
        if not access.allows(type):
            return None
        document = await self.history_col.find_one(
            {"_id": history_key(type, id, version)}, VERSION_FIELDS
        )
        return to_version(document) if document is not None else None

    async def history(self, query: HistoryQuery, access: AccessFilter) -> Page:
        if query.type is not None and not access.allows(query.type):
            return Page(items=[], total=0)
        filter_: dict[str, Any] = {}
        if query.type is not None:
            filter_["type"] = query.type
        elif access.resource_types is not None:
            filter_["type"] = {"$in": sorted(access.resource_types)}
        if query.id is not None:
            filter_["id"] = query.id
        if query.since is not None:
            filter_["last_updated"] = {"$gte": query.since}
        budget = Budget(self.search_timeout, "history listing")
        with budget.guard():
            total = await self.history_col.count_documents(filter_, maxTimeMS=budget.ms())
            if query.before is not None:
                filter_ = {"$and": [filter_, _after_cursor(query.before)]}
            cursor = self.history_col.find(filter_, VERSION_FIELDS).sort(HISTORY_SORT)
            cursor = cursor.max_time_ms(budget.ms())
            documents = await cursor.limit(query.count + 1).to_list(None)
        items = [to_version(d) for d in documents[: query.count]]
        return Page(items=items, total=total, has_more=len(documents) > query.count)

    async def search(self, query: SearchQuery, access: AccessFilter) -> Page:
        if not access.allows(query.type):
            return Page(items=[], total=0 if query.total else None)
        budget = Budget(self.search_timeout)
        with budget.guard():
            return await self._search(query, budget)

    async def _search(self, query: SearchQuery, budget: Budget) -> Page:
        walk = date_walk(query)
        if walk is not None:
            return await walk_page(self.resources_col, query, walk, budget)
        plan = await self.page_plan(query, budget)
        total = None
        if query.total:
            total = await self.resources_col.count_documents(
                plan.count_filter, maxTimeMS=budget.ms(), **_hinted(plan.hint)
            )
        documents = await self._page_cursor(plan, budget).to_list(None)
        items = [to_version(d) for d in documents[: query.count]]
        if plan.backwards:
            items.sort(key=lambda v: v.id)
        last_key = None
        if query.sort and documents[: query.count]:
            last = documents[query.count - 1 if len(documents) > query.count else -1]
            last_key = [_field(last, name) for name, _ in plan.order]
        more = len(documents) > query.count
        return Page(items, total, has_more=more, last_key=last_key, keyed=bool(query.sort))

    async def page_plan(self, query: SearchQuery, budget: Budget) -> PagePlan:
        """Filter, order, index and window of one search page: what `_search` runs and
        `explain` shows."""
        filter_ = await self.search_filter(query, budget)
        count_filter = dict(filter_)
        if query.after is not None and not query.sort:
            filter_["id"] = {"$gt": query.after}
        backwards = query.before is not None and not query.sort
        if backwards:
            filter_["id"] = {"$lt": query.before}
        order = [("id", -1)] if backwards else _sort(query)
        if query.sort and query.after_key is not None:
            if len(query.after_key) != len(order):
                raise error(400, "invalid", "'_cursor' is not a paging position", "_cursor")
            filter_ = {
                **filter_,
                "$and": [*filter_.get("$and", []), _after_key(order, query.after_key)],
            }
        skip = query.offset if query.sort and query.offset and query.after_key is None else 0
        return PagePlan(
            filter_,
            count_filter,
            order,
            choose_index(count_filter),
            skip,
            query.count + 1,
            backwards,
        )

    def _page_cursor(self, plan: PagePlan, budget: Budget) -> Any:
        fields = {**VERSION_FIELDS, **{name: 1 for name, _ in plan.order}}
        cursor = self.resources_col.find(plan.filter, fields).sort(plan.order)
        if plan.hint is not None:
            cursor = cursor.hint(plan.hint)
        if plan.skip:
            cursor = cursor.skip(plan.skip)
        return cursor.limit(plan.limit).max_time_ms(budget.ms())

    async def explain(self, query: SearchQuery) -> dict[str, Any]:
        """The server's plan for a search page (`explain()` of the find it sends; a date
        walk's is its first stage, the `$match` that reads the range index)."""
        budget = Budget(self.search_timeout)
        walk = date_walk(query)
        if walk is not None:
            cursor = self.resources_col.find(walk_match(query, walk), {"id": 1}).hint(WALK_INDEX)
            return dict(await cursor.explain())
        plan = await self.page_plan(query, budget)
        return dict(await self._page_cursor(plan, budget).explain())

    async def search_filter(self, query: SearchQuery, budget: Budget) -> dict[str, Any]:
        """The filter of a search, chains resolved to ids first."""
        where = await self.resolve(query, budget)
        if sum(terms(c) for c in query.where) >= COMPILE_IN_THREAD:
            compiled = await asyncio.to_thread(compile_where, where)
        else:
            compiled = compile_where(where)
        return {"type": query.type, "deleted": False, **compiled}

    async def resolve(self, query: SearchQuery, budget: Budget) -> list[Resolved]:
        """The query's chains and reverse chains as id lists, each lookup within `budget`."""
        find_ids = partial(self._find_ids, budget)
        find_referrers = partial(self._find_referrers, budget)
        return await resolve(query.where, query.type, find_ids, find_referrers)

    async def _find_ids(self, budget: Budget, type: str, filter_: dict[str, Any]) -> list[str]:
        found = {"type": type, "deleted": False, **filter_}
        cursor = _hint(self.resources_col.find(found, {"id": 1}), choose_index(found))
        return [d["id"] async for d in cursor.max_time_ms(budget.ms())]

    async def _find_referrers(
        self, budget: Budget, source: str, filter_: dict[str, Any], param: str, target: str
    ) -> list[str]:
        found = {"type": source, "deleted": False, **filter_}
        ids: list[str] = []
        cursor = _hint(self.resources_col.find(found, {"idx": 1}), choose_index(found))
        async for d in cursor.max_time_ms(budget.ms()):
            ids.extend(
                e["i"]
                for e in d.get("idx", [])
                if e.get("k") == "r" and e.get("p") == param and e.get("t") == target and e.get("i")
            )
        return ids


@dataclass(frozen=True, slots=True)
class PagePlan:
    """One search page as MongoDB gets it; `hint` names the index (`plans.choose_index`)."""

    filter: dict[str, Any]
    count_filter: dict[str, Any]  # the filter without the paging position
    order: list[tuple[str, int]]
    hint: str | None
    skip: int
    limit: int
    backwards: bool


def _hinted(index: str | None) -> dict[str, Any]:
    return {} if index is None else {"hint": index}


def _hint(cursor: Any, index: str | None) -> Any:
    """The cursor with `index` as its hint, if there is one to name."""
    return cursor if index is None else cursor.hint(index)


def _field(document: dict[str, Any], dotted: str) -> Any:
    value: Any = document
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _after_key(order: list[tuple[str, int]], last: list[Any]) -> dict[str, Any]:
    """Documents strictly after `last` in `order` (missing values sort lowest, as MongoDB
    orders them): keyset paging for `_sort`, stable while data changes."""
    alternatives = []
    for k, (name, direction) in enumerate(order):
        clause: dict[str, Any] = {"$and": [{n: last[j]} for j, (n, _) in enumerate(order[:k])]}
        value = last[k]
        if direction == 1:
            step = {name: {"$ne": None}} if value is None else {name: {"$gt": value}}
        elif value is None:
            continue  # nothing sorts after a missing value in descending order
        else:
            step = {"$or": [{name: {"$lt": value}}, {name: None}]}
        clause["$and"].append(step)
        alternatives.append(clause)
    return {"$or": alternatives} if alternatives else {"id": {"$in": []}}


def _sort(query: SearchQuery) -> list[tuple[str, int]]:
    """`_sort` keys over the precomputed per-parameter min/max (`sort` field), then id."""
    keys: list[tuple[str, int]] = []
    for key in query.sort:
        direction = -1 if key.descending else 1
        if key.kind == "id":
            keys.append(("id", direction))
        elif key.kind == "lastUpdated":
            keys.append(("last_updated", direction))
        else:
            keys.append((f"sort.{key.param}.{'max' if key.descending else 'min'}", direction))
    return [*keys, ("id", 1)]


def _after_cursor(c: HistoryCursor) -> dict[str, Any]:
    """Strictly after `c` in the (all descending) history order: a row-value `<`."""
    return {
        "$or": [
            {"last_updated": {"$lt": c.last_updated}},
            {"last_updated": c.last_updated, "type": {"$lt": c.type}},
            {"last_updated": c.last_updated, "type": c.type, "id": {"$lt": c.id}},
            {
                "last_updated": c.last_updated,
                "type": c.type,
                "id": c.id,
                "version": {"$lt": c.version},
            },
        ]
    }

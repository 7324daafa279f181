"""The subscriptions' outbox on MongoDB: topic events, subscription states, notifications, leases.

A unit of work appends its events at commit (`append_events`): the `counters` document
`topic_events` is `$inc`ed by the number of events and they take the seqs below the new value.
In a transaction, that write conflicts with every other committing transaction that appends
events, so the later one retries after the earlier committed: seq order is commit order. In
the non-transactional fallback (standalone server, mongomock) the events follow the data
writes, counter and insert under one in-process lock; across processes on a standalone server
an event with a lower seq can become visible after a higher one (and be skipped by the
fan-out), one more reason the fallback is for development only.

The dispatcher's writes (`fan_out`) run in one transaction when the deployment has them.
Without, `fan_out` writes notifications, then numbers, then the cursor, so an interruption
repeats work (at least once) rather than losing it; its leftover notifications are dropped
on the next try. Leases are documents in `leases` (`_id` = name, wall-clock `expires_at`),
taken with one conditional upsert: the unique `_id` refuses a second owner. No TTL index
there (unlike `locks`): a lease is taken over by its `expires_at`, one document per name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from fhir_server.storage.mongo.documents import (
    COUNTERS,
    EVENT_COUNTER,
    LEASES,
    META,
    NOTIFICATIONS,
    SUBSCRIPTION_STATES,
    TOPIC_EVENTS,
    event_document,
    to_event,
    utc_now,
)
from fhir_server.storage.mongo.transactions import run_in_transaction
from fhir_server.storage.port import Notification, Progress, SubscriptionState, TopicEvent

if TYPE_CHECKING:
    from fhir_server.storage.mongo.engine import MongoStorage

T = TypeVar("T")

CURSOR_KEY = "subscriptions.cursor"  # in `meta`: the seq up to which events are fanned out
PRUNE_CHUNK = 1000  # seqs per `$in` when retention deletes
_STATE_FIELDS = (
    "topic",
    "start_seq",
    "number",
    "delivered",
    "failures",
    "next_attempt",
    "last_error",
    "last_sent",
)


async def ensure_outbox(db: Any) -> None:
    """Create the event counter and the cursor up front: commits then only `$inc` the counter
    (two transactions upserting a missing document would fail with a duplicate key, not
    retry), and no transaction has to create a collection (MongoDB before 4.4 cannot)."""
    for collection, key, field in ((COUNTERS, EVENT_COUNTER, "seq"), (META, CURSOR_KEY, "value")):
        with suppress(DuplicateKeyError):
            await db[collection].update_one({"_id": key}, {"$setOnInsert": {field: 0}}, upsert=True)


async def append_events(db: Any, events: Sequence[TopicEvent], session: Any = None) -> None:
    """Give `events` the next seqs (in list order) and store them, in `session`'s
    transaction if any."""
    counter = await db[COUNTERS].find_one_and_update(
        {"_id": EVENT_COUNTER},
        {"$inc": {"seq": len(events)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    first = int(counter["seq"]) - len(events) + 1
    documents = [event_document(e, first + i) for i, e in enumerate(events)]
    await db[TOPIC_EVENTS].insert_many(documents, session=session)


def _state(document: dict[str, Any]) -> SubscriptionState:
    d = document
    return SubscriptionState(
        subscription=d["_id"],
        topic=d["topic"],
        start_seq=int(d["start_seq"]),
        number=int(d["number"]),
        delivered=int(d["delivered"]),
        failures=int(d["failures"]),
        next_attempt=d.get("next_attempt"),
        last_error=d.get("last_error"),
        last_sent=d.get("last_sent"),
    )


class MongoOutbox:
    """`MongoStorage.outbox`: what the dispatcher reads and records."""

    def __init__(self, storage: MongoStorage) -> None:
        self._storage = storage
        db = storage.db
        self._events = db[TOPIC_EVENTS]
        self._states = db[SUBSCRIPTION_STATES]
        self._notifications = db[NOTIFICATIONS]
        self._meta = db[META]
        self._counters = db[COUNTERS]
        self._leases = db[LEASES]

    async def _atomic(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """`fn(session)` in one transaction when the deployment has them, else `fn(None)`."""
        storage = self._storage
        if not storage.transactions:
            return await fn(None)
        return await run_in_transaction(storage.client, fn)

    async def last_seq(self) -> int:
        found = await self._counters.find_one({"_id": EVENT_COUNTER})
        return 0 if found is None else int(found["seq"])

    async def events_after(self, seq: int, limit: int = 500) -> list[TopicEvent]:
        if limit <= 0:  # MongoDB reads a limit of 0 as none
            return []
        cursor = self._events.find({"_id": {"$gt": int(seq)}}).sort("_id", 1).limit(limit)
        return [to_event(d) async for d in cursor]

    async def cursor(self) -> int:
        found = await self._meta.find_one({"_id": CURSOR_KEY})
        return 0 if found is None else int(found["value"])

    async def fan_out(
        self, after: int, cursor: int, notifications: list[tuple[str, TopicEvent]]
    ) -> bool:
        """In a transaction, a concurrent fan-out conflicts on the cursor document and one
        of them sees the other's cursor; without transactions the check is a read first."""
        transactions = self._storage.transactions

        async def apply(session: Any) -> bool:
            stored = await self._meta.find_one({"_id": CURSOR_KEY}, session=session)
            if (0 if stored is None else int(stored["value"])) != after:
                return False
            ids = sorted({str(subscription) for subscription, _ in notifications})
            found = self._states.find({"_id": {"$in": ids}}, {"number": 1}, session=session)
            before = {d["_id"]: int(d["number"]) async for d in found}
            numbers = dict(before)
            documents = []
            for subscription, event in notifications:
                number = numbers.get(subscription)
                if number is None:  # not started, or stopped meanwhile
                    continue
                numbers[subscription] = number = number + 1
                documents.append(
                    {
                        "_id": f"{subscription}/{number}",
                        "subscription": subscription,
                        "number": number,
                        "seq": event.seq,
                    }
                )
            if not transactions:  # what an interrupted fan-out left past the numbers
                for subscription, number in before.items():
                    await self._notifications.delete_many(
                        {"subscription": subscription, "number": {"$gt": number}}
                    )
            if documents:
                await self._notifications.insert_many(documents, session=session)
            for subscription, number in numbers.items():
                if number != before[subscription]:
                    await self._states.update_one(
                        {"_id": subscription}, {"$set": {"number": number}}, session=session
                    )
            await self._meta.update_one(
                {"_id": CURSOR_KEY}, {"$set": {"value": int(cursor)}}, upsert=True, session=session
            )
            return True

        return await self._atomic(apply)

    async def start(self, subscription: str, topic: str, start_seq: int) -> SubscriptionState:
        initial = {
            "topic": topic,
            "start_seq": int(start_seq),
            "number": 0,
            "delivered": 0,
            "failures": 0,
            "next_attempt": None,
            "last_error": None,
            "last_sent": None,
        }
        with suppress(DuplicateKeyError):  # a concurrent start created it: use that one
            await self._states.update_one(
                {"_id": str(subscription)}, {"$setOnInsert": initial}, upsert=True
            )
        state = await self.state(subscription)
        assert state is not None
        return state

    async def state(self, subscription: str) -> SubscriptionState | None:
        found = await self._states.find_one({"_id": str(subscription)})
        return None if found is None else _state(found)

    async def states(self) -> list[SubscriptionState]:
        return [_state(d) async for d in self._states.find({}).sort("_id", 1)]

    async def stop(self, subscription: str) -> None:
        await self._notifications.delete_many({"subscription": str(subscription)})
        await self._states.delete_one({"_id": str(subscription)})

    async def notifications(
        self, subscription: str, since: int, until: int | None = None, limit: int = 100
    ) -> list[Notification]:
        if limit <= 0:  # MongoDB reads a limit of 0 as none
            return []
        numbers: dict[str, int] = {"$gt": int(since)}
        if until is not None:
            numbers["$lte"] = int(until)
        filter_ = {"subscription": str(subscription), "number": numbers}
        cursor = self._notifications.find(filter_, {"number": 1, "seq": 1})
        found = await cursor.sort("number", 1).limit(limit).to_list(None)
        seqs = sorted({int(d["seq"]) for d in found})
        events = {}
        if seqs:
            events = {
                d["_id"]: to_event(d) async for d in self._events.find({"_id": {"$in": seqs}})
            }
        return [
            Notification(subscription, int(d["number"]), events[d["seq"]])
            for d in found
            if d["seq"] in events  # an event retention dropped meanwhile
        ]

    async def record(self, progress: Sequence[Progress]) -> None:
        """In order, one update each (not bulk_write: mongomock's bulk API lags PyMongo's,
        and the conformance suite must run the same code on both)."""
        for p in progress:
            fields: dict[str, Any] = {
                "failures": int(p.failures),
                "next_attempt": p.next_attempt,
                "last_error": p.last_error,
            }
            if p.last_sent is not None:
                fields["last_sent"] = p.last_sent
            update: dict[str, Any] = {"$set": fields}
            if p.delivered is not None:
                update["$max"] = {"delivered": int(p.delivered)}  # only forward
            await self._states.update_one({"_id": str(p.subscription)}, update)

    async def prune(self, before: str) -> int:
        """Candidates first (fanned out and old enough), minus the events some subscription
        still waits for; notifications go before their events, so an interrupted prune is
        finished by the next one."""
        cursor = await self.cursor()
        old = self._events.find({"_id": {"$lte": cursor}, "at": {"$lt": str(before)}}, {"_id": 1})
        candidates = [int(d["_id"]) async for d in old]
        if not candidates:
            return 0
        waiting = [
            {"subscription": s.subscription, "number": {"$gt": s.delivered}}
            for s in await self.states()
            if s.number > s.delivered
        ]
        keep: set[int] = set()
        if waiting:
            pending = self._notifications.find({"$or": waiting}, {"seq": 1})
            keep = {int(d["seq"]) async for d in pending}
        drop = [seq for seq in candidates if seq not in keep]
        for i in range(0, len(drop), PRUNE_CHUNK):
            chunk = drop[i : i + PRUNE_CHUNK]
            await self._notifications.delete_many({"seq": {"$in": chunk}})
            await self._events.delete_many({"_id": {"$in": chunk}})
        return len(drop)

    async def take_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Renew ours or take an absent or expired one; the upsert collides on `_id` (and
        fails) when another owner's lease is still running."""
        now = utc_now()  # wall clock: leases are compared across processes
        mine_or_expired = {
            "_id": str(name),
            "$or": [{"owner": str(owner)}, {"expires_at": {"$lte": now}}],
        }
        fields = {"owner": str(owner), "expires_at": now + timedelta(seconds=seconds)}
        try:
            await self._leases.update_one(mine_or_expired, {"$set": fields}, upsert=True)
        except DuplicateKeyError:
            return False
        return True

    async def release_lease(self, name: str, owner: str) -> None:
        await self._leases.delete_one({"_id": str(name), "owner": str(owner)})

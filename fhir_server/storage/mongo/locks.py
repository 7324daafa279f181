"""Named locks for `UnitOfWork.lock`: an in-process lock, then a lease in the database.

The in-process `asyncio.Lock` queues the coroutines of one process fairly, so they do not spin
against each other on the lease. The lease (`{_id, owner, expires_at}` in `locks`) serialises
processes: whoever inserts the document holds the key; a lease whose holder died is taken over
once `expires_at` has passed (the TTL index only cleans up eventually). A holder that runs
longer than the lease can lose it; leases are sized (30 s) far above a request's lifetime.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from fhir_server.storage.mongo.documents import utc_now
from fhir_server.storage.port import LockTimeout

log = logging.getLogger(__name__)

RETRY_MIN_SECONDS = 0.005
RETRY_MAX_SECONDS = 0.020


@dataclass(slots=True)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holders plus waiters: the entry is dropped when it reaches zero


class KeyLocks:
    """In-process locks by key, created on demand and forgotten when unused."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    async def acquire(self, key: str, timeout: float) -> None:
        entry = self._entries.setdefault(key, _Entry())
        entry.users += 1
        try:
            await asyncio.wait_for(entry.lock.acquire(), max(timeout, 0))
        except BaseException as exc:
            self._forget(key, entry)
            if isinstance(exc, TimeoutError):
                raise LockTimeout(f"lock {key!r} busy") from None
            raise

    def release(self, key: str) -> None:
        entry = self._entries[key]
        entry.lock.release()
        self._forget(key, entry)

    def _forget(self, key: str, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._entries[key]


def lease_id(key: str) -> str:
    """Keys can be long (search criteria); the lease's `_id` is a fixed-size digest."""
    return hashlib.sha256(key.encode()).hexdigest()


async def acquire_lease(
    locks: Any, key: str, owner: str, lease_seconds: float, timeout: float
) -> None:
    """Insert the lease, taking over an expired one, retrying until `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    _id = lease_id(key)
    while True:
        now = utc_now()
        try:
            await locks.insert_one(
                {
                    "_id": _id,
                    "key": key[:200],  # for people looking at the collection
                    "owner": owner,
                    "expires_at": now + timedelta(seconds=lease_seconds),
                }
            )
            return
        except DuplicateKeyError:
            pass
        taken_over = await locks.delete_one({"_id": _id, "expires_at": {"$lt": now}})
        if taken_over.deleted_count:
            log.warning("took over expired lock lease %r", key)
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise LockTimeout(f"lock {key!r} held by another process")
        await asyncio.sleep(min(remaining, random.uniform(RETRY_MIN_SECONDS, RETRY_MAX_SECONDS)))


async def release_lease(locks: Any, key: str, owner: str) -> None:
    """Delete our lease only (it may have expired and been taken over); never raise, since
    releasing runs while another error may be propagating and the lease expires anyway."""
    try:
        await locks.delete_one({"_id": lease_id(key), "owner": owner})
    except PyMongoError:
        log.exception("could not release lock lease %r; it expires by itself", key)

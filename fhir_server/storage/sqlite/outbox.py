"""The subscriptions' outbox on SQLite: topic events, subscription states, notifications, leases.

Events are inserted by the unit of work that caused them (`insert_events`, at its flush, in
the writer's transaction), so a rollback leaves none and `seq` (AUTOINCREMENT, never reused)
follows commit order: writers hold SQLite's write lock from `BEGIN IMMEDIATE` to `COMMIT`.
The dispatcher's writes run through `SqliteStorage.run_write`: each its own `BEGIN IMMEDIATE`
transaction under the same writer lock, one thread hop, so they never interleave with a unit
of work. Reads use the reader connection and see committed data only.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fhir_server.storage.port import Notification, Progress, SubscriptionState, TopicEvent

if TYPE_CHECKING:
    from fhir_server.storage.sqlite.engine import SqliteStorage

CURSOR_KEY = "subscriptions.cursor"  # in `meta`: the seq up to which events are fanned out
_NO_LIMIT = 2**63 - 1

_EVENT_COLUMNS = "seq, topic, focus_type, focus_id, focus_version, interaction, at"
_STATE_COLUMNS = (
    "subscription, topic, start_seq, number, delivered, failures, next_attempt, last_error, "
    "last_sent"
)

_INSERT_EVENT = (
    "INSERT INTO topic_events (topic, focus_type, focus_id, focus_version, interaction, at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_SET_CURSOR = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
# Taken when absent, expired, or ours (a renewal); otherwise the row stays as it is.
_TAKE_LEASE = (
    "INSERT INTO leases (name, owner, expires) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
    "WHERE leases.owner = excluded.owner OR leases.expires <= ?"
)
_RECORD = (
    "UPDATE subscription_states SET delivered = max(delivered, coalesce(?, delivered)), "
    "failures = ?, next_attempt = ?, last_error = ?, last_sent = coalesce(?, last_sent) "
    "WHERE subscription = ?"
)
# Fanned out, old enough, and no subscription still waits for it.
_PRUNABLE = (
    "SELECT e.seq FROM topic_events e WHERE e.seq <= ? AND e.at < ? AND NOT EXISTS ("
    "SELECT 1 FROM notifications n JOIN subscription_states s ON s.subscription = n.subscription "
    "WHERE n.seq = e.seq AND n.number > s.delivered)"
)
_NOTIFICATIONS = (
    "SELECT n.subscription, n.number, e.seq, e.topic, e.focus_type, e.focus_id, "
    "e.focus_version, e.interaction, e.at "
    "FROM notifications n JOIN topic_events e ON e.seq = n.seq "
    "WHERE n.subscription = ? AND n.number > ? AND n.number <= ? ORDER BY n.number LIMIT ?"
)


def insert_events(conn: sqlite3.Connection, events: Sequence[TopicEvent]) -> None:
    """Append a unit of work's events (inside its transaction): seq in list order."""
    conn.executemany(
        _INSERT_EVENT,
        [(e.topic, e.focus_type, e.focus_id, e.focus_version, e.interaction, e.at) for e in events],
    )


class SqliteOutbox:
    """`SqliteStorage.outbox`: what the dispatcher reads and records."""

    def __init__(self, storage: SqliteStorage) -> None:
        self._storage = storage

    async def last_seq(self) -> int:
        return int(await self._storage.run_read(_last_seq))

    async def events_after(self, seq: int, limit: int = 500) -> list[TopicEvent]:
        return await self._storage.run_read(_events_after, seq, limit)  # type: ignore[no-any-return]

    async def cursor(self) -> int:
        return int(await self._storage.run_read(_cursor))

    async def fan_out(
        self, after: int, cursor: int, notifications: list[tuple[str, TopicEvent]]
    ) -> bool:
        return bool(await self._storage.run_write(_fan_out, after, cursor, notifications))

    async def start(self, subscription: str, topic: str, start_seq: int) -> SubscriptionState:
        return await self._storage.run_write(_start, subscription, topic, start_seq)  # type: ignore[no-any-return]

    async def state(self, subscription: str) -> SubscriptionState | None:
        return await self._storage.run_read(_state, subscription)  # type: ignore[no-any-return]

    async def states(self) -> list[SubscriptionState]:
        return await self._storage.run_read(_states)  # type: ignore[no-any-return]

    async def stop(self, subscription: str) -> None:
        await self._storage.run_write(_stop, subscription)

    async def notifications(
        self, subscription: str, since: int, until: int | None = None, limit: int = 100
    ) -> list[Notification]:
        until = _NO_LIMIT if until is None else until
        job = (_notifications, subscription, since, until, limit)
        return await self._storage.run_read(*job)  # type: ignore[no-any-return]

    async def record(self, progress: Sequence[Progress]) -> None:
        rows = [
            (p.delivered, p.failures, p.next_attempt, p.last_error, p.last_sent, p.subscription)
            for p in progress
        ]
        if rows:
            await self._storage.run_write(_execute_many, _RECORD, rows)

    async def prune(self, before: str) -> int:
        return int(await self._storage.run_write(_prune, before))

    async def take_lease(self, name: str, owner: str, seconds: float) -> bool:
        return bool(await self._storage.run_write(_take_lease, name, owner, seconds))

    async def release_lease(self, name: str, owner: str) -> None:
        sql = "DELETE FROM leases WHERE name = ? AND owner = ?"
        await self._storage.run_write(_execute, sql, (name, owner))


# Run on a connection's thread (reads: the reader; writes: the writer, in a transaction).


def _execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
    conn.execute(sql, params)


def _execute_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    conn.executemany(sql, rows)


def _last_seq(conn: sqlite3.Connection) -> int:
    """The highest seq ever given (AUTOINCREMENT's record), even if retention dropped it."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'topic_events'").fetchone()
    return int(row[0]) if row else 0


def _event(row: Sequence[Any]) -> TopicEvent:
    seq, topic, focus_type, focus_id, focus_version, interaction, at = row
    return TopicEvent(topic, focus_type, focus_id, focus_version, interaction, at, seq)


def _events_after(conn: sqlite3.Connection, seq: int, limit: int) -> list[TopicEvent]:
    sql = f"SELECT {_EVENT_COLUMNS} FROM topic_events WHERE seq > ? ORDER BY seq LIMIT ?"
    return [_event(row) for row in conn.execute(sql, (seq, limit))]


def _cursor(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)).fetchone()
    return int(row[0]) if row else 0


def _fan_out(
    conn: sqlite3.Connection, after: int, cursor: int, notifications: list[tuple[str, TopicEvent]]
) -> bool:
    """Number the notifications from each subscription's state, then store them, the new
    numbers and the cursor: one transaction, under the writer lock, so the cursor read here
    is the one the write replaces."""
    if _cursor(conn) != after:
        return False
    numbers: dict[str, int | None] = {}
    rows: list[tuple[str, int, int]] = []
    for subscription, event in notifications:
        if subscription not in numbers:
            sql = "SELECT number FROM subscription_states WHERE subscription = ?"
            found = conn.execute(sql, (subscription,)).fetchone()
            numbers[subscription] = None if found is None else int(found[0])
        number = numbers[subscription]
        if number is None:  # not started, or stopped meanwhile
            continue
        numbers[subscription] = number = number + 1
        rows.append((subscription, number, event.seq))
    sql = "INSERT INTO notifications (subscription, number, seq) VALUES (?, ?, ?)"
    conn.executemany(sql, rows)
    updates = [(n, s) for s, n in numbers.items() if n is not None]
    conn.executemany("UPDATE subscription_states SET number = ? WHERE subscription = ?", updates)
    conn.execute(_SET_CURSOR, (CURSOR_KEY, str(cursor)))
    return True


def _state(conn: sqlite3.Connection, subscription: str) -> SubscriptionState | None:
    sql = f"SELECT {_STATE_COLUMNS} FROM subscription_states WHERE subscription = ?"
    row = conn.execute(sql, (subscription,)).fetchone()
    return SubscriptionState(*row) if row else None


def _states(conn: sqlite3.Connection) -> list[SubscriptionState]:
    sql = f"SELECT {_STATE_COLUMNS} FROM subscription_states ORDER BY subscription"
    return [SubscriptionState(*row) for row in conn.execute(sql)]


def _start(
    conn: sqlite3.Connection, subscription: str, topic: str, start_seq: int
) -> SubscriptionState:
    conn.execute(
        "INSERT INTO subscription_states (subscription, topic, start_seq) VALUES (?, ?, ?) "
        "ON CONFLICT (subscription) DO NOTHING",
        (subscription, topic, start_seq),
    )
    state = _state(conn, subscription)
    assert state is not None
    return state


def _stop(conn: sqlite3.Connection, subscription: str) -> None:
    conn.execute("DELETE FROM notifications WHERE subscription = ?", (subscription,))
    conn.execute("DELETE FROM subscription_states WHERE subscription = ?", (subscription,))


def _notifications(
    conn: sqlite3.Connection, subscription: str, since: int, until: int, limit: int
) -> list[Notification]:
    rows = conn.execute(_NOTIFICATIONS, (subscription, since, until, limit))
    return [Notification(row[0], row[1], _event(row[2:])) for row in rows]


def _prune(conn: sqlite3.Connection, before: str) -> int:
    seqs = conn.execute(_PRUNABLE, (_cursor(conn), before)).fetchall()
    conn.executemany("DELETE FROM notifications WHERE seq = ?", seqs)
    conn.executemany("DELETE FROM topic_events WHERE seq = ?", seqs)
    return len(seqs)


def _take_lease(conn: sqlite3.Connection, name: str, owner: str, seconds: float) -> bool:
    now = time.time()  # wall clock: leases are compared across processes
    conn.execute(_TAKE_LEASE, (name, owner, now + seconds, now))
    row = conn.execute("SELECT owner FROM leases WHERE name = ?", (name,)).fetchone()
    return row is not None and row[0] == owner

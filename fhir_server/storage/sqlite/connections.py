"""SQLite connections that stop at a deadline, and the pool searches take them from.

Why: the parser bounds a search's size, but a query within that size can still run long on
a large table.  Every connection carries a progress handler that interrupts its statement
once the deadline of the job running on it has passed, so a search (or a transaction holding
the write lock) has a bounded cost in time too.  Searches and history listings take an idle
connection from a pool; `read`/`vread` have a connection of their own, so slow searches never
queue a read behind them.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from fhir_server.storage.sqlite.schema import PRAGMAS

# SQLite VM steps between two deadline checks.  Each check takes the GIL in the connection's
# thread, so not too often: 100k steps are a few ms of work (the check's resolution).
PROGRESS_STEPS = 100_000


@dataclass(slots=True)
class Deadline:
    """When the statement running on one connection must stop (monotonic seconds)."""

    at: float = math.inf

    def passed(self) -> bool:
        return time.monotonic() > self.at

    def arm(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def disarm(self) -> None:
        self.at = math.inf

    def expire(self) -> None:
        """Stop now: the request that started the statement is gone."""
        self.at = -math.inf


@dataclass(eq=False, slots=True)
class Connection:
    db: aiosqlite.Connection
    deadline: Deadline = field(default_factory=Deadline)


async def connect(path: str) -> Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        await db.execute(pragma)
    connection = Connection(db)
    await in_thread(db, _watch, connection.deadline)
    return connection


def _watch(conn: sqlite3.Connection, deadline: Deadline) -> None:
    conn.set_progress_handler(deadline.passed, PROGRESS_STEPS)  # true: interrupt


def interrupted(exc: sqlite3.OperationalError, deadline: Deadline) -> bool:
    """Whether `exc` is the progress handler stopping a statement past its deadline."""
    return deadline.passed() and "interrupt" in str(exc)


async def in_thread(db: aiosqlite.Connection, fn: Any, *args: Any) -> Any:
    """Run `fn(sqlite3_connection, *args)` on aiosqlite's connection thread, in one hop.

    aiosqlite's `_execute` is internal but stable (0.17-0.22); without it each statement
    would be its own thread hop (~50-90 µs each here).
    """
    return await db._execute(lambda: fn(db._conn, *args))


class Pool:
    """Idle connections in a queue: a job takes one, or waits for one to come back."""

    def __init__(self, connections: list[Connection]) -> None:
        self.connections = connections
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        for connection in connections:
            self._idle.put_nowait(connection)

    @property
    def idle(self) -> int:
        return self._idle.qsize()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        connection = await self._idle.get()
        try:
            yield connection
        except asyncio.CancelledError:
            connection.deadline.expire()  # the statement still running for it stops
            raise
        finally:
            self._idle.put_nowait(connection)

    async def close(self) -> None:
        for connection in self.connections:
            await connection.db.close()

"""The SQLite engine of the storage port.

One writer connection: a unit of work is one `BEGIN IMMEDIATE` transaction, so writers are
serialised across coroutines (an asyncio lock) and across processes (SQLite's write lock).
That makes check-then-write interactions (conditional create, If-Match) race-free without
further locking. Readers use their own connections and see committed data only (WAL): one
for `read`/`vread`, and a pool for searches and history (see `connections`).

Costs are bounded in time: a search or history listing stops after `search_timeout` seconds
(400 too-costly), and a unit of work that holds the write lock longer than
`transaction_timeout` rolls back (400 too-costly, nothing stored).  A search runs as one job
on its connection's thread, compiling its SQL there too: a large query tree never blocks the
event loop, and the count and the page cost one thread hop, not two.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from fhir_server.errors import FhirError, error
from fhir_server.search.overlay import matches, scoped_to
from fhir_server.search.query import (
    AnyOf,
    Chain,
    Condition,
    Has,
    IdIn,
    Not,
    ReferenceMatch,
    SearchQuery,
)
from fhir_server.search.sql import (
    compile_after,
    compile_order,
    compile_walk,
    compile_where,
    date_walk,
    sort_columns,
)
from fhir_server.storage.port import (
    AccessFilter,
    HistoryQuery,
    IndexEntry,
    LockTimeout,
    Minted,
    Page,
    ResourceVersion,
    TopicEvent,
    VersionConflict,
)
from fhir_server.storage.sqlite.connections import (
    Connection,
    Deadline,
    Pool,
    connect,
    in_thread,
    interrupted,
)
from fhir_server.storage.sqlite.outbox import SqliteOutbox, insert_events
from fhir_server.storage.sqlite.schema import SCHEMA, declared_indexes
from fhir_server.storage.sqlite.writes import Rows, index_rows, put_all, replace_index

_VERSION_COLUMNS = "h.type, h.id, h.version, h.last_updated, h.method, h.json"
_CURRENT_FROM = (
    "FROM resources r JOIN history h ON h.type = r.type AND h.id = r.id AND h.version = r.version"
)
READERS = 4
SEARCH_TIMEOUT = 10.0
TRANSACTION_TIMEOUT = 60.0


class SqliteStorage:
    name = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        readers: int = READERS,
        search_timeout: float = SEARCH_TIMEOUT,
        transaction_timeout: float = TRANSACTION_TIMEOUT,
    ) -> None:
        self.path = str(path)
        self.readers = max(1, readers)
        self.search_timeout = search_timeout
        self.transaction_timeout = transaction_timeout
        self._writer: aiosqlite.Connection | None = None
        self._write_deadline = Deadline()
        self._reads: aiosqlite.Connection | None = None  # read/vread only: never a search's
        self.pool: Pool | None = None  # searches and history
        self._write_lock = asyncio.Lock()
        self.outbox = SqliteOutbox(self)

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        writer = await connect(self.path)
        self._writer, self._write_deadline = writer.db, writer.deadline
        # Another process's unit of work may hold the write lock as long as its timeout:
        # a writer waits that long for it, as a writer in this process would.
        await self._writer.execute(f"PRAGMA busy_timeout = {int(self.transaction_timeout * 1000)}")
        await _migrate(self._writer)
        self._reads = (await connect(self.path)).db
        self.pool = Pool([await connect(self.path) for _ in range(self.readers)])

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        for connection in [self._reads, self._writer]:
            if connection is not None:
                await connection.close()
        self.pool, self._reads, self._writer = None, None, None

    async def use_write_cache(self, mebibytes: int) -> None:
        """A page cache of this size for the writer (SQLite's default is 2 MB): a bulk
        import's batches touch far more index pages than that, and spilling them nearly
        halved its rate. Not the default: a 64 MB cache made searches slower."""
        assert self._writer is not None, "storage not open"
        async with self._write_lock:
            await self._writer.execute(f"PRAGMA cache_size = -{int(mebibytes) * 1024}")

    def _reader(self) -> aiosqlite.Connection:
        assert self._reads is not None, "storage not open"
        return self._reads

    async def run_write(self, fn: Any, *args: Any) -> Any:
        """`fn(conn, *args)` as its own `BEGIN IMMEDIATE` transaction on the writer, in one
        thread hop: the outbox's writes, which take the writer lock like a unit of work so
        they never land inside one's transaction."""
        assert self._writer is not None, "storage not open"
        async with self._write_lock:
            return await in_thread(self._writer, _transaction, fn, *args)

    async def run_read(self, fn: Any, *args: Any) -> Any:
        """`fn(conn, *args)` on the read connection (committed data only), in one hop."""
        return await in_thread(self._reader(), fn, *args)

    def _searcher(self) -> AbstractAsyncContextManager[Connection]:
        assert self.pool is not None, "storage not open"
        return self.pool.connection()

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[SqliteUnitOfWork]:
        assert self._writer is not None, "storage not open"
        writer, deadline = self._writer, self._write_deadline
        async with self._write_lock:
            deadline.arm(self.transaction_timeout)
            unit = SqliteUnitOfWork(writer, deadline, self.transaction_timeout)
            try:
                yield unit
                await unit.commit()
            except BaseException:
                deadline.expire()  # a statement a cancelled request left running stops now
                if unit.begun:
                    await asyncio.shield(in_thread(writer, _rollback, deadline))
                raise
            finally:
                deadline.disarm()

    async def read(self, type: str, id: str, access: AccessFilter) -> ResourceVersion | None:
        if not access.allows(type):
            return None
        return await in_thread(self._reader(), _current_row, type, id)  # type: ignore[no-any-return]

    async def vread(
        self, type: str, id: str, version: int, access: AccessFilter
    ) -> ResourceVersion | None:
        if not access.allows(type):
            return None
        return await in_thread(self._reader(), _version_row, type, id, version)  # type: ignore[no-any-return]

    async def history(self, query: HistoryQuery, access: AccessFilter) -> Page:
        async with self._searcher() as c:
            job = (c.deadline, self.search_timeout, "history listing", _history, query, access)
            return await in_thread(c.db, _timed, *job)  # type: ignore[no-any-return]

    async def search(self, query: SearchQuery, access: AccessFilter) -> Page:
        if not access.allows(query.type):
            return Page(items=[], total=0 if query.total else None)
        async with self._searcher() as c:
            job = (c.deadline, self.search_timeout, "search", _search, query, True)
            return await in_thread(c.db, _timed, *job)  # type: ignore[no-any-return]

    async def explain(self, query: SearchQuery) -> list[str]:
        """The query plan of a search (for tests and benchmarks)."""
        async with self._searcher() as c:
            return await explain(c.db, query)


class SqliteUnitOfWork:
    """Runs inside the writer's open transaction; sees its own writes.

    `BEGIN IMMEDIATE` runs in the thread hop of the first statement, and the last flush and
    `COMMIT` share one: a create that reads nothing costs one hop instead of three.
    Puts wait in a buffer and go to SQLite together, in one thread hop with one
    `executemany` per table, when the unit of work next reads what they change or ends: a
    transaction Bundle of 20 resources costs one hop instead of 20. A read that cannot see
    the buffered types leaves the buffer alone (`current` of a buffered resource answers from
    it), so the process rules' reads between a bundle's entries do not split its writes. A
    version conflict then surfaces at the flush, still inside the unit of work, so it rolls
    back as before.  Every operation first checks
    the transaction's deadline, and the writer's progress handler stops a statement past it:
    either way the unit of work fails with too-costly and rolls back.
    """

    def __init__(self, connection: aiosqlite.Connection, deadline: Deadline, timeout: float):
        self._db = connection
        self._deadline = deadline
        self._timeout = timeout
        self._pending: list[tuple[ResourceVersion, Rows]] = []
        self._pending_types: set[str] = set()
        self._events: list[TopicEvent] = []  # inserted with the puts, at the flush
        # Every put of this unit of work, flushed or not (the latest per resource), and the
        # ids it minted: nothing stored refers to them.
        self._mine: dict[str, dict[str, tuple[ResourceVersion, tuple[IndexEntry, ...]]]] = {}
        self._created = Minted()
        # The process rules ask the same questions for each entry of a bundle: a search's
        # answer stands until a put of a type it reads.
        self._found: dict[SearchQuery, list[ResourceVersion]] = {}
        # The remembered searches by what a put drops: those of its type (filed under their
        # type) and every one that joins other types (filed under None).
        self._found_by: dict[str | None, list[SearchQuery]] = {}
        self._read: dict[tuple[str, str], ResourceVersion | None] = {}  # nobody else writes
        self.begun = False  # whether `BEGIN IMMEDIATE` was sent (the first statement's hop)

    def check(self) -> None:
        """Past the deadline the transaction has held the write lock long enough: end it."""
        if self._deadline.passed():
            raise self._too_long()

    def _too_long(self) -> FhirError:
        message = f"The transaction took longer than {self._timeout:g} s; nothing was stored"
        return error(400, "too-costly", message)

    async def _run(self, fn: Any, *args: Any) -> Any:
        """`fn(conn, *args)` in the transaction, which the first call begins in its hop."""
        self.check()
        try:
            if self.begun:
                return await in_thread(self._db, fn, *args)
            self.begun = True
            return await in_thread(self._db, _begin_then, fn, *args)
        except sqlite3.OperationalError as exc:
            if interrupted(exc, self._deadline):
                raise self._too_long() from None
            raise

    async def lock(self, key: str) -> None:
        """Nothing to lock: `BEGIN IMMEDIATE` already serialises every writer."""
        self.check()

    def mint(self, type: str) -> str:
        return self._created.mint(type)

    def derive(self, type: str, id: str, source: str) -> str:
        return self._created.derive(type, id, source)

    async def add_event(self, event: TopicEvent) -> None:
        """Buffered with the puts: inserted in this transaction at the flush, so its seq
        follows commit order (writers are serialised) and a rollback drops it."""
        self.check()
        self._events.append(event)

    async def current(self, type: str, id: str) -> ResourceVersion | None:
        key = (type, id)
        mine = self._mine.get(type, {}).get(id)
        if mine is not None:
            self.check()
            return mine[0]
        if key in self._created:  # minted here and not yet written
            self.check()
            return None
        if key in self._read:
            self.check()
            return self._read[key]
        found: ResourceVersion | None = await self._run(_current_row, type, id)
        self._read[key] = found
        return found

    async def find(self, query: SearchQuery, access: AccessFilter) -> list[ResourceVersion]:
        if not access.allows(query.type):
            return []
        if self._created and scoped_to(query.where, self._created):
            self.check()
            return self._own(query)
        try:
            return list(self._found[query])
        except KeyError:
            pass
        except TypeError:  # a query holding an unhashable value is not remembered
            return await self._search(query)
        found = await self._search(query)
        self._found[query] = found
        joins = any(_joins(c) for c in query.where)
        self._found_by.setdefault(None if joins else query.type, []).append(query)
        return list(found)

    def _own(self, query: SearchQuery) -> list[ResourceVersion]:
        """The answer from this unit of work's own writes (`scoped_to` says it is whole)."""
        found = [
            version
            for version, index in self._mine.get(query.type, {}).values()
            if not version.deleted and matches(query.where, version.id, index, version.last_updated)
        ]
        return sorted(found, key=lambda v: v.id)

    async def _search(self, query: SearchQuery) -> list[ResourceVersion]:
        if self._pending and _reads_pending(query, self._pending_types):
            await self.flush()
        return (await self._run(_search, query, False)).items  # type: ignore[no-any-return]

    def _forget(self, type: str) -> None:
        """Drop the remembered searches a write of `type` may change: O(what it drops), not
        O(what is remembered), since a large Bundle puts once per entry."""
        for key in (type, None):
            for query in self._found_by.pop(key, ()):
                self._found.pop(query, None)

    async def put(self, version: ResourceVersion, index: Sequence[IndexEntry]) -> None:
        self.check()
        v = version
        self._forget(v.type)
        key = (v.type, v.id)
        entries = () if v.deleted else tuple(index)
        self._read.pop(key, None)
        self._mine.setdefault(v.type, {})[v.id] = (v, entries)
        self._pending.append((v, index_rows(v.type, v.id, entries)))
        self._pending_types.add(v.type)

    async def flush(self) -> None:
        """Write the buffered puts and topic events (VersionConflict if a version exists
        already)."""
        if not self._pending and not self._events:
            return
        batch, self._pending = self._pending, []
        self._pending_types = set()
        events, self._events = self._events, []
        try:
            await self._run(_write_all, batch, events)
        except sqlite3.IntegrityError:
            raise _conflict(batch) from None

    async def commit(self) -> None:
        """The last flush and `COMMIT` in one hop; nothing at all if nothing was written or
        read (VersionConflict as `flush`, too-costly past the deadline: rolled back)."""
        if not self.begun and not self._pending and not self._events:
            return
        batch, self._pending = self._pending, []
        self._pending_types = set()
        events, self._events = self._events, []
        try:
            committed = await self._run(_flush_commit, self._deadline, batch, events)
        except sqlite3.IntegrityError:
            raise _conflict(batch) from None
        if not committed:
            raise self._too_long()

    async def reindex(self, type: str, id: str, index: Sequence[IndexEntry]) -> None:
        """Replace the search values of the current version (no new version)."""
        self._forget(type)
        await self.flush()
        await self._run(replace_index, type, id, index_rows(type, id, index), False)

    async def meta(self, key: str) -> str | None:
        await self.flush()
        rows = await self._run(_fetch, "SELECT value FROM meta WHERE key = ?", [key])
        return rows[0][0] if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        await self.flush()
        sql = (
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        await self._run(_fetch, sql, [key, value])


def _conflict(batch: list[tuple[ResourceVersion, Rows]]) -> VersionConflict:
    v = batch[0][0] if len(batch) == 1 else None
    what = f"{v.type}/{v.id} version {v.version}" if v else "a version written here"
    return VersionConflict(f"{what} exists")


def _reads_pending(query: SearchQuery, pending_types: set[str]) -> bool:
    """Whether `query` may read rows of a buffered put: one of its own type, or any at all
    when it joins other types (a chain or `_has`)."""
    if query.type in pending_types:
        return True
    return any(_joins(condition) for condition in query.where)


def _joins(condition: Condition) -> bool:
    match condition:
        case Chain() | Has():
            return True
        case Not(term=term):
            return _joins(term)
        case AnyOf(terms=alternatives):
            return any(_joins(t) for t in alternatives)
    return False


def _timed(
    conn: sqlite3.Connection, deadline: Deadline, seconds: float, what: str, fn: Any, *args: Any
) -> Any:
    """`fn(conn, *args)` on a pooled reader, stopped by its progress handler after `seconds`."""
    deadline.arm(seconds)
    try:
        return fn(conn, *args)
    except sqlite3.OperationalError as exc:
        if interrupted(exc, deadline):
            message = f"The {what} took longer than {seconds:g} s; narrow it"
            raise error(400, "too-costly", message) from None
        raise
    finally:
        deadline.disarm()


def _write_all(
    conn: sqlite3.Connection, batch: list[tuple[ResourceVersion, Rows]], events: list[TopicEvent]
) -> None:
    if batch:
        put_all(conn, batch)
    if events:
        insert_events(conn, events)


def _transaction(conn: sqlite3.Connection, fn: Any, *args: Any) -> Any:
    """`fn(conn, *args)` in a transaction of its own: committed, or rolled back on error."""
    _begin(conn)
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _begin_then(conn: sqlite3.Connection, fn: Any, *args: Any) -> Any:
    """A unit of work's first statement: the write lock first, so it reads under it."""
    _begin(conn)
    return fn(conn, *args)


def _begin(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:  # busy past the timeout: nothing began
        raise LockTimeout("another process holds the database's write lock") from exc


def _flush_commit(
    conn: sqlite3.Connection,
    deadline: Deadline,
    batch: list[tuple[ResourceVersion, Rows]],
    events: list[TopicEvent],
) -> bool:
    """The last writes and COMMIT (never interrupted); False, uncommitted, past the deadline."""
    _write_all(conn, batch, events)
    if deadline.passed():
        return False
    deadline.disarm()
    conn.execute("COMMIT")
    return True


def _rollback(conn: sqlite3.Connection, deadline: Deadline) -> None:
    """ROLLBACK, never interrupted; nothing to do if BEGIN failed or COMMIT went through."""
    deadline.disarm()
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


async def _migrate(db: aiosqlite.Connection) -> None:
    """Create what SCHEMA declares; drop indexes it no longer declares or now defines otherwise."""
    declared = declared_indexes()
    existing = await db.execute_fetchall(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    )
    for name, sql in existing:
        if declared.get(name) != sql:
            await db.execute(f'DROP INDEX "{name}"')  # a name read from the schema, not input
    for statement in SCHEMA:
        await db.execute(statement)


def _version(row: Any) -> ResourceVersion:
    type_, id_, version, last_updated, method, json = row[:6]
    return ResourceVersion(type_, id_, version, last_updated, method, json)


_CURRENT_SQL = f"SELECT {_VERSION_COLUMNS} {_CURRENT_FROM} WHERE r.type = ? AND r.id = ?"


def _current_row(conn: sqlite3.Connection, type: str, id: str) -> ResourceVersion | None:
    row = conn.execute(_CURRENT_SQL, (type, id)).fetchone()
    return _version(row) if row else None


_VERSION_SQL = f"SELECT {_VERSION_COLUMNS} FROM history h WHERE type = ? AND id = ? AND version = ?"


def _version_row(
    conn: sqlite3.Connection, type: str, id: str, version: int
) -> ResourceVersion | None:
    row = conn.execute(_VERSION_SQL, (type, id, version)).fetchone()
    return _version(row) if row else None


def _count(conn: sqlite3.Connection, sql: str, params: list[Any]) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def _where(query: SearchQuery, probe: bool = False) -> tuple[str, list[Any]]:
    where, params = compile_where(query.where, query.type, probe=probe)
    where = "r.type = ? AND r.deleted = 0" + (f" AND {where}" if where else "")
    return where, [query.type, *params]


def _driven(query: SearchQuery) -> bool:
    """Whether a reference or an id list selects the rows, so that the broad conditions are
    better probed per row than listed in full: the process rules' `Task?patient=…&status=…`
    within a unit of work, which would otherwise list every requested Task."""
    return any(isinstance(c, ReferenceMatch | IdIn) for c in query.where)


def _page_sql(query: SearchQuery, *, paged: bool) -> tuple[str, list[Any]]:
    walk = date_walk(query) if paged else None
    if walk is not None:
        sql, params = compile_walk(query, walk, _VERSION_COLUMNS, _CURRENT_FROM[5:])
        offset = query.offset if query.after_key is None else 0
        return sql + " LIMIT ? OFFSET ?", [*params, query.count + 1, offset]
    where, params = _where(query, probe=paged or _driven(query))
    if paged and query.after is not None and not query.sort:
        where += " AND r.id > ?"
        params.append(query.after)
    backwards = paged and query.before is not None and not query.sort
    if backwards:
        where += " AND r.id < ?"
        params.append(query.before)
    if paged and query.sort and query.after_key is not None:
        after, after_params = compile_after(query.sort, query.type, query.after_key)
        where += f" AND {after}"
        params.extend(after_params)
    select = _VERSION_COLUMNS
    select_params: list[Any] = []
    for column, column_params in sort_columns(query.sort, query.type):
        select += f", {column}"  # the sort values, for the next page's keyset position
        select_params.extend(column_params)
    order, order_params = compile_order(query.sort, query.type)
    if backwards:
        order = "r.id DESC"  # the page just before `before`; `_search` restores id order
    sql = f"SELECT {select} {_CURRENT_FROM} WHERE {where} ORDER BY {order}"
    params = [*select_params, *params, *order_params]
    if paged:
        sql += " LIMIT ? OFFSET ?"
        offset = query.offset if query.sort and query.after_key is None else 0
        params.extend([query.count + 1, offset])
    return sql, params


async def explain(db: aiosqlite.Connection, query: SearchQuery) -> list[str]:
    """SQLite's plan for a search page (EXPLAIN QUERY PLAN), one line per step."""
    sql, params = _page_sql(query, paged=True)
    rows = await db.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}", params)
    return [str(row[3]) for row in rows]


def _search(conn: sqlite3.Connection, query: SearchQuery, paged: bool) -> Page:
    """A search, compiled and run on the connection's thread (one hop, off the event loop)."""
    total = None
    if query.total and paged:
        where, params = _where(query)
        total = _count(conn, f"SELECT count(*) FROM resources r WHERE {where}", params)
    sql, params = _page_sql(query, paged=paged)
    rows = conn.execute(sql, params).fetchall()
    if paged and query.before is not None and not query.sort:
        limit = query.count
        page = sorted(rows[:limit], key=lambda row: row[1])
        return Page([_version(row) for row in page], total, has_more=len(rows) > limit)
    limit = query.count if paged else len(rows)
    items = rows[:limit]
    keyed = bool(query.sort) or (paged and date_walk(query) is not None)
    if keyed and not query.sort:
        last_key = list(items[-1][6:]) if items else None  # the walk's (lo, hi, id)
    else:
        last_key = [*items[-1][6:], items[-1][1]] if query.sort and items else None
    versions = [_version(row) for row in items]
    return Page(versions, total, has_more=len(rows) > limit, last_key=last_key, keyed=keyed)


def _history(conn: sqlite3.Connection, query: HistoryQuery, access: AccessFilter) -> Page:
    where, params = _history_where(query, access)
    total = _count(conn, f"SELECT count(*) FROM history h WHERE {where}", params)
    if query.before is not None:
        b = query.before
        where += " AND (h.last_updated, h.type, h.id, h.version) < (?, ?, ?, ?)"
        params = [*params, b.last_updated, b.type, b.id, b.version]
    sql = (
        f"SELECT {_VERSION_COLUMNS} FROM history h WHERE {where} ORDER BY h.last_updated "
        "DESC, h.type DESC, h.id DESC, h.version DESC LIMIT ?"
    )
    rows = conn.execute(sql, [*params, query.count + 1]).fetchall()
    items = [_version(row) for row in rows[: query.count]]
    return Page(items=items, total=total, has_more=len(rows) > query.count)


def _history_where(query: HistoryQuery, access: AccessFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    if query.type is not None:
        clauses.append("h.type = ?")
        params.append(query.type)
        if not access.allows(query.type):
            clauses.append("0 = 1")
    elif access.resource_types is not None:
        clauses.append("h.type IN (SELECT value FROM json_each(?))")
        params.append(orjson.dumps(sorted(access.resource_types)).decode())
    if query.id is not None:
        clauses.append("h.id = ?")
        params.append(query.id)
    if query.since is not None:
        clauses.append("h.last_updated >= ?")
        params.append(query.since)
    return " AND ".join(clauses), params

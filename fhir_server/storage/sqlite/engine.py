"""The SQLite engine of the storage port.

One writer connection: a unit of work is one `BEGIN IMMEDIATE` transaction, so writers are
serialised across coroutines (an asyncio lock) and across processes (SQLite's write lock).
That makes check-then-write interactions (conditional create, If-Match) race-free without
further locking. Readers use their own connections and see committed data only (WAL).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from fhir_server.search.query import SearchQuery
from fhir_server.search.sql import (
    TABLES,
    compile_after,
    compile_order,
    compile_walk,
    compile_where,
    date_walk,
    sort_columns,
)
from fhir_server.storage.port import (
    AccessFilter,
    CompositeIndex,
    DateIndex,
    HistoryQuery,
    IndexEntry,
    NumberIndex,
    Page,
    QuantityIndex,
    ReferenceIndex,
    ResourceVersion,
    StringIndex,
    TextIndex,
    TokenIndex,
    UriIndex,
    VersionConflict,
)
from fhir_server.storage.sqlite.schema import PRAGMAS, SCHEMA, declared_indexes

_VERSION_COLUMNS = "h.type, h.id, h.version, h.last_updated, h.method, h.json"
_CURRENT_FROM = (
    "FROM resources r JOIN history h ON h.type = r.type AND h.id = r.id AND h.version = r.version"
)
READERS = 2


class SqliteStorage:
    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = itertools.cycle(range(READERS))
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await _connect(self.path)
        await _migrate(self._writer)
        self._readers = [await _connect(self.path) for _ in range(READERS)]

    async def close(self) -> None:
        for connection in [*self._readers, self._writer]:
            if connection is not None:
                await connection.close()
        self._readers, self._writer = [], None

    def _reader(self) -> aiosqlite.Connection:
        return self._readers[next(self._next_reader)]

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[SqliteUnitOfWork]:
        assert self._writer is not None, "storage not open"
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            unit = SqliteUnitOfWork(self._writer)
            try:
                yield unit
                await unit.flush()
            except BaseException:
                await asyncio.shield(self._writer.execute("ROLLBACK"))
                raise
            await asyncio.shield(self._writer.execute("COMMIT"))

    async def read(self, type: str, id: str, access: AccessFilter) -> ResourceVersion | None:
        if not access.allows(type):
            return None
        return await _current(self._reader(), type, id)

    async def vread(
        self, type: str, id: str, version: int, access: AccessFilter
    ) -> ResourceVersion | None:
        if not access.allows(type):
            return None
        sql = f"SELECT {_VERSION_COLUMNS} FROM history h WHERE type = ? AND id = ? AND version = ?"
        rows = await self._reader().execute_fetchall(sql, (type, id, version))
        return _version(rows[0]) if rows else None

    async def history(self, query: HistoryQuery, access: AccessFilter) -> Page:
        where, params = _history_where(query, access)
        reader = self._reader()
        total = await _count(reader, f"SELECT count(*) FROM history h WHERE {where}", params)
        if query.before is not None:
            b = query.before
            where += " AND (h.last_updated, h.type, h.id, h.version) < (?, ?, ?, ?)"
            params = [*params, b.last_updated, b.type, b.id, b.version]
        sql = (
            f"SELECT {_VERSION_COLUMNS} FROM history h WHERE {where} ORDER BY h.last_updated "
            "DESC, h.type DESC, h.id DESC, h.version DESC LIMIT ?"
        )
        rows = list(await reader.execute_fetchall(sql, [*params, query.count + 1]))
        items = [_version(row) for row in rows[: query.count]]
        return Page(items=items, total=total, has_more=len(rows) > query.count)

    async def search(self, query: SearchQuery, access: AccessFilter) -> Page:
        if not access.allows(query.type):
            return Page(items=[], total=0 if query.total else None)
        return await _search(self._reader(), query, paged=True)

    async def explain(self, query: SearchQuery) -> list[str]:
        """The query plan of a search (for tests and benchmarks)."""
        return await explain(self._reader(), query)


class SqliteUnitOfWork:
    """Runs inside the writer's open transaction; sees its own writes.

    Puts wait in a buffer and go to SQLite together, in one thread hop with one
    `executemany` per table, when the unit of work next reads or ends: a transaction Bundle of
    20 resources costs one hop instead of 20.  A version conflict then surfaces at that point,
    still inside the unit of work, so it rolls back as before.
    """

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        self._pending: list[tuple[ResourceVersion, Rows]] = []

    async def lock(self, key: str) -> None:
        """Nothing to do: `BEGIN IMMEDIATE` already serialises every writer."""

    async def current(self, type: str, id: str) -> ResourceVersion | None:
        await self.flush()
        return await _current(self._db, type, id)

    async def find(self, query: SearchQuery, access: AccessFilter) -> list[ResourceVersion]:
        if not access.allows(query.type):
            return []
        await self.flush()
        return (await _search(self._db, query, paged=False)).items

    async def put(self, version: ResourceVersion, index: Sequence[IndexEntry]) -> None:
        v = version
        self._pending.append((v, _index_rows(v.type, v.id, () if v.deleted else index)))

    async def flush(self) -> None:
        """Write the buffered puts (VersionConflict if a version exists already)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await _in_thread(self._db, _put_all, batch)
        except sqlite3.IntegrityError:
            v = batch[0][0] if len(batch) == 1 else None
            what = f"{v.type}/{v.id} version {v.version}" if v else "a version written here"
            raise VersionConflict(f"{what} exists") from None

    async def reindex(self, type: str, id: str, index: Sequence[IndexEntry]) -> None:
        """Replace the search values of the current version (no new version)."""
        await self.flush()
        await _in_thread(self._db, _replace_index, type, id, _index_rows(type, id, index), False)

    async def meta(self, key: str) -> str | None:
        await self.flush()
        rows = await self._db.execute_fetchall("SELECT value FROM meta WHERE key = ?", (key,))
        return next(iter(rows))[0] if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        await self.flush()
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


Rows = dict[str, list[tuple[Any, ...]]]


async def _in_thread(db: aiosqlite.Connection, fn: Any, *args: Any) -> Any:
    """Run `fn(sqlite3_connection, *args)` on aiosqlite's connection thread, in one hop.

    aiosqlite's `_execute` is internal but stable (0.17-0.22); without it each statement
    would be its own thread hop (~50-90 µs each here).
    """
    return await db._execute(lambda: fn(db._conn, *args))


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


def _put_all(conn: sqlite3.Connection, batch: list[tuple[ResourceVersion, Rows]]) -> None:
    """Several puts: one `executemany` per statement when each resource appears once."""
    if len({(v.type, v.id) for v, _ in batch}) < len(batch):
        for v, rows in batch:  # two versions of one resource: strictly in order
            _put(conn, v, rows)
        return
    conn.executemany(
        "INSERT INTO history (type, id, version, last_updated, method, json) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(v.type, v.id, v.version, v.last_updated, v.method, v.json) for v, _ in batch],
    )
    conn.executemany(_UPSERT_CURRENT, [(v.type, v.id, v.version, int(v.deleted)) for v, _ in batch])
    stale = [(v.type, v.id) for v, _ in batch if v.version != 1]
    if stale:
        for table in TABLES.values():
            conn.executemany(f"DELETE FROM {table} WHERE type = ? AND id = ?", stale)
    merged: Rows = {}
    for _, rows in batch:
        for table, table_rows in rows.items():
            merged.setdefault(table, []).extend(table_rows)
    _insert_rows(conn, merged)


_UPSERT_CURRENT = (
    "INSERT INTO resources (type, id, version, deleted) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (type, id) DO UPDATE SET version = excluded.version, deleted = excluded.deleted"
)


def _put(conn: sqlite3.Connection, v: ResourceVersion, rows: Rows) -> None:
    conn.execute(
        "INSERT INTO history (type, id, version, last_updated, method, json) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (v.type, v.id, v.version, v.last_updated, v.method, v.json),
    )
    conn.execute(_UPSERT_CURRENT, (v.type, v.id, v.version, int(v.deleted)))
    # A first version has no index rows to replace: no DELETEs for a create.
    _replace_index(conn, v.type, v.id, rows, v.version == 1)


def _replace_index(conn: sqlite3.Connection, type: str, id: str, rows: Rows, fresh: bool) -> None:
    if not fresh:
        for table in TABLES.values():
            conn.execute(f"DELETE FROM {table} WHERE type = ? AND id = ?", (type, id))
    _insert_rows(conn, rows)


def _insert_rows(conn: sqlite3.Connection, rows: Rows) -> None:
    for table, batch in rows.items():
        marks = ", ".join("?" * len(batch[0]))
        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", batch)


def _index_rows(type: str, id: str, index: Sequence[IndexEntry]) -> Rows:
    rows: Rows = {}
    for group, entry in enumerate(index):
        if isinstance(entry, CompositeIndex):
            for comp, part in enumerate(entry.parts):
                row = (type, id, entry.param, group, comp, *_composite_columns(part))
                rows.setdefault("idx_composite", []).append(row)
            continue
        table, values = _row(entry)
        rows.setdefault(table, []).append((type, id, entry.param, *values))
    return rows


def _composite_columns(part: IndexEntry) -> tuple[Any, ...]:
    """(system, code, value, lo, hi, unit) of one component, on the generic columns."""
    match part:
        case TokenIndex(system=system, code=code):
            return system, code, None, None, None, None
        case StringIndex(value=value):
            return None, None, value, None, None, None
        case DateIndex(low=low, high=high) | NumberIndex(low=low, high=high):
            return None, None, None, low, high, None
        case QuantityIndex(low=low, high=high, system=system, code=code, unit=unit):
            return system, code, None, low, high, unit
        case ReferenceIndex(type=type, id=id, url=url):
            return type, id, url, None, None, None
        case UriIndex(value=value):
            return None, None, value, None, None, None
    raise TypeError(f"unsupported composite part {part!r}")


def _row(entry: IndexEntry) -> tuple[str, tuple[Any, ...]]:
    """The table and the value columns (after type, id, param) of one index entry."""
    match entry:
        case TokenIndex(system=system, code=code):
            return "idx_token", (system, code)
        case TextIndex(value=value):
            return "idx_text", (value,)
        case StringIndex(value=value, exact=exact):
            return "idx_string", (value, exact)
        case DateIndex(low=low, high=high):
            return "idx_date", (low, high)
        case NumberIndex(low=low, high=high):
            return "idx_number", (low, high)
        case QuantityIndex(low=low, high=high, system=system, code=code, unit=unit):
            return "idx_quantity", (low, high, system, code, unit)
        case ReferenceIndex(type=type, id=id, version=version, url=url):
            return "idx_reference", (type, id, version, url)
        case UriIndex(value=value):
            return "idx_uri", (value,)
    raise TypeError(f"unknown index entry {entry!r}")


async def _connect(path: str) -> aiosqlite.Connection:
    connection = await aiosqlite.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        await connection.execute(pragma)
    return connection


def _version(row: Any) -> ResourceVersion:
    type_, id_, version, last_updated, method, json = row[:6]
    return ResourceVersion(type_, id_, version, last_updated, method, json)


async def _current(db: aiosqlite.Connection, type: str, id: str) -> ResourceVersion | None:
    sql = f"SELECT {_VERSION_COLUMNS} {_CURRENT_FROM} WHERE r.type = ? AND r.id = ?"
    rows = await db.execute_fetchall(sql, (type, id))  # one thread hop, not three
    return _version(rows[0]) if rows else None


async def _count(db: aiosqlite.Connection, sql: str, params: list[Any]) -> int:
    rows = await db.execute_fetchall(sql, params)
    return int(next(iter(rows))[0])


def _where(query: SearchQuery, probe: bool = False) -> tuple[str, list[Any]]:
    where, params = compile_where(query.where, query.type, probe=probe)
    where = "r.type = ? AND r.deleted = 0" + (f" AND {where}" if where else "")
    return where, [query.type, *params]


def _page_sql(query: SearchQuery, *, paged: bool) -> tuple[str, list[Any]]:
    walk = date_walk(query) if paged else None
    if walk is not None:
        sql, params = compile_walk(query, walk, _VERSION_COLUMNS, _CURRENT_FROM[5:])
        offset = query.offset if query.after_key is None else 0
        return sql + " LIMIT ? OFFSET ?", [*params, query.count + 1, offset]
    where, params = _where(query, probe=paged)
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


async def _search(db: aiosqlite.Connection, query: SearchQuery, *, paged: bool) -> Page:
    total = None
    if query.total and paged:
        where, params = _where(query)
        total = await _count(db, f"SELECT count(*) FROM resources r WHERE {where}", params)
    sql, params = _page_sql(query, paged=paged)
    rows = list(await db.execute_fetchall(sql, params))
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

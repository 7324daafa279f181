"""Writing versions and their search-index rows (one table per parameter type).

Runs on the writer's thread, inside the unit of work's transaction: a batch of puts is one
`executemany` per statement when each resource appears once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from fhir_server.search.sql import TABLES
from fhir_server.storage.port import (
    CompositeIndex,
    DateIndex,
    IndexEntry,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    ResourceVersion,
    StringIndex,
    TextIndex,
    TokenIndex,
    UriIndex,
)

Rows = dict[str, list[tuple[Any, ...]]]


def put_all(conn: sqlite3.Connection, batch: list[tuple[ResourceVersion, Rows]]) -> None:
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
    replace_index(conn, v.type, v.id, rows, v.version == 1)


def replace_index(conn: sqlite3.Connection, type: str, id: str, rows: Rows, fresh: bool) -> None:
    if not fresh:
        for table in TABLES.values():
            conn.execute(f"DELETE FROM {table} WHERE type = ? AND id = ?", (type, id))
    _insert_rows(conn, rows)


def _insert_rows(conn: sqlite3.Connection, rows: Rows) -> None:
    for table, batch in rows.items():
        marks = ", ".join("?" * len(batch[0]))
        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", batch)


def index_rows(type: str, id: str, index: Sequence[IndexEntry]) -> Rows:
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

"""Compile the query tree to SQLite SQL with bound parameters.

Only fixed SQL text comes from here; every user value travels as a parameter.  Each condition
is a predicate on one `resources` row alias; index tables are looked up through
`alias.id IN (subquery)` where the subquery names the resource type as a bound value, so it is
not correlated: SQLite computes it once, using the (type, param, value…) indexes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from fhir_server.errors import error
from fhir_server.search.normalise import fold
from fhir_server.search.query import (
    AnyOf,
    Chain,
    CompositeMatch,
    Condition,
    DateMatch,
    Has,
    IdIn,
    LastUpdated,
    Missing,
    Not,
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    SearchQuery,
    SortKey,
    StringMatch,
    TextMatch,
    TokenMatch,
    UriMatch,
)
from fhir_server.search.ranges import range_terms

TABLES = {
    "token": "idx_token",
    "text": "idx_text",
    "string": "idx_string",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "reference": "idx_reference",
    "uri": "idx_uri",
    "composite": "idx_composite",
}
_TOP = "\U0010ffff"  # sorts after every other character: `prefix <= v < prefix + _TOP`

SQL = tuple[str, list[Any]]


def compile_where(
    conditions: Iterable[Condition], type: str, alias: str = "r", probe: bool = False
) -> SQL:
    """AND of all conditions on `alias` (a `resources` row of `type`); ('', []) if none.

    `probe=False` compiles each condition to `alias.id IN (list)`: best when counting, and
    for selective conditions.  `probe=True` (a page of results in id order) compiles broad
    conditions (codes, dates, strings, numbers) to a correlated `EXISTS` probe on the
    (type, id, param) index, so the scan stops once the page is full instead of first
    listing every match; identifiers and references stay lists, which drive the search.
    """
    compiled = [_compile(condition, type, alias, probe) for condition in conditions]
    if len(compiled) <= _FLAT:
        return " AND ".join(sql for sql, _ in compiled), [v for _, vs in compiled for v in vs]
    return _balanced(compiled, "AND")


_FLAT = 16  # terms joined in a row; longer lists become a balanced tree


def _balanced(compiled: list[SQL], op: str) -> SQL:
    """`a op b op …` as a parenthesised tree of depth log n, parameters in order.

    Why: SQLite parses `a OR b OR c …` into a left-deep tree, and refuses a statement whose
    expression tree is deeper than 1000 (SQLITE_MAX_EXPR_DEPTH), so 1000 alternatives or
    1000 repeated parameters in a row would fail; the planner flattens the tree again.
    """
    if not compiled:  # an empty alternative (e.g. a value set without codes) matches nothing
        return ("(0 = 1)" if op == "OR" else "(1 = 1)"), []
    if len(compiled) <= _FLAT:
        sql = f" {op} ".join(part for part, _ in compiled)
        return f"({sql})", [value for _, values in compiled for value in values]
    middle = len(compiled) // 2
    left, left_values = _balanced(compiled[:middle], op)
    right, right_values = _balanced(compiled[middle:], op)
    return f"({left} {op} {right})", [*left_values, *right_values]


_LISTED = frozenset({"idx_reference", "idx_uri"})  # selective: matches drive the search


def _owner(
    probe: bool, alias: str, table: str, type: str, param: str, predicate: str, values: list[Any]
) -> SQL:
    if probe and table not in _LISTED and not param.endswith("identifier"):
        # INDEXED BY: the planner would otherwise pick the (type, param, value) index and
        # walk every value of the parameter for each probe.
        sql = f"EXISTS (SELECT 1 FROM {table} x INDEXED BY {table}_by_owner WHERE x.type = ? "
        sql += f"AND x.id = {alias}.id AND x.param = ?"
    else:
        sql = f"{alias}.id IN (SELECT x.id FROM {table} x WHERE x.type = ? AND x.param = ?"
    if predicate:
        sql += f" AND {predicate}"
    return sql + ")", [type, param, *values]


def _ranges(prefix: Any, low: Any, high: Any, lo: str = "x.lo", hi: str = "x.hi") -> SQL:
    columns = {"lo": lo, "hi": hi}
    alternatives, values = [], []
    for alternative in range_terms(prefix, low, high):
        alternatives.append(" AND ".join(f"{columns[f]} {op} ?" for f, op, _ in alternative))
        values.extend(v for _, _, v in alternative)
    return "(" + " OR ".join(f"({a})" for a in alternatives) + ")", values


def _compile(condition: Condition, type: str, a: str, probe: bool) -> SQL:
    match condition:
        case IdIn(ids=ids):
            # One JSON parameter, however many ids: no SQL variable limit to hit.
            return f"{a}.id IN (SELECT value FROM json_each(?))", [orjson.dumps(list(ids)).decode()]
        case LastUpdated(prefix=prefix, low=low, high=high):
            column = (
                f"(SELECT h2.last_updated FROM history h2 WHERE h2.type = {a}.type "
                f"AND h2.id = {a}.id AND h2.version = {a}.version)"
            )
            return _ranges(prefix, low, high, column, column)
        case TokenMatch(param=param, system=system, code=code):
            predicate, values = [], []
            if code is not None:
                predicate.append("x.code = ?")
                values.append(code)
            if system == "":
                predicate.append("x.system IS NULL")
            elif system is not None:
                predicate.append("x.system = ?")
                values.append(system)
            return _owner(probe, a, "idx_token", type, param, " AND ".join(predicate), values)
        case TextMatch(param=param, value=value):
            return _owner(
                probe,
                a,
                "idx_text",
                type,
                param,
                "x.value >= ? AND x.value < ?",
                [value, value + _TOP],
            )
        case StringMatch(param=param, value=value, mode=mode):
            if mode == "exact":
                predicate = "x.value = ? AND x.exact = ?"  # the folded value finds it
                return _owner(probe, a, "idx_string", type, param, predicate, [fold(value), value])
            if mode == "contains":
                return _owner(probe, a, "idx_string", type, param, "instr(x.value, ?) > 0", [value])
            return _owner(
                probe,
                a,
                "idx_string",
                type,
                param,
                "x.value >= ? AND x.value < ?",
                [value, value + _TOP],
            )
        case DateMatch(param=param, prefix=prefix, low=low, high=high):
            return _owner(probe, a, "idx_date", type, param, *_ranges(prefix, low, high))
        case NumberMatch(param=param, prefix=prefix, low=low, high=high):
            return _owner(probe, a, "idx_number", type, param, *_ranges(prefix, low, high))
        case QuantityMatch(param=param, prefix=prefix, low=low, high=high, system=s, code=c):
            predicate, values = _ranges(prefix, low, high)
            if s is not None:
                predicate += " AND x.system = ?"
                values.append(s)
            if c is not None and s is not None:
                predicate += " AND x.code = ?"
                values.append(c)
            elif c is not None:  # no system: the code may be the unit as written
                predicate += " AND (x.code = ? OR x.unit = ?)"
                values.extend([c, c])
            return _owner(probe, a, "idx_quantity", type, param, predicate, values)
        case ReferenceMatch(param=param, type=target, id=id, url=url):
            local, values = [], []
            if id is not None:
                local.append("x.target_id = ?")
                values.append(id)
                if target is not None:
                    local.append("x.target_type = ?")
                    values.append(target)
            predicate = " AND ".join(local)
            if url is not None:
                predicate = f"(({predicate}) OR x.url = ?)" if predicate else "x.url = ?"
                values.append(url)
            return _owner(probe, a, "idx_reference", type, param, predicate, values)
        case UriMatch(param=param, value=value, mode=mode):
            if mode == "above":  # the stored uri is a prefix of the value
                return _owner(
                    probe,
                    a,
                    "idx_uri",
                    type,
                    param,
                    "substr(?, 1, length(x.value)) = x.value",
                    [value],
                )
            if mode == "below":
                return _owner(
                    probe,
                    a,
                    "idx_uri",
                    type,
                    param,
                    "x.value >= ? AND x.value < ?",
                    [value, value + _TOP],
                )
            return _owner(probe, a, "idx_uri", type, param, "x.value = ?", [value])
        case CompositeMatch(param=param, parts=parts):
            joins = "".join(
                f" JOIN idx_composite c{i} ON c{i}.type = c0.type AND c{i}.id = c0.id AND "
                f"c{i}.param = c0.param AND c{i}.grp = c0.grp AND c{i}.comp = {i}"
                for i in range(1, len(parts))
            )
            predicates, values = [], [type, param]
            for i, part in enumerate(parts):
                sql, part_values = _part(part, f"c{i}")
                predicates.append(sql)
                values.extend(part_values)
            return (
                f"{a}.id IN (SELECT c0.id FROM idx_composite c0{joins} WHERE c0.type = ? AND "
                f"c0.param = ? AND c0.comp = 0 AND {' AND '.join(predicates)})",
                values,
            )
        case Missing(param=param, kind=kind, missing=missing):
            sql, values = _owner(probe, a, TABLES[kind], type, param, "", [])
            return (f"NOT ({sql})" if missing else sql), values
        case Not(term=term):
            sql, values = _compile(term, type, a, probe)
            return f"NOT ({sql})", values
        case AnyOf(terms=terms):
            # A long list is listed, not probed: a probe per alternative per resource would
            # cost the page (alternatives x resources scanned) instead of one lookup each.
            probe = probe and len(terms) <= _FLAT
            return _balanced([_compile(term, type, a, probe) for term in terms], "OR")
        case Chain(param=param, target=target, where=where):
            inner = a + "c"
            sql, values = compile_where(where, target, inner)
            return (
                f"{a}.id IN (SELECT x.id FROM idx_reference x WHERE x.type = ? AND x.param = ? "
                f"AND x.target_type = ? AND x.target_id IN (SELECT {inner}.id FROM resources "
                f"{inner} WHERE {inner}.type = ? AND {inner}.deleted = 0 AND {sql}))",
                [type, param, target, target, *values],
            )
        case Has(source=source, param=param, where=where) if probe:
            inner = a + "h"  # per resource: is there a referrer that matches? (stops early)
            sql, values = compile_where(where, source, inner, probe=True)
            return (
                f"EXISTS (SELECT 1 FROM idx_reference x JOIN resources {inner} ON "
                f"{inner}.type = x.type AND {inner}.id = x.id WHERE x.target_type = ? AND "
                f"x.target_id = {a}.id AND x.type = ? AND x.param = ? AND "
                f"{inner}.deleted = 0 AND {sql})",
                [type, source, param, *values],
            )
        case Has(source=source, param=param, where=where):
            inner = a + "h"
            sql, values = compile_where(where, source, inner)
            return (
                f"{a}.id IN (SELECT x.target_id FROM idx_reference x WHERE x.type = ? AND "
                f"x.param = ? AND x.target_type = ? AND x.id IN (SELECT {inner}.id FROM "
                f"resources {inner} WHERE {inner}.type = ? AND {inner}.deleted = 0 AND {sql}))",
                [source, param, type, source, *values],
            )
    raise TypeError(f"unknown condition {condition!r}")


def _part(condition: Condition, c: str) -> SQL:
    """One component of a composite entry, on the generic columns of `idx_composite`."""
    match condition:
        case TokenMatch(system=system, code=code):
            sql, values = ["1 = 1"], []
            if code is not None:
                sql.append(f"{c}.code = ?")
                values.append(code)
            if system == "":
                sql.append(f"{c}.system IS NULL")
            elif system is not None:
                sql.append(f"{c}.system = ?")
                values.append(system)
            return " AND ".join(sql), values
        case StringMatch(value=value, mode=mode):
            if mode == "contains":
                return f"instr({c}.value, ?) > 0", [value]
            if mode == "exact":
                return f"{c}.value = ?", [value]
            return f"{c}.value >= ? AND {c}.value < ?", [value, value + _TOP]
        case (
            DateMatch(prefix=prefix, low=low, high=high)
            | NumberMatch(prefix=prefix, low=low, high=high)
        ):
            return _ranges(prefix, low, high, f"{c}.lo", f"{c}.hi")
        case QuantityMatch(prefix=prefix, low=low, high=high, system=s, code=code):
            sql, values = _ranges(prefix, low, high, f"{c}.lo", f"{c}.hi")
            if s is not None:
                sql += f" AND {c}.system = ?"
                values.append(s)
            if code is not None:
                sql += f" AND ({c}.code = ? OR {c}.unit = ?)"
                values.extend([code, code])
            return sql, values
        case ReferenceMatch(type=target, id=id, url=url):
            local = f"{c}.code = ?" + (f" AND {c}.system = ?" if target else "")
            values = [id, target] if target else [id]
            if url is None:
                return local, values
            return f"(({local}) OR {c}.value = ?)", [*values, url]
        case UriMatch(value=value):
            return f"{c}.value = ?", [value]
    raise TypeError(f"unsupported composite part {condition!r}")


_SORT_VALUE = {
    "token": ("idx_token", "x.code", "x.code"),
    "string": ("idx_string", "x.value", "x.value"),
    "date": ("idx_date", "x.lo", "x.hi"),
    "number": ("idx_number", "x.lo", "x.hi"),
    "quantity": ("idx_quantity", "x.lo", "x.hi"),
    "reference": ("idx_reference", "coalesce(x.target_id, x.url)", "coalesce(x.target_id, x.url)"),
    "uri": ("idx_uri", "x.value", "x.value"),
}


_NUMERIC = frozenset({"number", "quantity"})


def sort_columns(keys: Iterable[SortKey], type: str, a: str = "r") -> list[SQL]:
    """One SQL expression per `_sort` key: a resource's lowest value ascending, highest
    descending (the spec's rule for repeating elements).  A resource without a value gets
    the lowest possible one (as MongoDB orders a missing field), so no expression is NULL."""
    columns: list[SQL] = []
    for key in keys:
        if key.kind == "id":
            columns.append((f"{a}.id", []))
            continue
        if key.kind == "lastUpdated":
            columns.append((
                f"(SELECT h2.last_updated FROM history h2 WHERE h2.type = {a}.type AND "
                f"h2.id = {a}.id AND h2.version = {a}.version)", [],
            ))  # fmt: skip
            continue
        table, low, high = _SORT_VALUE[key.kind]
        value = f"max({high})" if key.descending else f"min({low})"
        lowest = "-1e308" if key.kind in _NUMERIC else "''"
        columns.append((
            f"coalesce((SELECT {value} FROM {table} x INDEXED BY {table}_by_owner "
            f"WHERE x.type = ? AND x.id = {a}.id "
            f"AND x.param = ?), {lowest})", [type, key.param],
        ))  # fmt: skip
    return columns


def compile_order(keys: Iterable[SortKey], type: str, a: str = "r") -> SQL:
    """ORDER BY for `_sort` (see `sort_columns`); the id breaks ties."""
    keys = list(keys)
    parts: list[str] = []
    values: list[Any] = []
    for key, (sql, params) in zip(keys, sort_columns(keys, type, a), strict=True):
        parts.append(f"{sql} {'DESC' if key.descending else 'ASC'}")
        values.extend(params)
    parts.append(f"{a}.id ASC")
    return ", ".join(parts), values


def compile_after(keys: Iterable[SortKey], type: str, last: tuple[Any, ...], a: str = "r") -> SQL:
    """Rows strictly after `last` (sort values, then id) in the `_sort` order: keyset paging
    that stays correct while resources are created or deleted between pages."""
    keys = list(keys)
    if len(last) != len(keys) + 1:
        raise error(400, "invalid", "'_cursor' is not a paging position", "_cursor")
    columns = sort_columns(keys, type, a)
    *values, last_id = last
    alternatives: list[str] = []
    params: list[Any] = []
    for k in range(len(keys) + 1):
        clause: list[str] = []
        for j in range(k):
            clause.append(f"{columns[j][0]} = ?")
            params.extend([*columns[j][1], values[j]])
        if k < len(keys):
            op = "<" if keys[k].descending else ">"
            clause.append(f"{columns[k][0]} {op} ?")
            params.extend([*columns[k][1], values[k]])
        else:
            clause.append(f"{a}.id > ?")
            params.append(last_id)
        alternatives.append("(" + " AND ".join(clause) + ")")
    return "(" + " OR ".join(alternatives) + ")", params


_BOUNDED = frozenset({"eq", "lt", "le", "eb", "ap"})  # prefixes that bound a value from above
# `lo` (<= hi) is bounded by what the prefix demands of lo or hi; `ap` bounds lo itself.
_TOP_OF_WINDOW = {
    "eq": ("<=", "high"),
    "le": ("<=", "high"),
    "lt": ("<", "low"),
    "eb": ("<", "low"),
}
_PROBED = (TokenMatch, TextMatch, StringMatch, DateMatch, NumberMatch, QuantityMatch, Missing)


def date_walk(query: SearchQuery) -> DateMatch | None:
    """The date condition an unsorted page can walk in date order, or None.

    Why: a date window (`date=ge2026-03-01&date=lt2026-03-08`) matches a fixed share of a
    type, so a page in id order probes about `page / share` resources, however large the
    table.  Walking the date index down from the window's upper end instead stops after a
    page.  Only when nothing else drives the search (no reference, identifier, id, chain)
    and the caller did not ask for id order.
    """
    if query.sort or query.id_order or query.after is not None or query.before is not None:
        return None
    walk = None
    for condition in query.where:
        if isinstance(condition, TokenMatch) and condition.param.endswith("identifier"):
            return None  # selective: the identifier list drives the search
        if isinstance(condition, Not) and isinstance(condition.term, _PROBED):
            continue
        if not isinstance(condition, _PROBED):
            return None
        if walk is None and isinstance(condition, DateMatch) and condition.prefix in _BOUNDED:
            walk = condition
    return walk


def compile_walk(query: SearchQuery, walk: DateMatch, columns: str, current: str) -> SQL:
    """A page in date order: down the (type, param, lo, hi, id) index from the window's end.

    Each resource appears once, at its latest matching value (no other matching value of it
    has a higher (lo, hi)); the page order is (lo, hi, id) descending, and `after_key` holds
    the last row's (lo, hi, id) for the next page.  Other conditions are per-row probes.
    """
    rest = tuple(c for c in query.where if c is not walk)
    where, values = compile_where(rest, query.type, probe=True)
    on_x, x_values = _ranges(walk.prefix, walk.low, walk.high)
    top = _TOP_OF_WINDOW.get(walk.prefix)  # the index range: lo at most the window's end
    if top is not None:
        on_x += f" AND x.lo {top[0]} ?"
        x_values.append(walk.low if top[1] == "low" else walk.high)
    on_y, y_values = _ranges(walk.prefix, walk.low, walk.high, "y.lo", "y.hi")
    sql = (
        f"SELECT {columns}, x.lo, x.hi, x.id FROM idx_date x INDEXED BY idx_date_0 "
        f"CROSS JOIN {current} WHERE x.type = ? AND x.param = ? AND {on_x} "
        "AND r.type = x.type AND r.id = x.id AND r.deleted = 0 "
        "AND NOT EXISTS (SELECT 1 FROM idx_date y INDEXED BY idx_date_by_owner "
        "WHERE y.type = x.type AND y.id = x.id AND y.param = x.param "
        f"AND {on_y} AND (y.lo > x.lo OR (y.lo = x.lo AND y.hi > x.hi)))"
    )
    params = [query.type, walk.param, *x_values, *y_values]
    if where:
        sql += f" AND {where}"
        params.extend(values)
    if query.after_key is not None:
        if len(query.after_key) != 3 or not all(isinstance(v, str) for v in query.after_key):
            raise error(400, "invalid", "'_cursor' is not a paging position", "_cursor")
        lo, hi, id = query.after_key
        sql += " AND (x.lo < ? OR (x.lo = ? AND (x.hi < ? OR (x.hi = ? AND x.id < ?))))"
        params.extend([lo, lo, hi, hi, id])
    return sql + " ORDER BY x.lo DESC, x.hi DESC, x.id DESC", params

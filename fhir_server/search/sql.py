"""Compile the query tree to SQLite SQL with bound parameters.

Only fixed SQL text comes from here; every user value travels as a parameter. The resource row
is aliased `r`; index tables are looked up through `r.id IN (subquery)` so SQLite uses the
(type, param, code, system) index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from fhir_server.search.query import AnyOf, Condition, IdIn, TokenMatch


def compile_where(conditions: Iterable[Condition]) -> tuple[str, list[Any]]:
    """AND of all conditions; returns ('' , []) when there are none."""
    parts: list[str] = []
    params: list[Any] = []
    for condition in conditions:
        sql, values = _compile(condition)
        parts.append(sql)
        params.extend(values)
    return " AND ".join(parts), params


def _compile(condition: Condition) -> tuple[str, list[Any]]:
    match condition:
        case IdIn(ids=ids):
            # One JSON parameter, however many ids: no SQL variable limit to hit.
            return "r.id IN (SELECT value FROM json_each(?))", [orjson.dumps(list(ids)).decode()]
        case TokenMatch(param=param, system=system, code=code):
            sql = "r.id IN (SELECT t.id FROM idx_token t WHERE t.type = r.type AND t.param = ?"
            params: list[Any] = [param]
            if code is not None:
                sql += " AND t.code = ?"
                params.append(code)
            if system == "":
                sql += " AND t.system IS NULL"
            elif system is not None:
                sql += " AND t.system = ?"
                params.append(system)
            return sql + ")", params
        case AnyOf(terms=terms):
            compiled = [_compile(term) for term in terms]
            sql = "(" + " OR ".join(part for part, _ in compiled) + ")"
            return sql, [value for _, values in compiled for value in values]
    raise TypeError(f"unknown condition {condition!r}")

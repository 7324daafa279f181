"""search-type: the parsed query runs on the storage port; the result is a searchset Bundle.

Matches come from one storage search; `_include`/`_revinclude` (with `:iterate`) add each
referenced or referring resource once, as `search.mode = include`; `_summary`/`_elements`
subset what is returned.  Stored bytes are served as they are unless a subset is asked for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from fhir_server import fhirjson
from fhir_server.errors import Issue, error, operation_outcome
from fhir_server.interactions.bundles import bundle, full_url, link, resource_fragment
from fhir_server.interactions.context import Context
from fhir_server.interactions.subsetting import Subset, parse_subset, subset
from fhir_server.resource_types import resource_types
from fhir_server.search.indexer import reference_entries
from fhir_server.search.parser import Include, encode_cursor, parse_search
from fhir_server.search.query import AnyOf, Condition, IdIn, ReferenceMatch, SearchQuery
from fhir_server.storage.port import Page, ResourceVersion
from fhir_server.validation.definitions import compartments

MAX_INCLUDED = 1000  # per page; more is refused by truncation with a warning
MAX_ITERATE = 3  # rounds of `:iterate`


async def search_type(
    ctx: Context,
    type: str,
    params: Sequence[tuple[str, str]],
    *,
    lenient: bool,
    compartment: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """`[type]?…`, or `[Compartment]/[id]/[type]?…` when `compartment` is given."""
    parsed = parse_search(
        type,
        params,
        default_count=ctx.settings.default_page_size,
        max_count=ctx.settings.max_page_size,
        lenient=lenient,
    )
    wanted = parse_subset(list(params))
    query = parsed.query
    path = type
    if compartment is not None:
        query = replace(query, where=(*query.where, in_compartment(type, *compartment)))
        path = f"{compartment[0]}/{compartment[1]}/{type}"
    if wanted.summary == "count":
        query = replace(query, count=0, total=True)
    page = await ctx.storage.search(query, ctx.access)
    links = {"self": link(ctx.base_url, path, parsed.applied)}
    for relation, position in _paging(query, page):
        cursor = encode_cursor(position)
        links[relation] = link(ctx.base_url, path, [*parsed.applied, ("_cursor", cursor)])
    entries = [_entry(ctx, v, "match", wanted) for v in page.items]
    included, truncated = await _included(ctx, page.items, parsed.includes)
    entries += [_entry(ctx, v, "include", wanted) for v in included]
    warnings = list(parsed.warnings)
    if truncated:
        message = f"More than {MAX_INCLUDED} included resources; the rest were left out"
        warnings.append(Issue("warning", "too-costly", message))
    if warnings:
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    return bundle("searchset", page.total, links, entries)


async def search_system(
    ctx: Context, params: Sequence[tuple[str, str]], *, lenient: bool
) -> dict[str, Any]:
    """`[base]?_type=A,B&…`: the same criteria on each type, in (type, id) order.

    Without `_type` every resource type is searched.  The keyset cursor is (type, id), so
    paging is stable while data changes, as for one type.
    """
    types = sorted(resource_types())
    rest: list[tuple[str, str]] = []
    for name, value in params:
        if name == "_type":
            types = sorted({t.strip() for t in value.split(",") if t.strip()})
            unknown = [t for t in types if t not in resource_types()]
            if unknown or not types:
                raise error(400, "invalid", f"_type: not resource types: {unknown}", "_type")
        else:
            rest.append((name, value))
    settings = ctx.settings
    first = parse_search(
        types[0],
        rest,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        lenient=lenient,
    )
    count, start = first.query.count, first.query.after
    after_type, _, after_id = (start or "").partition("/")
    entries: list[dict[str, Any]] = []
    total: int | None = 0 if first.query.total else None
    last: ResourceVersion | None = None
    has_more = False
    deadline = time.monotonic() + settings.search_timeout  # one budget for all the types
    for type in types:
        if time.monotonic() > deadline:
            raise error(
                400, "too-costly", f"The search took longer than {settings.search_timeout:g} s; "
                "narrow it (fewer types in _type, or more selective criteria)", "_type",
            )  # fmt: skip
        parsed = parse_search(type, rest, default_count=count, max_count=count, lenient=lenient)
        if parsed.query.sort:
            raise error(400, "not-supported", "_sort is not offered on system search", "_sort")
        query = replace(parsed.query, after=None, id_order=True)
        before_cursor = start is not None and type < after_type
        if start is not None and type == after_type:
            query = replace(query, after=after_id)
        room = 0 if before_cursor else count - len(entries)
        page = await ctx.storage.search(replace(query, count=room), ctx.access)
        if total is not None and page.total is not None:
            total += page.total
        if room > 0:
            entries += [_entry(ctx, v, "match", Subset()) for v in page.items]
            last = page.items[-1] if page.items else last
            has_more = has_more or page.has_more
        elif not before_cursor and (page.has_more or page.total):
            has_more = True
        if len(entries) >= count and total is None:
            has_more = True
            break
    applied = [("_type", ",".join(types)), *first.applied]
    links = {"self": link(ctx.base_url, "", applied)}
    if has_more and last is not None:
        cursor = encode_cursor(f"{last.type}/{last.id}")
        links["next"] = link(ctx.base_url, "", [*applied, ("_cursor", cursor)])
    return bundle("searchset", total, links, entries)


def in_compartment(type: str, compartment: str, id: str) -> Condition:
    """The resources of `type` in the compartment of `compartment/id` (R4 definitions)."""
    members = compartments().get(compartment)
    if members is None:
        raise error(404, "not-found", f"{compartment} is not a compartment type")
    params = members.get(type, ())
    terms: list[Condition] = [ReferenceMatch(p, compartment, id, None) for p in params]
    if type == compartment:
        terms.append(IdIn((id,)))  # the compartment's own resource
    if not terms:
        raise error(400, "invalid", f"{type} is never in a {compartment} compartment")
    return terms[0] if len(terms) == 1 else AnyOf(tuple(terms))


def _paging(query: SearchQuery, page: Page) -> list[tuple[str, object]]:
    """`next`/`previous` positions: keyset on id when unsorted; when sorted, `next` is a
    keyset on the sort values (stable while data changes), `previous` an offset.  A page
    the engine returned in another keyset order (`keyed`) pages as a sorted one."""
    if not page.items or query.count == 0:
        return []
    if page.keyed:
        out: list[tuple[str, object]] = []
        if query.offset > 0:
            out.append(("previous", {"offset": max(0, query.offset - query.count)}))
        if page.has_more and page.last_key is not None:
            out.append(("next", {"key": page.last_key, "offset": query.offset + query.count}))
        return out
    backwards = query.before is not None
    more_after = page.has_more if not backwards else True
    more_before = (query.after is not None) if not backwards else page.has_more
    out = []
    if more_before:
        out.append(("previous", {"before": page.items[0].id}))
    if more_after:
        out.append(("next", page.items[-1].id))
    return out


def _entry(ctx: Context, version: ResourceVersion, mode: str, wanted: Subset) -> dict[str, Any]:
    if wanted.whole:
        body: Any = resource_fragment(version)
    else:
        assert version.json is not None
        body = subset(fhirjson.loads_resource(version.json), wanted)
    return {"fullUrl": full_url(ctx.base_url, version), "resource": body, "search": {"mode": mode}}


async def _included(
    ctx: Context, matches: list[ResourceVersion], includes: list[Include]
) -> tuple[list[ResourceVersion], bool]:
    """Resources that `_include`/`_revinclude` add, each once and never a match again."""
    seen = {(v.type, v.id) for v in matches}
    found: list[ResourceVersion] = []
    frontier = matches
    for depth in range(MAX_ITERATE + 1):
        active = [i for i in includes if depth == 0 or i.iterate]
        if not active or not frontier:
            break
        round_found: list[ResourceVersion] = []
        for include in active:
            step = await (
                _reverse(ctx, frontier, include)
                if include.reverse
                else _forward(ctx, frontier, include, seen)
            )
            for version in step:
                if (version.type, version.id) not in seen:
                    seen.add((version.type, version.id))
                    round_found.append(version)
        found += round_found
        frontier = round_found
        if len(found) > MAX_INCLUDED:
            return found[:MAX_INCLUDED], True
    return found, False


async def _forward(
    ctx: Context, frontier: list[ResourceVersion], include: Include, seen: set[tuple[str, str]]
) -> list[ResourceVersion]:
    wanted: dict[str, set[str]] = {}
    for version in frontier:
        if version.type != include.source or version.json is None:
            continue
        resource = orjson.loads(version.json)  # stored bytes: valid; decimals do not matter
        for entry in reference_entries(version.type, resource, include.param):
            if entry.type is None or entry.id is None:
                continue
            if include.target is not None and entry.type != include.target:
                continue
            if (entry.type, entry.id) not in seen:
                wanted.setdefault(entry.type, set()).add(entry.id)
    out: list[ResourceVersion] = []
    for target, ids in sorted(wanted.items()):
        query = SearchQuery(target, (IdIn(tuple(sorted(ids))),), count=len(ids), total=False)
        out += (await ctx.storage.search(query, ctx.access)).items
    return out


async def _reverse(
    ctx: Context, frontier: list[ResourceVersion], include: Include
) -> list[ResourceVersion]:
    if include.param == "*":
        return []  # a wildcard revinclude would scan every reference parameter: not offered
    targets = [v for v in frontier if include.target is None or v.type == include.target]
    if not targets:
        return []
    terms = tuple(ReferenceMatch(include.param, v.type, v.id, None) for v in targets)
    where = (terms[0] if len(terms) == 1 else AnyOf(terms),)
    query = SearchQuery(include.source, where, count=MAX_INCLUDED + 1, total=False)
    return (await ctx.storage.search(query, ctx.access)).items

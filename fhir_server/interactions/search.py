"""search-type: the parsed query runs on the storage port; the result is a searchset Bundle.

Matches come from one storage search; `_include`/`_revinclude` (with `:iterate`) add each
referenced or referring resource once, as `search.mode = include`; `_summary`/`_elements`
subset what is returned.  Stored bytes are served as they are unless a subset is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from fhir_server import fhirjson
from fhir_server.errors import Issue, operation_outcome
from fhir_server.interactions.bundles import bundle, full_url, link, resource_fragment
from fhir_server.interactions.context import Context
from fhir_server.interactions.subsetting import Subset, parse_subset, subset
from fhir_server.search.indexer import index_entries
from fhir_server.search.parser import Include, encode_cursor, parse_search
from fhir_server.search.query import AnyOf, IdIn, ReferenceMatch, SearchQuery
from fhir_server.storage.port import ReferenceIndex, ResourceVersion

MAX_INCLUDED = 1000  # per page; more is refused by truncation with a warning
MAX_ITERATE = 3  # rounds of `:iterate`


async def search_type(
    ctx: Context, type: str, params: Sequence[tuple[str, str]], *, lenient: bool
) -> dict[str, Any]:
    parsed = parse_search(
        type,
        params,
        default_count=ctx.settings.default_page_size,
        max_count=ctx.settings.max_page_size,
        lenient=lenient,
    )
    wanted = parse_subset(list(params))
    query = parsed.query
    if wanted.summary == "count":
        query = replace(query, count=0, total=True)
    page = await ctx.storage.search(query, ctx.access)
    links = {"self": link(ctx.base_url, type, parsed.applied)}
    if page.has_more and page.items and wanted.summary != "count":
        # Unsorted: keyset on id (stable while data changes); sorted: the next offset.
        position: object = (
            {"offset": query.offset + query.count} if query.sort else page.items[-1].id
        )
        cursor = encode_cursor(position)
        links["next"] = link(ctx.base_url, type, [*parsed.applied, ("_cursor", cursor)])
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
        for entry in index_entries(version.type, fhirjson.loads_resource(version.json)):
            if not isinstance(entry, ReferenceIndex) or entry.type is None or entry.id is None:
                continue
            if include.param != "*" and entry.param != include.param:
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

"""search-type: the parsed query runs on the storage port; the result is a searchset Bundle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_server.errors import error, operation_outcome
from fhir_server.interactions.bundles import bundle, full_url, link, resource_fragment
from fhir_server.interactions.context import Context
from fhir_server.search.parser import encode_cursor, parse_search


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
    if parsed.query.after is not None and not isinstance(parsed.query.after, str):
        raise error(
            400, "invalid", "'_cursor' is not a paging position this server issued", "_cursor"
        )
    page = await ctx.storage.search(parsed.query, ctx.access)
    links = {"self": link(ctx.base_url, type, parsed.applied)}
    if page.has_more and page.items:
        cursor = encode_cursor(page.items[-1].id)
        links["next"] = link(ctx.base_url, type, [*parsed.applied, ("_cursor", cursor)])
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": full_url(ctx.base_url, version),
            "resource": resource_fragment(version),
            "search": {"mode": "match"},
        }
        for version in page.items
    ]
    if parsed.warnings:
        entries.append(
            {"resource": operation_outcome(parsed.warnings), "search": {"mode": "outcome"}}
        )
    return bundle("searchset", page.total, links, entries)

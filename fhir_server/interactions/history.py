"""history at instance, type and system level: newest first, keyset-paged (stable)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fhir_server.errors import error
from fhir_server.integers import bounded_int, parse_int
from fhir_server.interactions.bundles import (
    bundle,
    full_url,
    link,
    resource_fragment,
    version_response,
)
from fhir_server.interactions.context import Context
from fhir_server.interactions.crud import check_id
from fhir_server.search.parser import decode_cursor, encode_cursor
from fhir_server.storage.port import HistoryCursor, HistoryQuery

HISTORY_PARAMS = frozenset({"_count", "_since", "_cursor", "_format", "_pretty"})


async def history(
    ctx: Context, type: str | None, id: str | None, params: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    if id is not None:
        check_id(id)
    query = _query(ctx, type, id, params)
    page = await ctx.storage.history(query, ctx.access)
    path = "/".join(p for p in (type, id, "_history") if p)
    kept = [(k, v) for k, v in params if k in ("_count", "_since")]
    links = {"self": link(ctx.base_url, path, list(params))}
    if page.has_more and page.items:
        last = page.items[-1]
        position = [last.last_updated, last.type, last.id, last.version]
        links["next"] = link(ctx.base_url, path, [*kept, ("_cursor", encode_cursor(position))])
    entries = []
    for version in page.items:
        entry: dict[str, Any] = {"fullUrl": full_url(ctx.base_url, version)}
        if not version.deleted:
            entry["resource"] = resource_fragment(version)
        url = version.type if version.method == "POST" else f"{version.type}/{version.id}"
        entry["request"] = {"method": version.method, "url": url}
        entry["response"] = version_response(version)
        entries.append(entry)
    return bundle("history", page.total, links, entries)


def _query(
    ctx: Context, type: str | None, id: str | None, params: Sequence[tuple[str, str]]
) -> HistoryQuery:
    count, since, before = ctx.settings.default_page_size, None, None
    for name, value in params:
        if name not in HISTORY_PARAMS:
            raise error(
                400, "not-supported", f"Parameter '{name}' is not supported on history", name
            )
        if name == "_count":
            number = parse_int(value)
            if number is None:
                raise error(400, "invalid", "_count must be a non-negative integer", "_count")
            count = min(number, ctx.settings.max_page_size)
        elif name == "_since":
            since = parse_instant(value, "_since")
        elif name == "_cursor":
            before = _cursor(value)
    return HistoryQuery(type=type, id=id, since=since, count=count, before=before)


def parse_instant(value: str, name: str) -> str:
    """A FHIR instant (or dateTime) → UTC text comparable with stored last_updated."""
    try:
        moment = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError:
        raise error(400, "invalid", f"'{value}' is not a valid instant for {name}", name) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # within a day of year 1 or 9999: the ends of time
        moment = datetime.min if moment.year == 1 else datetime.max
    return moment.isoformat(timespec="microseconds") + "Z"  # `%Y` would print year 1 as "1"


def _cursor(value: str) -> HistoryCursor:
    position = decode_cursor(value, "_cursor")
    if (
        not isinstance(position, list)
        or len(position) != 4
        or not all(isinstance(p, str) for p in position[:3])
        or bounded_int(position[3]) is None
    ):
        raise error(
            400, "invalid", "'_cursor' is not a paging position this server issued", "_cursor"
        )
    return HistoryCursor(*position)

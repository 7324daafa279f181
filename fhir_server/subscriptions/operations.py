"""`Subscription/$status` and `Subscription/[id]/$events` (Backport IG STU 1.1), from the outbox.

The outbox, not the Subscription resource, knows how far each subscription got (events fanned
out, delivered, the last error), so both answers are built from its state; `$events` replays
the retained notifications a client missed, with the numbers they were sent with.
"""

from __future__ import annotations

from typing import Any

from fhir_server import fhirjson
from fhir_server.errors import clipped, error
from fhir_server.integers import parse_int
from fhir_server.interactions.context import Context
from fhir_server.search.parser import parse_search
from fhir_server.storage.port import SubscriptionState
from fhir_server.subscriptions import notifications as bundles
from fhir_server.subscriptions.dispatcher import blank_state, focus_resources, shape_context
from fhir_server.subscriptions.model import SubscriptionSpec, parse_subscription

CONTENTS = ("empty", "id-only", "full-resource")
MAX_EVENTS = 100  # notifications one $events answer carries; ask again from the last number
MAX_STATUS = 1000  # subscriptions one type-level $status answers for


def operation_params(
    query: list[tuple[str, str]], body: dict[str, Any] | None
) -> list[tuple[str, str]]:
    """Parameters from the query and a POSTed Parameters resource, as (name, text) pairs."""
    found = [(k, v) for k, v in query if k not in ("_format", "_pretty")]
    if body is None:
        return found
    if body.get("resourceType") != "Parameters":
        raise error(400, "invalid", "The body of this operation must be a Parameters resource")
    for parameter in body.get("parameter") or ():
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            continue
        values = [v for k, v in parameter.items() if k.startswith("value")]
        if values and isinstance(values[0], str | int) and not isinstance(values[0], bool):
            found.append((parameter["name"], str(values[0])))
    return found


async def _spec(ctx: Context, topics: Any, id: str) -> SubscriptionSpec:
    """The Subscription as a spec; 404 when it is not known (or deleted)."""
    version = await ctx.storage.read("Subscription", id, ctx.access)
    if version is None or version.json is None:
        raise error(404, "not-found", f"Subscription/{id} is not known")
    return parse_subscription(fhirjson.loads_resource(version.json), topics, ctx.settings)


async def _state(ctx: Context, spec: SubscriptionSpec) -> SubscriptionState:
    return await ctx.storage.outbox.state(spec.id) or blank_state(spec)


async def status(
    ctx: Context, topics: Any, id: str | None, params: list[tuple[str, str]]
) -> dict[str, Any]:
    """`$status`: one status Parameters per subscription, in a searchset Bundle. Type level
    takes `id` (repeatable, or comma-separated) and `status` filters; none: all the caller
    may see."""
    wanted_status = {s for k, v in params if k == "status" for s in v.split(",") if s}
    if id is not None:
        ids = [id]
    else:
        ids = [i for k, v in params if k == "id" for i in v.split(",") if i]
        if not ids:
            query = parse_search("Subscription", [("_count", str(MAX_STATUS))]).query
            ids = [v.id for v in (await ctx.storage.search(query, ctx.access)).items]
    items: list[tuple[SubscriptionSpec, SubscriptionState]] = []
    for sub in dict.fromkeys(ids):
        spec = await _spec(ctx, topics, sub)
        if wanted_status and spec.status not in wanted_status:
            continue
        items.append((spec, await _state(ctx, spec)))
    return bundles.status_bundle(items, ctx.base_url)


async def events(
    ctx: Context, topics: Any, id: str, params: list[tuple[str, str]]
) -> dict[str, Any]:
    """`$events`: the retained notifications eventsSinceNumber..eventsUntilNumber (both
    inclusive), at most MAX_EVENTS, with the subscription's or the asked `content`."""
    since = _number(params, "eventsSinceNumber")
    until = _number(params, "eventsUntilNumber")
    if since is not None and until is not None and until < since:
        message = f"eventsUntilNumber ({until}) is before eventsSinceNumber ({since})"
        raise error(400, "invalid", message, "eventsUntilNumber")
    content = [v for k, v in params if k == "content"]
    if content and content[-1] not in CONTENTS:
        message = f"content '{clipped(content[-1])}' is not one of {', '.join(CONTENTS)}"
        raise error(400, "invalid", message, "content")
    spec = await _spec(ctx, topics, id)
    state = await _state(ctx, spec)
    payload = content[-1] if content else spec.payload
    notes = await ctx.storage.outbox.notifications(id, (since or 1) - 1, until, MAX_EVENTS)
    resources = await focus_resources(ctx.storage, notes) if payload != "empty" else {}
    context = await shape_context(ctx.storage, topics, spec, notes, resources, payload)
    return bundles.events_bundle(
        spec, state, notes, resources, ctx.base_url, content=payload, context=context
    )


def _number(params: list[tuple[str, str]], name: str) -> int | None:
    values = [v for k, v in params if k == name]
    if not values:
        return None
    number = parse_int(values[-1])
    if number is None or number < 1:
        message = f"{name} '{clipped(values[-1])}' is not a positive integer"
        raise error(400, "invalid", message, name)
    return number

"""The notification Bundles of the Backport IG (STU 1.1) for R4.

A notification is a `history` Bundle (profile `backport-subscription-notification-r4`) whose
first entry is a `Parameters` with the subscription's status (`backport-subscription-status-r4`),
requested as `GET [base]/Subscription/[id]/$status`; then, by payload content:

- `empty`: nothing else, and no resource is named (no `topic`, `focus`, `additional-context`);
- `id-only`: per event its `focus` and, for each resource, an entry with only `fullUrl`,
  `request` and `response`, so a client knows what to fetch;
- `full-resource`: the same entries with the resources in them.

The resources come in already fetched (the focus versions, and the notificationShape context
the caller gathered with `shape_includes`/`shape_rev_includes`), so building is pure.
`$status` answers a `searchset` of status Parameters (`query-status`); `$events` a
notification Bundle of type `query-event`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from fhir_server.search.indexer import reference_entries
from fhir_server.storage.port import Interaction, Notification, SubscriptionState
from fhir_server.subscriptions.model import BACKPORT, Content, SubscriptionSpec
from fhir_server.subscriptions.topics import Topic

STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
NOTIFICATION_PROFILE = BACKPORT + "backport-subscription-notification-r4"
INSTANT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

NotificationType = Literal[
    "handshake", "heartbeat", "event-notification", "query-status", "query-event"
]
VersionKey = tuple[str, str, int]
"""(type, id, version) of a focus version."""

_REQUEST: dict[Interaction, tuple[str, bool, str]] = {  # method, url with id, response
    "create": ("POST", False, "201 Created"),
    "update": ("PUT", True, "200 OK"),
    "delete": ("DELETE", True, "204 No Content"),
}


def handshake(
    spec: SubscriptionSpec,
    state: SubscriptionState | None,
    base_url: str,
    *,
    now: str | None = None,
) -> dict[str, Any]:
    """Sent when a subscription is requested, before any event (the IG's handshake)."""
    status = status_parameters(spec, state, base_url, "handshake", _count(state))
    return _notification([status], now)


def heartbeat(
    spec: SubscriptionSpec,
    state: SubscriptionState | None,
    base_url: str,
    *,
    now: str | None = None,
) -> dict[str, Any]:
    """Sent when a channel has been quiet for the heartbeat period."""
    status = status_parameters(spec, state, base_url, "heartbeat", _count(state))
    return _notification([status], now)


def event_notification(
    spec: SubscriptionSpec,
    state: SubscriptionState | None,
    notifications: Sequence[Notification],
    resources: Mapping[VersionKey, dict[str, Any]],
    base_url: str,
    *,
    context: Mapping[VersionKey, Sequence[dict[str, Any]]] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The events `notifications` (in number order) in one Bundle, shaped by the payload
    content. `resources` are the focus versions' JSON by (type, id, version); `context`
    the notificationShape resources fetched for each focus version."""
    return _events(
        spec, state, notifications, resources, base_url, "event-notification", spec.payload,
        context, now,
    )  # fmt: skip


def events_bundle(
    spec: SubscriptionSpec,
    state: SubscriptionState | None,
    notifications: Sequence[Notification],
    resources: Mapping[VersionKey, dict[str, Any]],
    base_url: str,
    *,
    content: Content | None = None,
    context: Mapping[VersionKey, Sequence[dict[str, Any]]] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """`Subscription/[id]/$events`: retained events as a `query-event` notification;
    `content` (the operation's hint) replaces the subscription's payload content."""
    return _events(
        spec, state, notifications, resources, base_url, "query-event", content or spec.payload,
        context, now,
    )  # fmt: skip


def status_bundle(
    subscriptions: Sequence[tuple[SubscriptionSpec, SubscriptionState | None]],
    base_url: str,
    *,
    now: str | None = None,
) -> dict[str, Any]:
    """`Subscription/$status`: a searchset of one `query-status` Parameters each."""
    entries = []
    for spec, state in subscriptions:
        status = status_parameters(spec, state, base_url, "query-status", _count(state))
        entries.append(
            {"fullUrl": f"urn:uuid:{status['id']}", "resource": status, "search": {"mode": "match"}}
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "timestamp": now or _now(),
        "total": len(entries),
    }
    if entries:
        bundle["entry"] = entries
    return bundle


def status_parameters(
    spec: SubscriptionSpec,
    state: SubscriptionState | None,
    base_url: str,
    type: NotificationType,
    events_since_start: int,
    events: Sequence[dict[str, Any]] = (),
    content: Content | None = None,
) -> dict[str, Any]:
    """The R4 SubscriptionStatus: a `backport-subscription-status-r4` Parameters."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": _subscription_url(spec, base_url)}}
    ]
    if (content or spec.payload) != "empty":  # the IG: SHOULD NOT be present for `empty`
        parameters.append({"name": "topic", "valueCanonical": spec.topic})
    parameters += [
        {"name": "status", "valueCode": spec.status},
        {"name": "type", "valueCode": type},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    parameters += events
    if spec.status == "error" and state is not None and state.last_error:
        parameters.append({"name": "error", "valueCodeableConcept": {"text": state.last_error}})
    return {
        "resourceType": "Parameters",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def shape_includes(topic: Topic, focus_type: str, focus: dict[str, Any]) -> list[tuple[str, str]]:
    """The local references (type, id) the topic's notificationShape includes for this focus
    (`Type:param` or `Type:param:Target`), in order, each once: what to fetch as context."""
    shape = topic.shape(focus_type)
    found: dict[tuple[str, str], None] = {}
    for include in shape.include if shape else ():
        source, _, rest = include.partition(":")
        param, _, target = rest.partition(":")
        if source != focus_type:
            continue
        for entry in reference_entries(focus_type, focus, param):
            if entry.type and entry.id and target in ("", entry.type):
                found[(entry.type, entry.id)] = None
    return list(found)


def shape_rev_includes(topic: Topic, focus_type: str, focus_id: str) -> list[tuple[str, str, str]]:
    """The searches (source type, parameter, `Type/id`) for the resources the topic's
    notificationShape revIncludes: those whose parameter refers to the focus."""
    shape = topic.shape(focus_type)
    out = []
    for rev in shape.rev_include if shape else ():
        source, _, rest = rev.partition(":")
        param, _, target = rest.partition(":")
        if target in ("", focus_type):
            out.append((source, param, f"{focus_type}/{focus_id}"))
    return out


def _events(
    spec: SubscriptionSpec,
    state: SubscriptionState | None,
    notifications: Sequence[Notification],
    resources: Mapping[VersionKey, dict[str, Any]],
    base_url: str,
    type: NotificationType,
    content: Content,
    context: Mapping[VersionKey, Sequence[dict[str, Any]]] | None,
    now: str | None,
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    entries: dict[tuple[str, str, str], dict[str, Any]] = {}
    for notification in notifications:
        event = notification.event
        key = (event.focus_type, event.focus_id, event.focus_version)
        part: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(notification.number)},
            {"name": "timestamp", "valueInstant": event.at},
        ]
        if content != "empty":
            focus = _focus_entry(notification, resources.get(key), base_url, content)
            part.append({"name": "focus", "valueReference": {"reference": focus["fullUrl"]}})
            entries.setdefault((*key[:2], str(key[2])), focus)
            for resource in (context or {}).get(key, ()):
                entry = _context_entry(resource, base_url, content)
                reference = {"reference": entry["fullUrl"]}
                part.append({"name": "additional-context", "valueReference": reference})
                entries.setdefault(_context_key(resource), entry)
        parts.append({"name": "notification-event", "part": part})
    numbers = [n.number for n in notifications]
    count = max([_count(state), *numbers])
    status = status_parameters(spec, state, base_url, type, count, parts, content)
    return _notification([status, *entries.values()], now)


def _focus_entry(
    notification: Notification, resource: dict[str, Any] | None, base_url: str, content: Content
) -> dict[str, Any]:
    event = notification.event
    method, with_id, response = _REQUEST[event.interaction]
    url = f"{event.focus_type}/{event.focus_id}"
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{url}"}
    if content == "full-resource" and resource is not None and event.interaction != "delete":
        entry["resource"] = resource
    entry["request"] = {"method": method, "url": url if with_id else event.focus_type}
    entry["response"] = {
        "status": response,
        "etag": f'W/"{event.focus_version}"',
        "lastModified": event.at,
    }
    return entry


def _context_entry(resource: dict[str, Any], base_url: str, content: Content) -> dict[str, Any]:
    url = f"{resource.get('resourceType')}/{resource.get('id')}"
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{url}"}
    if content == "full-resource":
        entry["resource"] = resource
    entry["request"] = {"method": "GET", "url": url}
    entry["response"] = {"status": "200 OK"}
    version = (resource.get("meta") or {}).get("versionId")
    if version is not None:
        entry["response"]["etag"] = f'W/"{version}"'
    return entry


def _context_key(resource: dict[str, Any]) -> tuple[str, str, str]:
    version = (resource.get("meta") or {}).get("versionId")
    return (str(resource.get("resourceType")), str(resource.get("id")), f"context:{version}")


def _notification(entries: list[dict[str, Any]], now: str | None) -> dict[str, Any]:
    """A notification Bundle; entry 0, the status, is read like `GET …/$status`."""
    status, *rest = entries
    subscription = status["parameter"][0]["valueReference"]["reference"]
    first = {
        "fullUrl": f"urn:uuid:{status['id']}",
        "resource": status,
        "request": {"method": "GET", "url": f"{subscription}/$status"},
        "response": {"status": "200 OK"},
    }
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": now or _now(),
        "entry": [first, *rest],
    }


def _subscription_url(spec: SubscriptionSpec, base_url: str) -> str:
    return f"{base_url}/Subscription/{spec.id}"


def _count(state: SubscriptionState | None) -> int:
    return state.number if state is not None else 0


def _now() -> str:
    return datetime.now(UTC).strftime(INSTANT_FORMAT)

"""An R4 Subscription in the Backport IG's shape, checked and read into a `SubscriptionSpec`.

Why refuse at the write, not at delivery: a Subscription the server accepts is a promise to
notify (Backport IG, components), so every part the server could not honour is a 422 naming
the element (FHIRPath `expression`) before anything is stored: a topic this server does not
have, a filter its `canFilterBy` does not offer (resource, parameter, modifier, comparator),
a channel other than `rest-hook`/`websocket`, an endpoint that is not https (except the hosts
in `subscription_allowed_hosts`), a payload other than FHIR JSON or without a known content
code (`empty`, `id-only`, `full-resource`), malformed channel extensions or headers.

R4 JSON puts the extensions of a primitive beside it: the filters are in
`_criteria.extension` (FHIRPath `Subscription.criteria.extension[i]`), the content code in
`channel._payload.extension`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from fhir_server.errors import FhirError, error
from fhir_server.resource_types import is_resource_type
from fhir_server.search.query import AnyOf, Condition, DateMatch, Not, NumberMatch, QuantityMatch
from fhir_server.subscriptions.matching import filter_conditions
from fhir_server.subscriptions.topics import Topic, Topics

if TYPE_CHECKING:
    from fhir_server.config import Settings

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"
CHANNEL_TYPE = BACKPORT + "backport-channel-type"

ChannelType = Literal["rest-hook", "websocket"]
Content = Literal["empty", "id-only", "full-resource"]
CHANNELS: tuple[ChannelType, ...] = ("rest-hook", "websocket")
CONTENTS: tuple[Content, ...] = ("empty", "id-only", "full-resource")
MIME_TYPES = ("application/fhir+json", "application/json")
FRAMING_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection"}
)
"""Headers the rest-hook channel itself sets; a Subscription may not override them."""


@dataclass(frozen=True, slots=True)
class Filter:
    """One filter as the client wrote it (`name` with its modifier) and the topic's resource
    types it applies to (the type it named, else every type offering the parameter)."""

    types: frozenset[str]
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What the server does for one Subscription (its resource, read once)."""

    id: str | None
    topic: str  # the topic's canonical url (without |version)
    filters: tuple[Filter, ...]
    channel: ChannelType
    endpoint: str | None  # None for websocket
    headers: tuple[tuple[str, str], ...]
    payload: Content
    mime_type: str
    heartbeat_period: int | None  # seconds
    timeout: float  # seconds: the Subscription's backport-timeout, at most the setting
    max_count: int | None
    status: str
    end: str | None


def parse_subscription(
    resource: dict[str, Any], topics: Topics, settings: Settings
) -> SubscriptionSpec:
    """The Subscription as a spec; FhirError 422 (with the element's expression) if the server
    cannot honour it. `resource` has passed R4 validation."""
    topic = _topic(resource, topics)
    channel = resource.get("channel") if isinstance(resource.get("channel"), dict) else {}
    kind = _channel_type(channel)
    extensions = _channel_extensions(channel)
    heartbeat = extensions.get(HEARTBEAT_PERIOD)
    timeout = extensions.get(TIMEOUT)
    mime_type, content = _payload(channel)
    return SubscriptionSpec(
        id=resource.get("id") if isinstance(resource.get("id"), str) else None,
        topic=topic.url,
        filters=_filters(resource, topic),
        channel=kind,
        endpoint=_endpoint(channel, settings) if kind == "rest-hook" else None,
        headers=_headers(channel),
        payload=content,
        mime_type=mime_type,
        heartbeat_period=heartbeat,
        timeout=min(float(timeout), settings.subscription_timeout)
        if timeout is not None
        else settings.subscription_timeout,
        max_count=extensions.get(MAX_COUNT),
        status=str(resource.get("status")),
        end=resource.get("end") if isinstance(resource.get("end"), str) else None,
    )


def requested_status(status: str) -> str:
    """The status a client's write stores: the server owns `active` and `error` (it sets them
    after the handshake and on delivery failures), so a client asking for `active`, or
    writing back `error`, asks for the channel to be (re)negotiated: `requested`. `off` stays
    off. HAPI accepts `active` from clients the same way; the Backport IG's workflow has the
    server answer a new Subscription with `requested` while it handshakes."""
    return "off" if status == "off" else "requested"


def _refused(code: str, message: str, expression: str) -> FhirError:
    return error(422, code, message, expression)


def _topic(resource: dict[str, Any], topics: Topics) -> Topic:
    criteria = resource.get("criteria")
    if not isinstance(criteria, str) or not criteria:
        message = "A Subscription needs a topic's canonical url in criteria"
        raise _refused("invalid", message, "Subscription.criteria")
    url, _, version = criteria.partition("|")
    topic = topics.get(url)
    if topic is None:
        message = (
            f"'{criteria}' is not a SubscriptionTopic of this server; only topic-based "
            "subscriptions (Subscriptions R5 Backport IG) are supported, with criteria the "
            "topic's canonical url"
        )
        raise _refused("not-supported", message, "Subscription.criteria")
    if version and version != topic.version:
        message = f"This server has version {topic.version} of {url}, not {version}"
        raise _refused("not-supported", message, "Subscription.criteria")
    return topic


def _filters(resource: dict[str, Any], topic: Topic) -> tuple[Filter, ...]:
    """The backport-filter-criteria extensions of `criteria`, each checked against the
    topic's canFilterBy and parsed as a search of each type it applies to."""
    found: list[Filter] = []
    extensions = (resource.get("_criteria") or {}).get("extension") or []
    for i, extension in enumerate(extensions):
        if not isinstance(extension, dict) or extension.get("url") != FILTER_CRITERIA:
            continue
        where = f"Subscription.criteria.extension[{i}]"
        text = extension.get("valueString")
        if not isinstance(text, str) or not text.strip():
            message = "A backport-filter-criteria needs valueString, e.g. 'Type?param=value'"
            raise _refused("invalid", message, where)
        found.extend(_filter(text, topic, where + ".value"))
    return tuple(found)


def _filter(text: str, topic: Topic, where: str) -> list[Filter]:
    head, question, rest = text.partition("?")
    resource_type, query = (head, rest) if question and "=" not in head else ("", text)
    if resource_type:
        offered = {f.resource for f in topic.can_filter_by}
        if not is_resource_type(resource_type) or resource_type not in offered:
            message = (
                f"Topic {topic.url} offers no filters on '{resource_type}' "
                f"(it does on {', '.join(sorted(offered)) or 'nothing'})"
            )
            raise _refused("not-supported", message, where)
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise _refused("value", f"'{text}' names no filter (param=value)", where)
    out = []
    for name, value in pairs:
        parameter, _, modifier = name.partition(":")
        candidates = topic.filters(parameter, resource_type or None)
        if not candidates:
            on = f" on {resource_type}" if resource_type else ""
            offered_names = sorted({f.parameter for f in topic.can_filter_by})
            message = (
                f"Topic {topic.url} offers no filter '{parameter}'{on}; "
                f"it offers {', '.join(offered_names)}"
            )
            raise _refused("not-supported", message, where)
        for by in candidates:
            if modifier and modifier not in by.modifiers:
                message = f"Topic {topic.url} does not allow ':{modifier}' on '{parameter}'"
                raise _refused("not-supported", message, where)
            try:
                conditions = filter_conditions(by.resource, name, value)
            except FhirError as failure:
                message = f"Filter '{name}={value}' on {by.resource}: {failure}"
                raise _refused("value", message, where) from None
            allowed = by.comparators or {"eq"}
            for prefix in sorted(_prefixes(conditions) - allowed):
                message = f"Topic {topic.url} does not allow the comparator '{prefix}' on "
                raise _refused("not-supported", message + f"'{parameter}'", where)
        out.append(Filter(frozenset(by.resource for by in candidates), name, value))
    return out


def _prefixes(conditions: tuple[Condition, ...]) -> set[str]:
    found: set[str] = set()
    stack: list[Condition] = list(conditions)
    while stack:
        match stack.pop():
            case DateMatch(prefix=p) | NumberMatch(prefix=p) | QuantityMatch(prefix=p):
                found.add(p)
            case AnyOf(terms=terms):
                stack.extend(terms)
            case Not(term=term):
                stack.append(term)
    return found


def _channel_type(channel: dict[str, Any]) -> ChannelType:
    for i, extension in enumerate((channel.get("_type") or {}).get("extension") or []):
        if isinstance(extension, dict) and extension.get("url") == CHANNEL_TYPE:
            message = "Custom channel types (backport-channel-type) are not supported"
            raise _refused("not-supported", message, f"Subscription.channel.type.extension[{i}]")
    kind = channel.get("type")
    if kind not in CHANNELS:
        message = f"Channel type '{kind}' is not supported; use rest-hook or websocket"
        raise _refused("not-supported", message, "Subscription.channel.type")
    return kind  # type: ignore[return-value]


def _endpoint(channel: dict[str, Any], settings: Settings) -> str:
    endpoint = channel.get("endpoint")
    where = "Subscription.channel.endpoint"
    if not isinstance(endpoint, str) or not endpoint:
        raise _refused("invalid", "A rest-hook channel needs an endpoint", where)
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname
        parts.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        host = None
    if not host:
        raise _refused("value", f"Endpoint '{endpoint}' is not an absolute http(s) URL", where)
    if parts.scheme == "https":
        return endpoint
    if parts.scheme == "http" and host in settings.subscription_allowed_hosts:
        return endpoint
    message = f"Endpoint '{endpoint}' must use https"
    if parts.scheme == "http" and settings.subscription_allowed_hosts:
        message += f" (plain http only to {', '.join(settings.subscription_allowed_hosts)})"
    raise _refused("value", message, where)


def _payload(channel: dict[str, Any]) -> tuple[str, Content]:
    mime_type = channel.get("payload")
    where = "Subscription.channel.payload"
    if not isinstance(mime_type, str):
        message = "A Subscription needs channel.payload (application/fhir+json)"
        raise _refused("invalid", message, where)
    if mime_type.split(";", 1)[0].strip() not in MIME_TYPES:
        message = f"Payload '{mime_type}' is not supported; use application/fhir+json"
        raise _refused("not-supported", message, where)
    found = [
        (i, e)
        for i, e in enumerate((channel.get("_payload") or {}).get("extension") or [])
        if isinstance(e, dict) and e.get("url") == PAYLOAD_CONTENT
    ]
    if len(found) != 1:
        message = "channel.payload needs exactly one backport-payload-content extension "
        raise _refused("invalid", message + "(empty, id-only or full-resource)", where)
    i, extension = found[0]
    content = extension.get("valueCode")
    if content not in CONTENTS:
        message = f"Payload content '{content}' is not one of empty, id-only, full-resource"
        raise _refused("value", message, f"{where}.extension[{i}].value")
    return mime_type, content  # type: ignore[return-value]


_CHANNEL_EXTENSIONS = {  # url -> (value key, smallest allowed)
    HEARTBEAT_PERIOD: ("valueUnsignedInt", 1),
    TIMEOUT: ("valueUnsignedInt", 1),
    MAX_COUNT: ("valuePositiveInt", 1),
}


def _channel_extensions(channel: dict[str, Any]) -> dict[str, int]:
    """heartbeat period, timeout (seconds) and max count, each at most once."""
    out: dict[str, int] = {}
    for i, extension in enumerate(channel.get("extension") or []):
        url = extension.get("url") if isinstance(extension, dict) else None
        if url not in _CHANNEL_EXTENSIONS:
            continue
        where = f"Subscription.channel.extension[{i}]"
        name = url.removeprefix(BACKPORT)
        if url in out:
            raise _refused("invalid", f"{name} is given more than once", where)
        key, least = _CHANNEL_EXTENSIONS[url]
        value = extension.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            message = f"{name} needs {key} of at least {least}"
            raise _refused("value", message, where + ".value")
        out[url] = value
    return out


def _headers(channel: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """`channel.header` as (name, value): each `Name: value`, sent with every POST."""
    out = []
    for i, header in enumerate(channel.get("header") or []):
        where = f"Subscription.channel.header[{i}]"
        name, colon, value = header.partition(":") if isinstance(header, str) else ("", "", "")
        name, value = name.strip(), value.strip()
        if not colon or not name or not _token(name) or any(c in value for c in "\r\n\0"):
            raise _refused("value", "A channel.header is written 'Name: value'", where)
        if name.lower() in FRAMING_HEADERS:
            raise _refused("value", f"The header '{name}' is set by the server", where)
        out.append((name, value))
    return tuple(out)


_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _token(name: str) -> bool:
    """An HTTP field name (RFC 9110 token)."""
    return not set(name) - _TCHAR

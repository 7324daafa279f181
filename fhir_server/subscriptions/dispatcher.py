"""The one dispatcher per database: topic events in, numbered notifications out.

It holds the `subscriptions` lease, so however many processes serve the same database exactly
one fans the outbox's topic events out to the subscriptions and delivers them; the others
deliver only to the websockets bound in their own process, which no other can reach. Each
round it loads the live Subscriptions, activates new ones (a rest-hook handshake first), fans
out the events after its cursor, and starts one delivery per subscription that has something
due. Deliveries run as tasks with a slot of their own, so a dead endpoint waits out its
backoff without holding up any other subscriber, and each subscription gets its notifications
in number order with one bundle in flight. Nothing is given up: a failing endpoint is retried
with capped exponential backoff for as long as the Subscription exists and is not `off`.

Delivery progress is the delivering process's to keep: deliveries update it in memory, and
the next round writes a round's worth in one transaction (`Outbox.record`), not one commit per
notification. A crash between a delivery and that write sends the notification again, which
at-least-once allows and the event number lets a subscriber see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

import httpx

from fhir_server import fhirjson
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.interactions.versions import INSTANT_FORMAT, parse_instant, stored_version
from fhir_server.search.indexer import index_entries
from fhir_server.search.parser import parse_search
from fhir_server.storage.port import (
    AccessFilter,
    Notification,
    Progress,
    ResourceVersion,
    Storage,
    SubscriptionState,
    TopicEvent,
    VersionConflict,
    lease_owner,
)
from fhir_server.subscriptions import notifications as bundles
from fhir_server.subscriptions.matching import filters_match
from fhir_server.subscriptions.model import SubscriptionSpec, parse_subscription
from fhir_server.subscriptions.notifications import VersionKey
from fhir_server.subscriptions.rest_hook import DeliveryError, post, short

if TYPE_CHECKING:
    from fhir_server.subscriptions.topics import Topics
    from fhir_server.subscriptions.websocket import WebsocketHub

log = logging.getLogger(__name__)

LEASE = "subscriptions"
LIVE_STATUSES = "requested,active,error"
CONCURRENCY = 32  # deliveries in flight at once, over all subscriptions
EVENT_BATCH = 500  # topic events fanned out per storage call
PAGE = 500  # Subscriptions per search page when loading them
PRUNE_EVERY = 60.0  # seconds between retention sweeps
RELOAD_EVERY = 1.0  # seconds: Subscriptions written elsewhere (another process) seen within it
ROUND_GAP = 0.02  # seconds at least between rounds: a burst of commits makes one round
ALL = AccessFilter()  # the dispatcher is the server itself: it sees every resource

Now = Callable[[], datetime]
ClientFactory = Callable[[], httpx.AsyncClient]


def utc_now() -> datetime:
    return datetime.now(UTC)


def instant(moment: datetime) -> str:
    """A FHIR instant with microseconds, as the outbox stores them (sortable as text)."""
    return moment.astimezone(UTC).strftime(INSTANT_FORMAT)


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every subscription's client (building one loads the CA store)."""
    return ssl.create_default_context()


def default_client() -> httpx.AsyncClient:
    """A subscription's own client: no proxies from the environment and no redirects
    (notifications go to the endpoint the subscriber registered, nowhere else), one
    connection kept alive (one delivery is in flight per subscription; a pool shared by all
    of them would be scanned on every request)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=_tls(), limits=limits)


def blank_state(spec: SubscriptionSpec) -> SubscriptionState:
    """The state of a subscription the outbox does not track yet (handshake, $status)."""
    return SubscriptionState(spec.id, spec.topic, 0, 0, 0, 0, None, None, None)


def backoff(settings: Settings, failures: int) -> float:
    """Seconds before the next attempt after `failures` consecutive failures."""
    base, cap = settings.subscription_retry_base, settings.subscription_retry_cap
    return min(cap, base * 2 ** min(failures - 1, 62))


def base_url_of(settings: Settings) -> str:
    """Where notifications say the server is: FHIR_BASE_URL (set it in production; a
    background task has no request whose Host it could use)."""
    if settings.base_url:
        return settings.base_url.rstrip("/")
    return f"http://localhost{settings.base_path.rstrip('/')}"


@dataclass(slots=True)
class _Retry:
    """A handshake that failed: handshakes have no outbox state, so their backoff is here."""

    failures: int
    next_attempt: datetime


async def load_subscription(
    storage: Storage, topics: Topics, settings: Settings, id: str
) -> SubscriptionSpec | None:
    """One stored Subscription as a spec; None when absent, deleted or not parseable."""
    version = await storage.read("Subscription", id, ALL)
    if version is None or version.json is None:
        return None
    try:
        return parse_subscription(fhirjson.loads_resource(version.json), topics, settings)
    except FhirError:
        return None


class RecentVersions(dict[VersionKey, dict[str, Any]]):
    """Resource versions the dispatcher read lately, by (type, id, version): a version never
    changes, so the fan-out's read of a focus serves its delivery too. Oldest out first."""

    LIMIT = 4096

    def keep(self, key: VersionKey, resource: dict[str, Any]) -> None:
        self[key] = resource
        if len(self) > self.LIMIT:
            del self[next(iter(self))]


async def focus_resources(
    storage: Storage, notes: list[Notification], recent: RecentVersions | None = None
) -> dict[VersionKey, dict[str, Any]]:
    """The focus versions of `notes` (full-resource payloads), by (type, id, version)."""
    found: dict[VersionKey, dict[str, Any]] = {}
    for note in notes:
        event = note.event
        key = (event.focus_type, event.focus_id, event.focus_version)
        if key in found:
            continue
        if recent is not None and key in recent:
            found[key] = recent[key]
            continue
        version = await storage.vread(*key, ALL)
        if version is not None and version.json is not None:
            found[key] = fhirjson.loads_resource(version.json)
    return found


async def shape_context(
    storage: Storage,
    topics: Topics,
    spec: SubscriptionSpec,
    notes: list[Notification],
    resources: dict[VersionKey, dict[str, Any]],
    content: str,
) -> dict[VersionKey, list[dict[str, Any]]]:
    """The topic's notificationShape resources (its includes and revIncludes) for each focus
    version in `resources`, as they are now: the `additional-context` of the events."""
    topic = topics.get(spec.topic)
    if topic is None or content == "empty":
        return {}
    context: dict[VersionKey, list[dict[str, Any]]] = {}
    content_of = _content if content == "full-resource" else _identity
    for key, focus in resources.items():
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for type, id in bundles.shape_includes(topic, key[0], focus):
            version = await storage.read(type, id, ALL)
            if version is not None and version.json is not None:
                found[(type, id)] = content_of(version)
        for source, param, reference in bundles.shape_rev_includes(topic, key[0], key[1]):
            try:
                query = parse_search(source, [(param, reference), ("_count", str(PAGE))]).query
            except FhirError:
                continue
            for version in (await storage.search(query, ALL)).items:
                if version.json is not None:
                    found[(version.type, version.id)] = content_of(version)
        if found:
            context[key] = list(found.values())
    return context


def _content(version: ResourceVersion) -> dict[str, Any]:
    assert version.json is not None
    return fhirjson.loads_resource(version.json)


def _identity(version: ResourceVersion) -> dict[str, Any]:
    """What an id-only notification says of a context resource (type, id, version): the
    stored bytes need no parsing for that."""
    meta = {"versionId": str(version.version)}
    return {"resourceType": version.type, "id": version.id, "meta": meta}


class Dispatcher:
    """Fans topic events out and delivers notifications while it holds the lease."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        now: Now = utc_now,
        http_client_factory: ClientFactory = default_client,
        *,
        topics: Topics,
        base_url: str | None = None,
        websockets: WebsocketHub | None = None,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.now = now
        self.topics = topics
        self.base_url = base_url or base_url_of(settings)
        self.websockets = websockets
        self.owner = lease_owner()
        self.holding = False
        self.specs: dict[str, SubscriptionSpec] = {}
        self._parsed: dict[str, tuple[tuple[int, str], SubscriptionSpec]] = {}
        self._progress: dict[str, Progress] = {}  # the latest delivery state, by subscription
        self._unsaved: set[str] = set()  # progress the outbox has not recorded yet
        self._recent = RecentVersions()
        self._client_factory = http_client_factory
        self._clients: dict[str, httpx.AsyncClient] = {}  # by subscription
        self._wake = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._retries: dict[str, _Retry] = {}
        self._verified: set[str] = set()  # handshakes that succeeded, to activate in step()
        self._renewed = -math.inf  # the first round asks for the lease
        self._reload = True  # the Subscriptions changed: load them in the next round
        self._loaded = 0.0
        self._pruned = -PRUNE_EVERY  # the first round prunes
        self._warned: set[tuple[str, str]] = set()

    def notify(self, subscriptions: bool = False) -> None:
        """Something was committed (or a delivery ended): look again now, not at the poll;
        `subscriptions`: a Subscription may have changed (load them again)."""
        if subscriptions:
            self._reload = True
        self._wake.set()

    async def run(self) -> None:
        """Rounds until cancelled; a failing round is logged and the next one runs."""
        try:
            while True:
                self._wake.clear()
                try:
                    await self.step()
                except Exception:
                    log.exception("subscription dispatch round failed")
                await asyncio.sleep(ROUND_GAP)
                # A timer rather than asyncio.wait_for: a cancel landing as wait_for's timeout
                # fires can be lost on Python 3.11, and the lifespan would wait forever.
                loop = asyncio.get_running_loop()
                timer = loop.call_later(self.settings.subscription_poll_interval, self.notify)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
        finally:
            await self._cancel_tasks()
            if self.holding:
                with contextlib.suppress(Exception):
                    await self._save_progress()
                    await self.storage.outbox.release_lease(LEASE, self.owner)
                self.holding = False
            await self._close_clients(list(self._clients))

    async def step(self) -> None:
        """One round: lease, subscriptions, activations, fan-out, deliveries, retention."""
        if not await self._hold_lease():
            await self._deliver_to_sockets()
            return
        outbox = self.storage.outbox
        await self._save_progress()
        states = {s.subscription: s for s in await outbox.states()}
        if self._reload or time.monotonic() - self._loaded >= RELOAD_EVERY:
            await self._reload_subscriptions(states)
        specs = dict(self.specs)
        await self._activate(specs, states)
        await self._fan_out(specs, states)
        self._start_deliveries(specs, states)
        await self._prune_if_due()

    # -- lease -------------------------------------------------------------------------------

    async def _hold_lease(self) -> bool:
        """Renew the lease, or try to take it, every lease/3 seconds (not every round: a
        process without it is woken by each of its own writes)."""
        lease = self.settings.subscription_lease
        if time.monotonic() - self._renewed < lease / 3:
            return self.holding
        held = await self.storage.outbox.take_lease(LEASE, self.owner, lease)
        self._renewed = time.monotonic()
        if not held and self.holding:
            log.warning("subscription lease lost; dispatching stops until it is retaken")
            await self._cancel_tasks()
        if held != self.holding:  # taken or lost: the outbox's progress is the truth again
            self._progress.clear()
            self._unsaved.clear()
        self.holding = held
        return held

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _deliver_to_sockets(self) -> None:
        """Without the lease: deliver to the websockets bound in this process, from the
        notifications the lease holder fanned out (only this process can reach them)."""
        bound = self.websockets.bound() if self.websockets is not None else []
        await self._save_progress()
        specs: dict[str, SubscriptionSpec] = {}
        states: dict[str, SubscriptionState] = {}
        for id in bound:
            version = await self.storage.read("Subscription", id, ALL)
            spec = self._spec(version) if version is not None else None
            state = await self.storage.outbox.state(id)
            if spec is not None and state is not None and spec.channel == "websocket":
                specs[id], states[id] = spec, state
        self._start_deliveries(specs, states)

    # -- subscriptions -----------------------------------------------------------------------

    async def _reload_subscriptions(self, states: dict[str, SubscriptionState]) -> None:
        """Load the live Subscriptions into `self.specs`; stop the outbox state of those gone
        (deleted, or turned off by their owner) and turn off those past their end."""
        self._reload = False  # before the load: a change during it asks for the next round
        specs, seen = await self._load()
        self._loaded = time.monotonic()
        for id in states.keys() - seen:
            await self._stop(id)
            states.pop(id)
        for id in list(self._retries):
            if id not in specs:
                self._retries.pop(id)
        await self._close_clients([id for id in self._clients if id not in specs])
        for spec in [s for s in specs.values() if self._ended(s)]:
            await self._set_status(spec.id, "off", None)
            await self._stop(spec.id)
            states.pop(spec.id, None)
            specs.pop(spec.id)
        self.specs = specs

    async def _load(self) -> tuple[dict[str, SubscriptionSpec], set[str]]:
        """The live Subscriptions as specs, and the ids of every live one (parseable or
        not: one the server cannot read any more keeps its notifications)."""
        pairs = [("status", LIVE_STATUSES), ("_count", str(PAGE)), ("_total", "none")]
        query = parse_search("Subscription", pairs, max_count=PAGE).query
        specs: dict[str, SubscriptionSpec] = {}
        seen: set[str] = set()
        while True:
            page = await self.storage.search(query, ALL)
            for version in page.items:
                seen.add(version.id)
                spec = self._spec(version)
                if spec is not None:
                    specs[version.id] = spec
            if not page.has_more or not page.items:
                for id in self._parsed.keys() - seen:
                    del self._parsed[id]
                return specs, seen
            if page.keyed and page.last_key is not None:
                query = replace(query, after_key=tuple(page.last_key), offset=0)
            else:
                query = replace(query, after=page.items[-1].id)

    def _spec(self, version: ResourceVersion) -> SubscriptionSpec | None:
        """A stored Subscription as a spec, parsed once per version; None when deleted or
        not parseable (warned once)."""
        if version.json is None:
            return None
        key = (version.version, version.last_updated)
        parsed = self._parsed.get(version.id)
        if parsed is not None and parsed[0] == key:  # parsed in an earlier round
            return parsed[1]
        try:
            spec = parse_subscription(
                fhirjson.loads_resource(version.json), self.topics, self.settings
            )
        except FhirError as exc:
            self._warn_once(version.id, str(exc))
            return None
        self._parsed[version.id] = (key, spec)
        return spec

    def _ended(self, spec: SubscriptionSpec) -> bool:
        """Past `Subscription.end`: the server turns it off (R4 Subscription.end)."""
        end = spec.end
        if end is None:
            return False
        moment = end if isinstance(end, datetime) else parse_instant(str(end))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment <= self.now()

    def _warn_once(self, id: str, message: str) -> None:
        if (id, message) not in self._warned:
            self._warned.add((id, message))
            log.warning("Subscription/%s is not dispatched: %s", id, message)

    async def _activate(
        self, specs: dict[str, SubscriptionSpec], states: dict[str, SubscriptionState]
    ) -> None:
        """Start the outbox state of verified subscriptions (here, between fan-outs, so no
        event can fall between a subscription's start and the next fan-out), and send
        handshakes to new rest-hook ones."""
        now = self.now()
        started: set[str] = set()
        for id in sorted(self._verified):
            self._verified.discard(id)
            spec = specs.get(id)
            if spec is None:
                continue
            states[id] = await self._start(spec, now)
            started.add(id)
        for spec in specs.values():
            needs = spec.status == "requested" or spec.id not in states
            busy = spec.id in self._tasks or spec.id in started or spec.id in self._verified
            if not needs or busy:  # a handshake that ended meanwhile waits in _verified
                continue
            if spec.channel == "websocket":  # nothing to verify: the client connects
                states[spec.id] = await self._start(spec, now)
                continue
            retry = self._retries.get(spec.id)
            if retry is not None and retry.next_attempt > now:
                continue
            self._spawn(spec.id, self._handshake(spec))

    async def _start(self, spec: SubscriptionSpec, now: datetime) -> SubscriptionState:
        outbox = self.storage.outbox
        state = await outbox.start(spec.id, spec.topic, await outbox.last_seq())
        self._forget(spec.id)
        await outbox.record([Progress(spec.id, last_sent=instant(now))])
        state = replace(
            state, failures=0, next_attempt=None, last_error=None, last_sent=instant(now)
        )
        self._retries.pop(spec.id, None)
        await self._set_status(spec.id, "active", None)
        return state

    async def _handshake(self, spec: SubscriptionSpec) -> None:
        bundle = bundles.handshake(spec, blank_state(spec), self.base_url)
        try:
            await self._send(spec, bundle)
        except DeliveryError as exc:
            retry = self._retries.get(spec.id)
            failures = (retry.failures if retry else 0) + 1
            delay = backoff(self.settings, failures)
            self._retries[spec.id] = _Retry(failures, self.now() + timedelta(seconds=delay))
            message = short(f"Handshake failed: {exc}")
            await self._set_status(spec.id, "error", message, only_if_changed=False)
        else:
            self._verified.add(spec.id)

    async def _set_status(
        self, id: str, status: str, error: str | None, *, only_if_changed: bool = True
    ) -> None:
        """The server's own change of a Subscription's status: a new version written
        straight to storage (no client checks: the server is not a client of itself). A
        Subscription its owner changed meanwhile (off, deleted) is left as its owner left it.
        """
        self._reload = True  # the spec in hand still has the status before
        try:
            async with self.storage.unit_of_work() as uow:
                current = await uow.current("Subscription", id)
                if current is None or current.json is None:
                    return
                resource = fhirjson.loads_resource(current.json)
                if resource.get("status") == "off":
                    return
                same_status = resource.get("status") == status
                if same_status and (only_if_changed or resource.get("error") == error):
                    return
                resource["status"] = status
                if error is None:
                    resource.pop("error", None)
                else:
                    resource["error"] = error
                version = stored_version(resource, "Subscription", id, current, "PUT")
                await uow.put(version, index_entries("Subscription", resource))
        except VersionConflict:
            log.info("Subscription/%s changed while its status was set; next round", id)

    # -- fan-out -----------------------------------------------------------------------------

    async def _fan_out(
        self, specs: dict[str, SubscriptionSpec], states: dict[str, SubscriptionState]
    ) -> None:
        """Every topic event after the cursor to the started subscriptions of its topic whose
        filters match the focus (a delete's focus: the version before it)."""
        outbox = self.storage.outbox
        by_topic: dict[str, list[SubscriptionSpec]] = {}
        for spec in specs.values():
            if spec.id in states:
                by_topic.setdefault(spec.topic, []).append(spec)
        cursor = await outbox.cursor()
        while True:
            events = await outbox.events_after(cursor, EVENT_BATCH)
            if not events:
                return
            pairs: list[tuple[str, TopicEvent]] = []
            focus_cache: dict[VersionKey, tuple[dict[str, Any], Any]] = {}
            for event in events:
                candidates = [
                    s for s in by_topic.get(event.topic, ()) if states[s.id].start_seq < event.seq
                ]
                if not candidates:
                    continue
                focus, index = await self._focus(event, focus_cache)
                for spec in sorted(candidates, key=lambda s: str(s.id)):
                    if self._matches(spec, event.focus_type, focus, index):
                        pairs.append((spec.id, event))
            after, cursor = cursor, events[-1].seq
            if not await outbox.fan_out(after, cursor, pairs):
                log.warning("another dispatcher fanned out these events; checking the lease")
                self._renewed = -math.inf  # ask the database at the next round, not in lease/3
                return
            for id, count in Counter(id for id, _ in pairs).items():  # numbered as the outbox did
                states[id] = replace(states[id], number=states[id].number + count)
            if len(events) < EVENT_BATCH:
                return

    async def _focus(
        self, event: TopicEvent, cache: dict[VersionKey, tuple[dict[str, Any], Any]]
    ) -> tuple[dict[str, Any], Any]:
        """The focus version the filters test, with its index entries (computed once for
        all the subscriptions that test it)."""
        version = event.focus_version - (1 if event.interaction == "delete" else 0)
        key = (event.focus_type, event.focus_id, version)
        if key not in cache:
            stored = await self.storage.vread(*key, ALL)
            if stored is not None and stored.json is not None:
                focus = fhirjson.loads_resource(stored.json)
                self._recent.keep(key, focus)
            else:
                focus = {"resourceType": event.focus_type, "id": event.focus_id}
            cache[key] = (focus, index_entries(event.focus_type, focus))
        return cache[key]

    def _matches(
        self, spec: SubscriptionSpec, type: str, focus: dict[str, Any], index: Any
    ) -> bool:
        try:
            return filters_match(spec, type, focus, index=index)
        except Exception:  # a filter the matcher cannot evaluate sends nothing
            log.exception("Subscription/%s: filters could not be evaluated", spec.id)
            return False

    # -- delivery ----------------------------------------------------------------------------

    def _start_deliveries(
        self, specs: dict[str, SubscriptionSpec], states: dict[str, SubscriptionState]
    ) -> None:
        now = self.now()
        for id, spec in specs.items():
            state = states.get(id)
            if state is None or id in self._tasks or spec.status == "off":
                continue
            state = self._current(state)
            if state.next_attempt is not None and parse_instant(state.next_attempt) > now:
                continue
            if spec.channel == "websocket" and not (
                self.websockets and self.websockets.connected(id)
            ):
                continue  # no socket bound: the notifications wait, nothing failed
            if state.number > state.delivered:
                self._spawn(id, self._deliver(spec, state))
            elif spec.heartbeat_period and self._idle(state, now) >= spec.heartbeat_period:
                self._spawn(id, self._heartbeat(spec, state))

    @staticmethod
    def _idle(state: SubscriptionState, now: datetime) -> float:
        if state.last_sent is None:
            return float("inf")
        return (now - parse_instant(state.last_sent)).total_seconds()

    def _spawn(self, id: str, work: Any) -> None:
        async def slot() -> None:
            try:
                async with self._slots:
                    await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Subscription/%s: delivery failed unexpectedly", id)
            finally:
                self._tasks.pop(id, None)
                self.notify()

        self._tasks[id] = asyncio.create_task(slot(), name=f"subscription {id}")

    async def _deliver(self, spec: SubscriptionSpec, state: SubscriptionState) -> None:
        """The next batch (up to max-count, in number order) as one event-notification."""
        batch = max(1, spec.max_count or 1)
        notes = await self.storage.outbox.notifications(spec.id, state.delivered, None, batch)
        if not notes:
            return
        resources = {}
        if spec.payload != "empty":
            resources = await focus_resources(self.storage, notes, self._recent)
        context = await shape_context(
            self.storage, self.topics, spec, notes, resources, spec.payload
        )
        bundle = bundles.event_notification(
            spec, state, notes, resources, self.base_url, context=context
        )
        await self._attempt(spec, state, bundle, delivered=notes[-1].number)

    async def _heartbeat(self, spec: SubscriptionSpec, state: SubscriptionState) -> None:
        bundle = bundles.heartbeat(spec, state, self.base_url)
        await self._attempt(spec, state, bundle, delivered=None)

    async def _attempt(
        self,
        spec: SubscriptionSpec,
        state: SubscriptionState,
        bundle: dict[str, Any],
        delivered: int | None,
    ) -> None:
        try:
            sent = await self._send(spec, bundle)
        except DeliveryError as exc:
            failures = state.failures + 1
            retry_at = self.now() + timedelta(seconds=backoff(self.settings, failures))
            self._remember(Progress(spec.id, failures, instant(retry_at), str(exc)))
            if failures >= self.settings.subscription_error_after:
                await self._set_status(spec.id, "error", str(exc))
            return
        if not sent:
            return  # the socket went away: wait for the client to bind again
        self._remember(Progress(spec.id, delivered=delivered, last_sent=instant(self.now())))
        if spec.status == "error" or state.failures >= self.settings.subscription_error_after:
            await self._set_status(spec.id, "active", None)

    async def _send(self, spec: SubscriptionSpec, bundle: dict[str, Any]) -> bool:
        """Deliver on the subscription's channel; False when a websocket is not there."""
        if spec.channel == "websocket":
            if self.websockets is None:
                return False
            return await self.websockets.send(spec.id, bundle)
        assert spec.endpoint
        client = self._clients.get(spec.id)
        if client is None:
            client = self._clients[spec.id] = self._client_factory()
        await post(client, spec.endpoint, bundle, spec.headers, spec.timeout)
        return True

    # -- progress ----------------------------------------------------------------------------

    def _remember(self, progress: Progress) -> None:
        """A delivery's outcome, in memory until the next round records it."""
        known = self._progress.get(progress.subscription)
        if known is not None:
            delivered = max(known.delivered or 0, progress.delivered or 0) or None
            progress = replace(
                progress, delivered=delivered, last_sent=progress.last_sent or known.last_sent
            )
        self._progress[progress.subscription] = progress
        self._unsaved.add(progress.subscription)

    def _current(self, state: SubscriptionState) -> SubscriptionState:
        """The outbox's state with the deliveries since its last record on top."""
        known = self._progress.get(state.subscription)
        if known is None:
            return state
        return replace(
            state,
            delivered=max(state.delivered, known.delivered or 0),
            failures=known.failures,
            next_attempt=known.next_attempt,
            last_error=known.last_error,
            last_sent=known.last_sent or state.last_sent,
        )

    async def _save_progress(self) -> None:
        saving = [self._progress[id] for id in sorted(self._unsaved)]
        if saving:
            await self.storage.outbox.record(saving)
            for progress in saving:  # a delivery that ended meanwhile waits for the next round
                if self._progress.get(progress.subscription) is progress:
                    self._unsaved.discard(progress.subscription)

    def _forget(self, id: str) -> None:
        self._progress.pop(id, None)
        self._unsaved.discard(id)

    async def _stop(self, id: str) -> None:
        await self.storage.outbox.stop(id)
        self._forget(id)
        await self._close_clients([id])

    async def _close_clients(self, ids: list[str]) -> None:
        for id in ids:
            client = self._clients.pop(id, None)
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    # -- retention ---------------------------------------------------------------------------

    async def _prune_if_due(self) -> None:
        if time.monotonic() - self._pruned < PRUNE_EVERY:
            return
        self._pruned = time.monotonic()
        before = self.now() - timedelta(seconds=self.settings.subscription_retention)
        dropped = await self.storage.outbox.prune(instant(before))
        if dropped:
            log.info("pruned %d delivered topic events older than %s", dropped, instant(before))

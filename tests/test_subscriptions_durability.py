"""Reliability of topic-based subscriptions (rest-hook, Subscriptions Backport IG STU 1.1).

Issue 13's reliability acceptance points, through the public surface: a notification
the outbox holds outlives a SIGKILL and is delivered by the next process on the database
(at least once, numbered 1..N without gaps, in order); two processes on one SQLite file
deliver each event once, in order, because only the holder of the dispatcher lease
dispatches, and the survivor takes over when the holder is killed; and retention drops
delivered notifications from `$events` once they are older than it, but never one that a
subscription still waits for.

The servers are real `fhir-server serve` processes (tests.conftest.LiveServer) and the
subscribers a real HTTP receiver on 127.0.0.1 (tests.test_subscriptions_rest_hook.Receiver).
The retention test runs the app in process and a Dispatcher built with a later clock.
Waiting is polling with a deadline, never a fixed sleep asserted on.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.api.app import create_app
from fhir_server.config import Settings
from fhir_server.sip.clock import FixedClock
from fhir_server.subscriptions.dispatcher import LEASE, Dispatcher
from tests import test_subscriptions_rest_hook as rest_hook
from tests.conftest import LiveServer
from tests.engines import make_storage
from tests.sip_case import load_case
from tests.test_subscriptions_rest_hook import (
    LULEA,
    PITEA,
    Receiver,
    event_numbers,
    fhir_server,
    notice,
    notification_type,
    pitea_municipality,
    status_parameters,
    subscribe,
    subscription,
    subscription_settings,
    wait_active,
    wait_until,
)

LIVE_ENV = {
    "FHIR_SUBSCRIPTION_ALLOWED_HOSTS": '["127.0.0.1"]',
    "FHIR_SUBSCRIPTION_POLL_INTERVAL": "0.05",
    "FHIR_SUBSCRIPTION_RETRY_BASE": "0.05",
    "FHIR_SUBSCRIPTION_RETRY_CAP": "0.3",
    "FHIR_SUBSCRIPTION_ERROR_AFTER": "2",
    "FHIR_SUBSCRIPTION_LEASE": "3",  # a killed holder's lease runs out quickly
}
ACTS = ("Task", "Communication", "Appointment", "CarePlan")  # the case less what tests send
receiver = rest_hook.receiver  # the loopback subscriber fixture, as the rest-hook tests use it


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    """LiveServers a test starts, stopped at the end whatever happened."""
    started: list[LiveServer] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def live(servers: list[LiveServer], db: Path) -> LiveServer:
    server = LiveServer(db, LIVE_ENV)
    server.start()
    servers.append(server)
    return server


def in_process(app: Any) -> httpx.AsyncClient:
    """An HTTP client on an ASGI app whose lifespan the caller runs."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver/fhir",
        headers={"Accept": "application/fhir+json"},
    )


def client_of(server: LiveServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Accept": "application/fhir+json"},
        timeout=30,
        trust_env=False,
    )


# -- what the receiver saw ----------------------------------------------------------------------


def numbered_focus(bundle: dict[str, Any]) -> list[tuple[int, str]]:
    """(event number, focus id) of each notification-event of a notification bundle."""
    found = []
    for event in status_parameters(bundle).get("notification-event", []):
        parts = {p["name"]: p for p in event["part"]}
        focus = parts["focus"]["valueReference"]["reference"]
        assert "/Communication/" in focus, focus
        found.append((int(parts["event-number"]["valueString"]), focus.rsplit("/", 1)[-1]))
    return found


def deliveries(receiver: Receiver, name: str) -> list[tuple[int, str]]:
    """(event number, focus id) of every event the path accepted, in arrival order."""
    bundles = receiver.of_type(name, "event-notification")
    return [pair for bundle in bundles for pair in numbered_focus(bundle)]


def distinct(arrivals: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The first arrival of each event number, in arrival order."""
    seen: dict[int, str] = {}
    for number, focus in arrivals:
        if number in seen:
            assert seen[number] == focus, f"event {number} came with two focuses"
            continue
        seen[number] = focus
    return list(seen.items())


def numbered(ids: list[str], first: int = 1) -> list[tuple[int, str]]:
    return [(first + n, id) for n, id in enumerate(ids)]


def assert_at_least_once_in_order(receiver: Receiver, name: str, ids: list[str]) -> None:
    """Every notice arrived under numbers 1..N in commit order; a redelivery (at least once)
    may repeat a number but never goes back."""
    arrivals = deliveries(receiver, name)
    assert distinct(arrivals) == numbered(ids), arrivals
    numbers = [n for n, _ in arrivals]
    assert numbers == sorted(numbers), f"{name}: out of order: {numbers}"


async def wait_for_all(receiver: Receiver, name: str, count: int) -> None:
    await wait_until(
        lambda: len(distinct(deliveries(receiver, name))) >= count, f"{count} events at /{name}"
    )


# -- the FHIR side ------------------------------------------------------------------------------


async def post_notice(http: httpx.AsyncClient, recipients: list[str]) -> str:
    """A new admission notice (POST, the server names it) to the health centre and
    `recipients`; its id."""
    resource = notice(recipients=["Organization/ornaset-health-centre", *recipients])
    resource.pop("id")
    response = await http.post("/Communication", json=resource)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def events_of(http: httpx.AsyncClient, id: str) -> list[int]:
    response = await http.get(f"/Subscription/{id}/$events")
    assert response.status_code == 200, response.text
    assert notification_type(response.json()) == "query-event"
    return event_numbers(response.json())


async def status_of(http: httpx.AsyncClient, id: str) -> tuple[str, int]:
    """`$status`: the subscription's status and events-since-subscription-start."""
    response = await http.get(f"/Subscription/{id}/$status")
    assert response.status_code == 200, response.text
    params = status_parameters(response.json())
    since = int(params["events-since-subscription-start"][0]["valueString"])
    return params["status"][0]["valueCode"], since


def municipality_filter(org: str) -> list[str]:
    return [f"Communication?recipient={org}"]


# -- the tests ----------------------------------------------------------------------------------


async def test_undelivered_events_survive_sigkill_and_arrive_after_restart(
    tmp_path: Path, receiver: Receiver, servers: list[LiveServer]
) -> None:
    db = tmp_path / "durable.sqlite3"
    first = live(servers, db)
    async with client_of(first) as http:
        await load_case(http, leave_out=ACTS)
        response = await http.put(f"/{PITEA}", json=pitea_municipality())
        assert response.status_code == 201, response.text
        id = await subscribe(
            http, subscription(receiver.url("lulea"), filters=municipality_filter(LULEA))
        )
        await wait_active(http, id)

        receiver.status["lulea"] = 500
        ids = [await post_notice(http, [LULEA]) for _ in range(2)]
        await post_notice(http, [PITEA])  # not Luleå's: no number of its own
        ids += [await post_notice(http, [LULEA]) for _ in range(2)]

        async def failing() -> bool:
            status, since = await status_of(http, id)
            return status == "error" and since == len(ids)

        await wait_until(failing, "four events fanned out and failing")
        assert await events_of(http, id) == [1, 2, 3, 4]
        assert receiver.of_type("lulea", "event-notification") == []
        assert receiver.attempts["lulea"] >= 3  # the handshake and refused deliveries

        ids.append(await post_notice(http, [LULEA]))  # committed; fanned out or not yet
    first.kill()

    receiver.status["lulea"] = 200
    second = live(servers, db)
    async with client_of(second) as http:
        await wait_for_all(receiver, "lulea", len(ids))
        assert_at_least_once_in_order(receiver, "lulea", ids)
        assert await events_of(http, id) == [1, 2, 3, 4, 5]

        async def recovered() -> bool:
            return await status_of(http, id) == ("active", len(ids))

        await wait_until(recovered, "the subscription active again")


async def test_two_processes_on_one_database_deliver_each_event_once_in_order(
    tmp_path: Path, receiver: Receiver, servers: list[LiveServer]
) -> None:
    db = tmp_path / "shared.sqlite3"
    a = live(servers, db)  # started first: its dispatcher takes the lease
    async with client_of(a) as http:
        await load_case(http, leave_out=ACTS)
        response = await http.put(f"/{PITEA}", json=pitea_municipality())
        assert response.status_code == 201, response.text
    b = live(servers, db)
    async with client_of(a) as http_a, client_of(b) as http_b:
        subs = {
            "lulea": await subscribe(
                http_a, subscription(receiver.url("lulea"), filters=municipality_filter(LULEA))
            ),
            "pitea": await subscribe(
                http_b, subscription(receiver.url("pitea"), filters=municipality_filter(PITEA))
            ),
            "all": await subscribe(http_a, subscription(receiver.url("all"))),
        }
        for id in subs.values():
            await wait_active(http_b, id)
        sent: dict[str, list[str]] = {"lulea": [], "pitea": [], "all": []}

        async def send(http: httpx.AsyncClient, municipality: str) -> None:
            org = LULEA if municipality == "lulea" else PITEA
            id = await post_notice(http, [org])
            sent[municipality].append(id)
            sent["all"].append(id)

        for n in range(8):  # both servers, both municipalities, interleaved
            await send((http_a, http_b)[n % 2], ("lulea", "pitea")[(n // 2) % 2])
        for name, ids in sent.items():
            await wait_for_all(receiver, name, len(ids))
        for name, ids in sent.items():
            assert deliveries(receiver, name) == numbered(ids), name  # once each, in order
            for http in (http_a, http_b):
                assert await status_of(http, subs[name]) == ("active", len(ids))
                assert await events_of(http, subs[name]) == list(range(1, len(ids) + 1))

        # The first process (the lease holder, as it started first) dies: the other takes
        # the lease over once it runs out and delivers what follows, at least once.
        a.kill()
        for n in range(4):
            await send(http_b, ("lulea", "pitea")[n % 2])
        for name, ids in sent.items():
            await wait_for_all(receiver, name, len(ids))
        for name, ids in sent.items():
            assert_at_least_once_in_order(receiver, name, ids)
            assert await events_of(http_b, subs[name]) == list(range(1, len(ids) + 1))


async def test_retention_prunes_delivered_notifications_never_undelivered_ones(
    tmp_path: Path, settings: Settings, clock: FixedClock, receiver: Receiver
) -> None:
    retention = 3600.0
    changes: dict[str, Any] = {
        "subscription_retention": retention,
        # A failed delivery waits ten days, so no dispatcher round below retries it.
        "subscription_retry_base": 864_000.0,
        "subscription_retry_cap": 864_000.0,
        "subscription_error_after": 1,
    }
    async with fhir_server("sqlite", tmp_path, settings, clock, **changes) as http:
        response = await http.put(f"/{PITEA}", json=pitea_municipality())
        assert response.status_code == 201, response.text
        lulea = await subscribe(
            http, subscription(receiver.url("lulea"), filters=municipality_filter(LULEA))
        )
        pitea = await subscribe(
            http, subscription(receiver.url("pitea"), filters=municipality_filter(PITEA))
        )
        await wait_active(http, lulea)
        await wait_active(http, pitea)
        receiver.status["pitea"] = 500

        only_lulea = await post_notice(http, [LULEA])  # Luleå 1, delivered
        only_pitea = await post_notice(http, [PITEA])  # Piteå 1, undelivered
        both = await post_notice(http, [LULEA, PITEA])  # Luleå 2 delivered, Piteå 2 not
        await wait_until(lambda: len(deliveries(receiver, "lulea")) == 2, "Luleå's events")
        assert deliveries(receiver, "lulea") == [(1, only_lulea), (2, both)]

        async def pitea_failed() -> bool:  # the failure recorded, so nothing retries it now
            return await status_of(http, pitea) == ("error", 2)

        await wait_until(pitea_failed, "Piteå's delivery refused")
        assert deliveries(receiver, "pitea") == []
    # The app's dispatcher stopped and gave its lease back; the next app does not dispatch,
    # so the Dispatchers below, with their own clocks, are the only ones.

    settings = subscription_settings(settings, **changes, dispatch=False)
    store = make_storage("sqlite", tmp_path)
    app = create_app(settings, store, clock)
    async with app.router.lifespan_context(app), in_process(app) as http:
        assert await events_of(http, lulea) == [1, 2]
        assert await events_of(http, pitea) == [1, 2]

        async def one_round(later: float) -> None:
            """One dispatcher round `later` seconds from now (its first round prunes)."""
            moment = datetime.now(UTC) + timedelta(seconds=later)
            dispatcher = Dispatcher(store, settings, lambda: moment, topics=app.state.topics)
            await dispatcher.step()
            assert dispatcher.holding
            await store.outbox.release_lease(LEASE, dispatcher.owner)

        await one_round(retention / 2)  # not old enough: all kept
        assert await events_of(http, lulea) == [1, 2]
        assert await events_of(http, pitea) == [1, 2]

        await one_round(retention + 60)
        # Luleå's first was delivered and is past retention: gone. The notice to both was
        # delivered to Luleå but Piteå still waits for it, so it stays for both.
        assert await events_of(http, lulea) == [2]
        assert await events_of(http, pitea) == [1, 2]
        bundle = (await http.get(f"/Subscription/{pitea}/$events")).json()
        assert numbered_focus(bundle) == [(1, only_pitea), (2, both)]
        bundle = (await http.get(f"/Subscription/{lulea}/$events")).json()
        assert numbered_focus(bundle) == [(2, both)]
        assert await status_of(http, lulea) == ("active", 2)

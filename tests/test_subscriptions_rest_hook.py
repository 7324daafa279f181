"""Topic-based subscriptions over rest-hook, end to end (Subscriptions Backport IG STU 1.1).

The FHIR app runs in process with its dispatcher; the subscriber is a real HTTP server on
127.0.0.1 (uvicorn in a thread) that records what it is sent and answers as a test tells it.
Waiting is polling with a deadline, never a fixed sleep asserted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_server.config import Settings
from fhir_server.sip.clock import STOCKHOLM, FixedClock
from tests.conftest import free_port
from tests.engines import make_storage
from tests.sip_case import case_client, example

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
ADMISSION_TOPIC = "http://sip-fhir.se/fhir/SubscriptionTopic/admission-notice"
LULEA = "Organization/lulea-municipality"
PITEA = "Organization/pitea-municipality"
WAIT = 15.0  # seconds any one expectation may take before the test fails


# -- the subscriber: a real HTTP server ---------------------------------------------------------


class Receiver:
    """A notification endpoint per path (`/a`, `/b`…) on a uvicorn server in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bundles: dict[str, list[dict[str, Any]]] = defaultdict(list)  # answered 2xx
        self.headers: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.attempts: dict[str, int] = defaultdict(int)
        self.status: dict[str, int] = {}  # path -> the status to answer (default 200)
        self.hang: set[str] = set()  # paths that never answer
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/{name}", self._receive, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _receive(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        with self._lock:
            self.attempts[name] += 1
        if name in self.hang:
            await asyncio.sleep(60)
        status = self.status.get(name, 200)
        if 200 <= status < 300:
            with self._lock:
                self.bundles[name].append(orjson.loads(body))
                self.headers[name].append(dict(request.headers))
        return Response(status_code=status)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("receiver did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(5)

    def of_type(self, name: str, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [b for b in self.bundles[name] if notification_type(b) == kind]


@pytest.fixture
def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- reading notification bundles ---------------------------------------------------------------


def status_parameters(bundle: dict[str, Any]) -> dict[str, Any]:
    """The first entry's SubscriptionStatus Parameters as {name: [parameter, …]}."""
    resource = bundle["entry"][0]["resource"]
    assert resource["resourceType"] == "Parameters"
    found: dict[str, Any] = defaultdict(list)
    for parameter in resource["parameter"]:
        found[parameter["name"]].append(parameter)
    return found


def notification_type(bundle: dict[str, Any]) -> str:
    return status_parameters(bundle)["type"][0]["valueCode"]


def event_numbers(bundle: dict[str, Any]) -> list[int]:
    numbers = []
    for event in status_parameters(bundle).get("notification-event", []):
        parts = {p["name"]: p for p in event["part"]}
        numbers.append(int(parts["event-number"]["valueString"]))
    return numbers


def event_focus(bundle: dict[str, Any]) -> list[str]:
    focus = []
    for event in status_parameters(bundle).get("notification-event", []):
        parts = {p["name"]: p for p in event["part"]}
        if "focus" in parts:
            focus.append(parts["focus"]["valueReference"]["reference"])
    return focus


def delivered_numbers(receiver: Receiver, name: str) -> list[int]:
    return [n for b in receiver.of_type(name, "event-notification") for n in event_numbers(b)]


async def wait_until(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Poll `check` until it holds; fail after WAIT seconds with `what`."""
    deadline = time.monotonic() + WAIT
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- the FHIR server -----------------------------------------------------------------------------


def subscription_settings(settings: Settings, **changes: Any) -> Settings:
    """Fast polling and retries, and 127.0.0.1 allowed over plain http."""
    values = {
        "subscription_allowed_hosts": ["127.0.0.1"],
        "subscription_poll_interval": 0.05,
        "subscription_retry_base": 0.05,
        "subscription_retry_cap": 0.2,
        "subscription_error_after": 2,
        "subscription_timeout": 5.0,
        "base_url": "http://fhir.test/fhir",
        **changes,
    }
    return settings.model_copy(update=values)


@contextlib.asynccontextmanager
async def fhir_server(
    engine: str, tmp_path: Path, settings: Settings, clock: FixedClock, **changes: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The SIP example case (less its acts) on a server that dispatches."""
    store = make_storage(engine, tmp_path)
    async with case_client(store, subscription_settings(settings, **changes), clock) as http:
        yield http


def subscription(
    endpoint: str,
    *,
    payload: str = "id-only",
    filters: list[str] = (),
    heartbeat: int | None = None,
    channel: str = "rest-hook",
    headers: list[str] = (),
) -> dict[str, Any]:
    """A Backport-IG R4 Subscription on the admission-notice topic."""
    extensions: list[dict[str, Any]] = [
        {"url": f"{BACKPORT}/backport-max-count", "valuePositiveInt": 1},
    ]
    if heartbeat is not None:
        extensions.append(
            {"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": heartbeat}
        )
    channel_json: dict[str, Any] = {
        "extension": extensions,
        "type": channel,
        "payload": "application/fhir+json",
        "_payload": {
            "extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": payload}]
        },
    }
    if channel == "rest-hook":
        channel_json["endpoint"] = endpoint
    if headers:
        channel_json["header"] = list(headers)
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Admission notices for the tests",
        "criteria": ADMISSION_TOPIC,
        "channel": channel_json,
    }
    if filters:
        resource["_criteria"] = {
            "extension": [
                {"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f} for f in filters
            ]
        }
    return resource


async def subscribe(http: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    response = await http.post("/Subscription", json=resource)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def subscription_status(http: httpx.AsyncClient, id: str) -> str:
    response = await http.get(f"/Subscription/{id}")
    assert response.status_code == 200, response.text
    return response.json()["status"]


async def wait_active(http: httpx.AsyncClient, id: str) -> None:
    async def active() -> bool:
        return await subscription_status(http, id) == "active"

    await wait_until(active, f"Subscription/{id} to be active")


def notice(id: str = "admission-notice", recipients: list[str] = (), text: str = "") -> dict:
    """The example admission notice, optionally as another id, recipients or text."""
    resource = copy.deepcopy(example("Communication-admission-notice"))
    resource["id"] = id
    if recipients:
        resource["recipient"] = [{"reference": r} for r in recipients]
    if text:
        resource["payload"] = [{"contentString": text}]
    return resource


async def send_notice(http: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await http.put(f"/Communication/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text


def pitea_municipality() -> dict[str, Any]:
    org = copy.deepcopy(example("Organization-lulea-municipality"))
    org["id"] = "pitea-municipality"
    org["name"] = "Piteå kommun"
    org["identifier"] = [
        {**org["identifier"][0], "value": "2120002627"},
        {**org["identifier"][1], "value": "SE2120002627-0000"},
    ]
    org.pop("text", None)
    return org


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["sqlite", "mongo"])
async def test_handshake_then_numbered_events_for_every_payload(
    engine: str, tmp_path: Path, settings: Settings, clock: FixedClock, receiver: Receiver
) -> None:
    async with fhir_server(engine, tmp_path, settings, clock) as http:
        ids = {}
        for payload in ("empty", "id-only", "full-resource"):
            resource = subscription(
                receiver.url(payload), payload=payload, headers=["X-Secret: s3cret"]
            )
            ids[payload] = await subscribe(http, resource)
        for payload, id in ids.items():
            await wait_active(http, id)
            handshakes = receiver.of_type(payload, "handshake")
            assert len(handshakes) == 1
            params = status_parameters(handshakes[0])
            assert params["subscription"][0]["valueReference"]["reference"].endswith(
                f"Subscription/{id}"
            )
            if payload != "empty":  # the IG: no topic in an `empty` notification
                assert params["topic"][0]["valueCanonical"] == ADMISSION_TOPIC
            assert receiver.headers[payload][0]["x-secret"] == "s3cret"
            assert receiver.headers[payload][0]["content-type"].startswith("application/fhir+json")

        await send_notice(http, notice())
        await send_notice(http, notice(text="Preliminärt utskrivningsdatum ändrat."))
        for payload in ids:
            await wait_until(
                lambda p=payload: delivered_numbers(receiver, p) == [1, 2],
                f"events 1 and 2 at {payload}",
            )
        for payload, id in ids.items():
            first = receiver.of_type(payload, "event-notification")[0]
            assert first["type"] == "history"
            params = status_parameters(first)
            assert params["events-since-subscription-start"][0]["valueString"] in ("1", "2")
            entries = first["entry"][1:]
            if payload == "empty":
                assert entries == []
                assert event_focus(first) == []
            elif payload == "id-only":
                assert event_focus(first)[0].endswith("Communication/admission-notice")
                assert all("resource" not in e for e in entries)
                assert entries[0]["fullUrl"].endswith("Communication/admission-notice")
                # the notificationShape's includes: references with their current versions
                context = {e["fullUrl"].split("/fhir/")[-1]: e["response"] for e in entries[1:]}
                assert context["Patient/tolvan-tolvansson"] == {"status": "200 OK", "etag": 'W/"1"'}
            else:
                focus = [e["resource"] for e in entries if "resource" in e]
                assert focus[0]["resourceType"] == "Communication"
                assert focus[0]["id"] == "admission-notice"
                assert focus[0]["meta"]["versionId"] == "1"
            assert await subscription_status(http, id) == "active"


async def test_heartbeat_when_idle(
    tmp_path: Path, settings: Settings, clock: FixedClock, receiver: Receiver
) -> None:
    async with fhir_server("sqlite", tmp_path, settings, clock) as http:
        id = await subscribe(http, subscription(receiver.url("beat"), heartbeat=1))
        await wait_active(http, id)
        await wait_until(lambda: len(receiver.of_type("beat", "heartbeat")) >= 2, "heartbeats")
        params = status_parameters(receiver.of_type("beat", "heartbeat")[0])
        assert params["status"][0]["valueCode"] == "active"
        assert params["events-since-subscription-start"][0]["valueString"] == "0"


async def test_status_and_events_operations(
    tmp_path: Path, settings: Settings, clock: FixedClock, receiver: Receiver
) -> None:
    async with fhir_server("sqlite", tmp_path, settings, clock) as http:
        id = await subscribe(http, subscription(receiver.url("ops")))
        await wait_active(http, id)
        await send_notice(http, notice())
        await send_notice(http, notice(text="Andra versionen."))
        await wait_until(lambda: delivered_numbers(receiver, "ops") == [1, 2], "two events")

        for response in (
            await http.get(f"/Subscription/{id}/$status"),
            await http.get("/Subscription/$status", params={"id": id}),
            await http.post(
                "/Subscription/$status",
                json={"resourceType": "Parameters", "parameter": [{"name": "id", "valueId": id}]},
            ),
        ):
            assert response.status_code == 200, response.text
            bundle = response.json()
            assert bundle["type"] == "searchset"
            params = status_parameters(bundle)
            assert params["type"][0]["valueCode"] == "query-status"
            assert params["status"][0]["valueCode"] == "active"
            assert params["events-since-subscription-start"][0]["valueString"] == "2"
        everything = (await http.get("/Subscription/$status")).json()
        assert len(everything["entry"]) == 1

        response = await http.get(f"/Subscription/{id}/$events")
        assert response.status_code == 200, response.text
        assert notification_type(response.json()) == "query-event"
        assert event_numbers(response.json()) == [1, 2]
        response = await http.get(
            f"/Subscription/{id}/$events",
            params={"eventsSinceNumber": "2", "content": "full-resource"},
        )
        assert event_numbers(response.json()) == [2]
        resources = [e["resource"] for e in response.json()["entry"][1:] if "resource" in e]
        assert resources[0]["meta"]["versionId"] == "2"
        response = await http.get(
            f"/Subscription/{id}/$events",
            params={"eventsSinceNumber": "1", "eventsUntilNumber": "1"},
        )
        assert event_numbers(response.json()) == [1]

        bad = await http.get(f"/Subscription/{id}/$events", params={"eventsSinceNumber": "x"})
        assert bad.status_code == 400
        assert bad.json()["issue"][0]["expression"] == ["eventsSinceNumber"]
        bad = await http.get(f"/Subscription/{id}/$events", params={"content": "everything"})
        assert bad.status_code == 400
        assert bad.json()["issue"][0]["expression"] == ["content"]
        for path in ("/Subscription/nope/$events", "/Subscription/nope/$status"):
            missing = await http.get(path)
            assert missing.status_code == 404
            assert missing.json()["resourceType"] == "OperationOutcome"


async def test_failing_endpoint_gets_every_event_in_order_once_it_recovers(
    tmp_path: Path, settings: Settings, clock: FixedClock, receiver: Receiver
) -> None:
    async with fhir_server("sqlite", tmp_path, settings, clock) as http:
        id = await subscribe(http, subscription(receiver.url("flaky")))
        await wait_active(http, id)
        receiver.status["flaky"] = 500
        for n in range(4):
            await send_notice(http, notice(text=f"Version {n}"))

        async def in_error() -> bool:
            return await subscription_status(http, id) == "error"

        await wait_until(in_error, "status error after repeated failures")
        resource = (await http.get(f"/Subscription/{id}")).json()
        assert "500" in resource["error"]
        status = status_parameters((await http.get(f"/Subscription/{id}/$status")).json())
        assert status["status"][0]["valueCode"] == "error"
        assert receiver.attempts["flaky"] >= 3  # handshake + failed attempts

        receiver.status["flaky"] = 200
        await wait_until(
            lambda: delivered_numbers(receiver, "flaky") == [1, 2, 3, 4], "events 1-4 in order"
        )
        await wait_active(http, id)
        assert "error" not in (await http.get(f"/Subscription/{id}")).json()


async def test_a_dead_endpoint_does_not_delay_another_subscription(
    tmp_path: Path, settings: Settings, clock: FixedClock, receiver: Receiver
) -> None:
    async with fhir_server("sqlite", tmp_path, settings, clock, subscription_timeout=30.0) as http:
        dead = await subscribe(http, subscription(receiver.url("dead")))
        alive = await subscribe(http, subscription(receiver.url("alive")))
        await wait_active(http, dead)
        await wait_active(http, alive)
        receiver.hang.add("dead")
        await send_notice(http, notice())
        await wait_until(lambda: receiver.attempts["dead"] >= 2, "the dead endpoint's attempt")
        started = time.monotonic()
        await send_notice(http, notice(text="Andra."))
        await wait_until(lambda: delivered_numbers(receiver, "alive") == [1, 2], "alive's events")
        assert time.monotonic() - started < 10  # far below the dead endpoint's 30 s timeout
        assert delivered_numbers(receiver, "dead") == []


async def test_a_rolled_back_transaction_notifies_nobody(
    tmp_path: Path, settings: Settings, clock: FixedClock, receiver: Receiver
) -> None:
    async with fhir_server("sqlite", tmp_path, settings, clock) as http:
        id = await subscribe(http, subscription(receiver.url("tx")))
        await wait_active(http, id)
        broken = {"resourceType": "Patient", "id": "broken", "gender": "not-a-gender"}
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": notice("rolled-back"),
                    "request": {"method": "PUT", "url": "Communication/rolled-back"},
                },
                {"resource": broken, "request": {"method": "PUT", "url": "Patient/broken"}},
            ],
        }
        response = await http.post("", json=bundle)
        assert response.status_code >= 400, response.text
        assert (await http.get("/Communication/rolled-back")).status_code == 404
        await send_notice(http, notice())
        await wait_until(lambda: delivered_numbers(receiver, "tx") == [1], "the one real event")
        bundles = receiver.of_type("tx", "event-notification")
        assert event_focus(bundles[0])[0].endswith("Communication/admission-notice")
        events = (await http.get(f"/Subscription/{id}/$events")).json()
        assert event_numbers(events) == [1]


async def test_a_municipality_hears_of_the_notices_addressed_to_it_only(
    tmp_path: Path, settings: Settings, clock: FixedClock, receiver: Receiver
) -> None:
    async with fhir_server("sqlite", tmp_path, settings, clock) as http:
        response = await http.put(f"/{PITEA}", json=pitea_municipality())
        assert response.status_code == 201, response.text
        lulea = await subscribe(
            http, subscription(receiver.url("lulea"), filters=[f"Communication?recipient={LULEA}"])
        )
        pitea = await subscribe(
            http, subscription(receiver.url("pitea"), filters=[f"recipient={PITEA}"])
        )
        await wait_active(http, lulea)
        await wait_active(http, pitea)

        await send_notice(http, notice())  # to the health centre and Luleå
        await send_notice(http, notice("notice-to-pitea", recipients=[PITEA]))
        await wait_until(lambda: delivered_numbers(receiver, "pitea") == [1], "Piteå's notice")
        await wait_until(lambda: delivered_numbers(receiver, "lulea") == [1], "Luleå's notice")
        lulea_focus = event_focus(receiver.of_type("lulea", "event-notification")[0])
        pitea_focus = event_focus(receiver.of_type("pitea", "event-notification")[0])
        assert lulea_focus[0].endswith("Communication/admission-notice")
        assert pitea_focus[0].endswith("Communication/notice-to-pitea")
        status = status_parameters((await http.get(f"/Subscription/{lulea}/$status")).json())
        assert status["events-since-subscription-start"][0]["valueString"] == "1"


async def test_the_servers_own_obligation_task_is_an_event_like_any_other_write(
    tmp_path: Path, settings: Settings, clock: FixedClock, receiver: Receiver
) -> None:
    """R-DIS-05: the admission notice makes the server open the municipality's
    acknowledgement Task, due 12:00 the day after it was sent (2026-11-03); with the
    server's clock past that, the obligation-overdue topic fires for that Task, filtered on
    its owner (FHIRPath's now() is the server's clock, not the wall clock)."""
    clock.moment = datetime(2026, 11, 4, 9, 0, tzinfo=STOCKHOLM)
    async with fhir_server("sqlite", tmp_path, settings, clock) as http:
        overdue = subscription(receiver.url("overdue"), filters=[f"Task?owner={LULEA}"])
        overdue["criteria"] = "http://sip-fhir.se/fhir/SubscriptionTopic/obligation-overdue"
        overdue_id = await subscribe(http, overdue)
        await wait_active(http, overdue_id)

        await send_notice(http, notice())  # to the health centre and Luleå
        await wait_until(lambda: delivered_numbers(receiver, "overdue") == [1], "the Task")
        focus = event_focus(receiver.of_type("overdue", "event-notification")[0])[0]
        task = (await http.get(focus.split("/fhir/", 1)[-1].removeprefix("/"))).json()
        assert task["resourceType"] == "Task"
        assert task["owner"]["reference"] == LULEA
        assert task["code"]["coding"][0]["code"] == "kvittera-meddelande"


async def test_capability_statement_names_the_topics_and_operations(
    tmp_path: Path, settings: Settings, clock: FixedClock
) -> None:
    async with fhir_server("sqlite", tmp_path, settings, clock) as http:
        statement = (await http.get("/metadata")).json()
        resource = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
        assert f"{BACKPORT}/backport-subscription" in resource["supportedProfile"]
        topics = {
            e["valueCanonical"]
            for e in resource["extension"]
            if e["url"] == f"{BACKPORT}/capabilitystatement-subscriptiontopic-canonical"
        }
        assert ADMISSION_TOPIC in topics
        names = {op["name"] for op in resource["operation"]}
        assert {"status", "events", "get-ws-binding-token"} <= names


def test_dispatch_command_is_known() -> None:
    from fhir_server.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["dispatch", "--help"])
    assert exit.value.code == 0


async def test_one_dispatcher_per_database_by_lease(
    tmp_path: Path, settings: Settings, clock: FixedClock
) -> None:
    from fhir_server.api.app import create_app
    from fhir_server.subscriptions.dispatcher import Dispatcher

    settings = subscription_settings(settings, dispatch=False)
    store = make_storage("sqlite", tmp_path)
    app = create_app(settings, store, clock)
    async with app.router.lifespan_context(app):
        first = Dispatcher(store, settings, topics=app.state.topics)
        second = Dispatcher(store, settings, topics=app.state.topics)
        await first.step()
        await second.step()
        assert (first.holding, second.holding) == (True, False)
        await second.step()  # a process without the lease asks again only every lease/3 s
        assert not second.holding
        await store.outbox.release_lease("subscriptions", first.owner)
        third = Dispatcher(store, settings, topics=app.state.topics)
        await third.step()  # a process asks at its first round: the released lease is free
        assert third.holding

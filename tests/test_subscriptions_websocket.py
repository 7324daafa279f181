"""Topic-based subscriptions over the websocket channel (Backport IG STU 1.1).

The FHIR app is served by a real uvicorn (in a thread) so a real websocket client (the
`websockets` library) binds with a token from `$get-ws-binding-token`, gets its handshake and
then the event notifications, numbered as over rest-hook.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from fhir_server.api.app import create_app
from fhir_server.config import Settings
from fhir_server.sip.clock import FixedClock
from tests.conftest import free_port
from tests.engines import make_storage
from tests.sip_case import ACTS, load_case
from tests.test_subscriptions_rest_hook import (
    event_numbers,
    notice,
    notification_type,
    send_notice,
    status_parameters,
    subscribe,
    subscription,
    subscription_settings,
    wait_active,
)

WAIT = 15.0


class FhirServer:
    """The app under uvicorn in a thread (its lifespan, and so its dispatcher, run there)."""

    def __init__(self, settings: Settings, tmp_path: Path, clock: FixedClock) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        settings = subscription_settings(
            settings, base_url=self.base_url, obligation_sweep_interval=3600.0
        )
        app = create_app(settings, make_storage("sqlite", tmp_path), clock)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", ws="websockets-sansio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("FHIR server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def server(settings: Settings, tmp_path: Path, clock: FixedClock) -> Iterator[FhirServer]:
    live = FhirServer(settings, tmp_path, clock)
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
async def http(server: FhirServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Accept": "application/fhir+json"},
        timeout=30,
        trust_env=False,
    ) as client:
        await load_case(client, leave_out=ACTS)
        yield client


async def receive(socket: ClientConnection) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(socket.recv(), WAIT))


async def token_for(http: httpx.AsyncClient, id: str) -> dict[str, Any]:
    response = await http.get(f"/Subscription/{id}/$get-ws-binding-token")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = {}
    for parameter in response.json()["parameter"]:
        value = next(v for k, v in parameter.items() if k.startswith("value"))
        found.setdefault(parameter["name"], []).append(value)
    return found


async def test_bind_handshake_and_events(http: httpx.AsyncClient) -> None:
    id = await subscribe(http, subscription("", channel="websocket", payload="id-only"))
    await wait_active(http, id)
    await send_notice(http, notice())  # before any socket: it waits for one

    binding = await token_for(http, id)
    assert binding["subscription"] == [f"Subscription/{id}"]
    assert binding["websocket-url"][0].startswith("ws://127.0.0.1:")
    assert binding["expiration"][0] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    async with connect(binding["websocket-url"][0]) as socket:
        await socket.send(f"bind-with-token {binding['token'][0]}")
        handshake = await receive(socket)
        assert notification_type(handshake) == "handshake"
        params = status_parameters(handshake)
        assert params["subscription"][0]["valueReference"]["reference"].endswith(id)

        first = await receive(socket)
        assert notification_type(first) == "event-notification"
        assert event_numbers(first) == [1]
        await send_notice(http, notice(text="Ändrat utskrivningsdatum."))
        second = await receive(socket)
        assert event_numbers(second) == [2]

    status = status_parameters((await http.get(f"/Subscription/{id}/$status")).json())
    assert status["events-since-subscription-start"][0]["valueString"] == "2"
    assert status["status"][0]["valueCode"] == "active"


async def test_events_wait_for_a_socket_and_keep_their_numbers(http: httpx.AsyncClient) -> None:
    id = await subscribe(http, subscription("", channel="websocket", payload="full-resource"))
    await wait_active(http, id)
    binding = await token_for(http, id)
    url, token = binding["websocket-url"][0], binding["token"][0]
    async with connect(url) as socket:
        await socket.send(f"bind-with-token {token}")
        assert notification_type(await receive(socket)) == "handshake"
        await send_notice(http, notice())
        assert event_numbers(await receive(socket)) == [1]
    # Disconnected: the next event waits, and reaches the next socket bound, as number 2.
    await send_notice(http, notice(text="Medan ingen lyssnade."))
    async with connect(url) as socket:
        await socket.send(f"bind-with-token {token}")
        assert notification_type(await receive(socket)) == "handshake"
        event = await receive(socket)
        assert event_numbers(event) == [2]
        focus = [e["resource"] for e in event["entry"][1:] if "resource" in e]
        assert focus[0]["meta"]["versionId"] == "2"


async def test_a_bad_token_and_a_rest_hook_subscription_are_refused(
    http: httpx.AsyncClient, server: FhirServer
) -> None:
    url = f"ws://127.0.0.1:{server.port}/fhir/$subscription-ws"
    async with connect(url) as socket:
        await socket.send("bind-with-token not-a-token")
        outcome = await receive(socket)
        assert outcome["resourceType"] == "OperationOutcome"
    hook = await subscribe(http, subscription("http://127.0.0.1:9/none"))
    response = await http.get(f"/Subscription/{hook}/$get-ws-binding-token")
    assert response.status_code == 400
    response = await http.get("/Subscription/unknown/$get-ws-binding-token")
    assert response.status_code == 404

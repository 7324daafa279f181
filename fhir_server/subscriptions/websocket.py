"""The websocket channel: binding tokens, the socket endpoint, and delivery through it.

A client asks `Subscription/$get-ws-binding-token` for a short-lived token, connects to the
`websocket-url` it names and sends `bind-with-token <token>`. The server answers with a
handshake Bundle per subscription the token covers, then the dispatcher sends that
subscription's notifications through the socket: the same numbering and order as rest-hook,
and a send that succeeded counts as delivered. With no socket bound the notifications wait.
Tokens are signed with a key kept in the database, so a token one process issued binds in
any process that serves the same database (`serve --workers N`). Sockets live in the memory
of the process they connected to; that process delivers to them (see the dispatcher).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from fhir_server import fhirjson
from fhir_server.api.base_url import base_url
from fhir_server.errors import error, operation_outcome
from fhir_server.interactions.context import Context
from fhir_server.search.parser import parse_search
from fhir_server.storage.port import Storage
from fhir_server.subscriptions import notifications as bundles
from fhir_server.subscriptions.dispatcher import blank_state, load_subscription
from fhir_server.subscriptions.model import SubscriptionSpec

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 300.0  # seconds a binding token may be used to bind
SOCKET_PATH = "/$subscription-ws"  # under the FHIR base, e.g. ws://host/fhir/$subscription-ws
MAX_MESSAGE = 65536  # characters of a client message read: a token names its subscriptions
KEY_META = "websocket-token-key"  # the signing key, hex, in the storage's meta


@dataclass(frozen=True, slots=True)
class Binding:
    token: str
    subscriptions: tuple[str, ...]
    expires: datetime


@dataclass(eq=False, slots=True)
class Connection:
    """One client socket; `lock` keeps the handshake ahead of (and sends apart from) events."""

    socket: WebSocket
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subscriptions: set[str] = field(default_factory=set)


class WebsocketHub:
    """Binding tokens and the sockets bound in this process.

    A token is its subscriptions and expiry, signed (HMAC-SHA256) with `key`: nothing is kept
    per token, and every process with the database's key can redeem it (`token_key`)."""

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.now = now
        self.key = secrets.token_bytes(32)  # replaced by the database's key at start-up
        self._bound: dict[str, list[Connection]] = {}

    def issue(self, subscriptions: Iterable[str]) -> Binding:
        ids = tuple(subscriptions)
        expires = (self.now() + timedelta(seconds=TOKEN_LIFETIME)).replace(microsecond=0)
        claims = fhirjson.dumps({"s": list(ids), "e": int(expires.timestamp())})
        payload = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
        return Binding(f"{payload}.{self._sign(payload)}", ids, expires)

    def redeem(self, token: str) -> tuple[str, ...] | None:
        """The subscriptions of an unexpired token this database's key signed (usable until
        it expires)."""
        payload, _, signature = token.partition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            ids, expires = tuple(str(id) for id in claims["s"]), int(claims["e"])
        except (ValueError, TypeError, KeyError):
            return None
        if expires <= self.now().timestamp():
            return None
        return ids

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self.key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def bound(self) -> list[str]:
        """The subscriptions with a socket in this process."""
        return list(self._bound)

    def attach(self, subscription: str, connection: Connection) -> None:
        connection.subscriptions.add(subscription)
        bound = self._bound.setdefault(subscription, [])
        if connection not in bound:
            bound.append(connection)

    def detach(self, connection: Connection, subscription: str | None = None) -> None:
        for id in [subscription] if subscription else list(connection.subscriptions):
            connection.subscriptions.discard(id)
            bound = self._bound.get(id, [])
            if connection in bound:
                bound.remove(connection)
            if not bound:
                self._bound.pop(id, None)

    def connected(self, subscription: str) -> bool:
        return bool(self._bound.get(subscription))

    async def send(self, subscription: str, bundle: dict[str, Any]) -> bool:
        """Send to every socket bound to `subscription`; True if one took it. A socket that
        fails is dropped (the client reconnects and binds again)."""
        text = fhirjson.dumps(bundle).decode()
        sent = False
        for connection in list(self._bound.get(subscription, ())):
            try:
                async with connection.lock:
                    await connection.socket.send_text(text)
                sent = True
            except Exception:
                self.detach(connection)
        return sent


def websocket_url(http_base: str) -> str:
    """The socket's URL from the FHIR base: http -> ws, https -> wss."""
    scheme, _, rest = http_base.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{SOCKET_PATH}"


async def binding_token(
    ctx: Context, hub: WebsocketHub, topics: Any, id: str | None, ids: list[str]
) -> dict[str, Any]:
    """`$get-ws-binding-token`: a token for the named websocket Subscriptions (instance:
    that one; type level: the `id` parameters, or every websocket one the caller sees)."""
    wanted = [id] if id is not None else ids
    if not wanted:
        wanted = await _websocket_subscriptions(ctx, topics)
        if not wanted:
            raise error(404, "not-found", "There is no websocket Subscription to bind to")
    for sub in wanted:
        spec = await load_subscription(ctx.storage, topics, ctx.settings, sub)
        expression = "Subscription" if id is not None else "Parameters.parameter('id')"
        if spec is None:
            version = await ctx.storage.read("Subscription", sub, ctx.access)
            if version is None or version.json is None:
                raise error(404, "not-found", f"Subscription/{sub} is not known")
            raise error(400, "invalid", f"Subscription/{sub} cannot be dispatched", expression)
        if spec.channel != "websocket":
            message = f"Subscription/{sub} has channel type '{spec.channel}', not websocket"
            raise error(400, "invalid", message, expression)
    binding = hub.issue(wanted)
    expiration = binding.expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "token", "valueString": binding.token},
            {"name": "expiration", "valueDateTime": expiration},
            *({"name": "subscription", "valueString": f"Subscription/{s}"} for s in wanted),
            {"name": "websocket-url", "valueUrl": websocket_url(ctx.base_url)},
        ],
    }


async def token_key(storage: Storage) -> bytes:
    """The database's token signing key, made on first use (at start-up, under the start-up
    lease, so concurrent processes never make two)."""
    async with storage.unit_of_work() as uow:
        stored = await uow.meta(KEY_META)
        if stored is None:
            stored = secrets.token_hex(32)
            await uow.set_meta(KEY_META, stored)
    return bytes.fromhex(stored)


async def _websocket_subscriptions(ctx: Context, topics: Any) -> list[str]:
    query = parse_search("Subscription", [("_count", "1000")], max_count=1000).query
    page = await ctx.storage.search(query, ctx.access)
    found = []
    for version in page.items:
        spec = await load_subscription(ctx.storage, topics, ctx.settings, version.id)
        if spec is not None and spec.channel == "websocket" and spec.status != "off":
            found.append(version.id)
    return found


async def subscription_socket(websocket: WebSocket) -> None:
    """The websocket endpoint: `bind-with-token <token>` (and `unbind-with-token`)."""
    state = websocket.app.state
    hub: WebsocketHub = state.websockets
    await websocket.accept()
    connection = Connection(websocket)
    http_base = base_url(websocket.scope, state.settings)
    try:
        while True:
            message = (await websocket.receive_text())[:MAX_MESSAGE].strip()
            command, _, token = message.partition(" ")
            token = token.strip()
            if command == "bind-with-token":
                ids = hub.redeem(token)
                if ids is None:
                    await _refuse(connection, "The binding token is unknown or expired")
                    continue
                await _bind(connection, hub, state, ids, http_base)
            elif command == "unbind-with-token":
                for id in hub.redeem(token) or ():
                    hub.detach(connection, id)
            elif command == "ping":
                async with connection.lock:
                    await websocket.send_text("pong")
            else:
                await _refuse(connection, "Send 'bind-with-token <token>'")
    except WebSocketDisconnect:
        pass
    finally:
        hub.detach(connection)


async def _bind(
    connection: Connection, hub: WebsocketHub, state: Any, ids: Iterable[str], http_base: str
) -> None:
    """A handshake per subscription, then the socket joins: events only come after it."""
    storage: Storage = state.storage
    dispatcher = getattr(state, "dispatcher", None)
    base = dispatcher.base_url if dispatcher is not None else http_base
    async with connection.lock:
        for id in ids:
            spec: SubscriptionSpec | None = await load_subscription(
                storage, state.topics, state.settings, id
            )
            if spec is None:
                await _refuse_unlocked(connection, f"Subscription/{id} is not known")
                continue
            current = await storage.outbox.state(id) or blank_state(spec)
            await connection.socket.send_text(
                fhirjson.dumps(bundles.handshake(spec, current, base)).decode()
            )
            hub.attach(id, connection)
    if dispatcher is not None:
        dispatcher.notify()


async def _refuse(connection: Connection, message: str) -> None:
    async with connection.lock:
        await _refuse_unlocked(connection, message)


async def _refuse_unlocked(connection: Connection, message: str) -> None:
    outcome = operation_outcome([])
    outcome["issue"] = [{"severity": "error", "code": "invalid", "diagnostics": message}]
    with contextlib.suppress(Exception):
        await connection.socket.send_text(fhirjson.dumps(outcome).decode())

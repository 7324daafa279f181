"""Request limits the app enforces itself: header count and size (431), body read time (408).

As ASGI middleware they hold under any ASGI server. Under `fhir-server serve` the HTTP
protocol (`api/protocol.py`) already refuses an oversized head while it is read, before it
is buffered; here the head is checked once it is complete. A body that drips in slower than
`body_timeout` would hold a connection and a task for as long as the client likes, so its
`receive()` gets a deadline and the answer is 408 with `Connection: close`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server import fhirjson
from fhir_server.api.responses import outcome_response
from fhir_server.config import Settings
from fhir_server.errors import FhirError, Issue, operation_outcome


@dataclass(frozen=True, slots=True)
class Limits:
    max_headers: int
    max_header_bytes: int
    body_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_headers, settings.max_header_bytes, settings.body_timeout)


class BodyTimeout(FhirError):
    """Raised from `receive()`; the app's error handler renders it as a 408 OperationOutcome."""


def refusal(code: str, message: str) -> bytes:
    """An OperationOutcome as bytes, for answers written before or outside the app."""
    return fhirjson.dumps(operation_outcome([Issue("error", code, message)]))


def head_refusal(count: int, size: int, limits: Limits) -> str | None:
    """Why a request head of `count` fields and `size` bytes is refused, or None."""
    if count > limits.max_headers:
        return f"Request has {count} header fields; the limit is {limits.max_headers}"
    if size > limits.max_header_bytes:
        return f"Request line and headers exceed the limit of {limits.max_header_bytes} bytes"
    return None


def head_size(scope: Scope) -> int:
    """About the bytes of the request line and header fields as they were sent."""
    target = len(scope.get("raw_path") or scope["path"]) + len(scope.get("query_string", b""))
    return len(scope["method"]) + target + sum(len(n) + len(v) + 4 for n, v in scope["headers"])


class RequestLimits:
    """ASGI middleware: 431 for a head over the limits, 408 for a body that arrives too slowly."""

    def __init__(self, app: ASGIApp, settings: Settings | None = None) -> None:
        self.app = app
        self.limits = Limits.from_settings(settings or Settings())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = head_refusal(len(scope["headers"]), head_size(scope), self.limits)
        if refused is not None:
            issue = Issue("error", "too-long", refused)
            await outcome_response([issue], 431, {"Connection": "close"})(scope, receive, send)
            return
        body = _BodyDeadline(receive, self.limits.body_timeout)
        started = False

        async def send_closing_after_timeout(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if body.timed_out:
                    headers = [*message.get("headers", []), (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, body, send_closing_after_timeout)
        except BodyTimeout as exc:
            if started:
                raise
            issues, headers = exc.issues, {"Connection": "close"}
            await outcome_response(issues, exc.status, headers)(scope, receive, send)


class _BodyDeadline:
    """`receive()` that gives the whole request body until a deadline set at the request's
    start; after the last body chunk it passes through (waiting for a disconnect is fine)."""

    def __init__(self, receive: Receive, timeout: float) -> None:
        self.receive = receive
        self.timeout = timeout
        self.deadline = asyncio.get_running_loop().time() + timeout
        self.done = False
        self.timed_out = False

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()
        try:
            async with asyncio.timeout_at(self.deadline):
                message: dict[str, Any] = await self.receive()
        except TimeoutError:
            self.timed_out = True
            message_text = f"The request body did not arrive within {self.timeout:g} s"
            raise BodyTimeout(408, [Issue("error", "timeout", message_text)]) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message

"""The HTTP/1.1 connection under `fhir-server serve`: uvicorn's httptools protocol, bounded.

uvicorn has no limit on a request head: httptools buffers the request line and header fields
as long as they come, and uvicorn waits for them without a deadline; a connection that sends
nothing is kept until the client closes it. So one slow or endless head holds memory and a
connection, and enough of them starve the server. This protocol adds, while the head is read:

- a head larger than `max_header_bytes`, or with more than `max_headers` fields: 431;
- a head not complete `header_timeout` seconds after connecting or after its first byte: 408
  (a connection that sent nothing is closed without an answer);
- a connection beyond `max_connections`: 503 and closed at once.

uvicorn's own refusals (bad request line, bad chunking, Content-Length with Transfer-Encoding)
leave as a 400 OperationOutcome rather than plain text. Every refusal closes the connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from fhir_server.api.limits import Limits, head_refusal, refusal
from fhir_server.config import Settings


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    head: Limits
    header_timeout: float
    max_connections: int


class Refused(Exception):
    """Raised from a parser callback to stop parsing; `send_400_response` writes the answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bounded_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """The protocol class to pass as uvicorn's `http=`, with the settings' limits."""
    limits = ConnectionLimits(
        Limits.from_settings(settings), settings.header_timeout, settings.max_connections
    )
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # from connecting, or the end of a request, to a head's end
        self._head_received = 0  # bytes since then, counted per read: a field still buffered
        self._head_size = 0  # request line and the fields parsed so far, exactly
        self._header_count = 0
        self._refused: Refused | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(Refused(503, "throttled", "Too many open connections; try again"))
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused: what follows is not read
        if self._in_head:
            self._head_received += len(data)
        super().data_received(data)
        limit = self.limits.head.max_header_bytes
        if self._in_head and self._head_received > limit and not self.transport.is_closing():
            refused = head_refusal(self._header_count, self._head_received, self.limits.head)
            self._refuse(Refused(431, "too-long", refused or "Request head too large"))

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_received = self._head_size = self._header_count = 0

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse, or to a `Refused` callback."""
        self._refuse(self._refused or Refused(400, "structure", msg))

    # Limits
    def _count(self, size: int) -> None:
        self._head_size += size
        refused = head_refusal(self._header_count, self._head_size, self.limits.head)
        if refused is not None:
            self._refused = Refused(431, "too-long", refused)
            raise self._refused

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            timeout = self.limits.header_timeout
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head waits while a response is written
            return
        if self._head_received == 0:
            self.logger.debug("closing a connection that sent no request in time")
            self.transport.close()
            return
        timeout = self.limits.header_timeout
        self._refuse(Refused(408, "timeout", f"The request head took longer than {timeout:g} s"))

    def _refuse(self, refused: Refused) -> None:
        client = "{}:{}".format(*self.client) if self.client else "unknown"
        self.logger.warning("%s - %d %s", client, refused.status, refused.message)
        body = refusal(refused.code, refused.message)
        head = [STATUS_LINE[refused.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/fhir+json; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

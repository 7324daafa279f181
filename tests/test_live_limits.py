"""Against a real uvicorn process, over raw sockets: every malformed, oversized or slow request
gets a bounded 4xx OperationOutcome (never a 5xx, never a hang), the connection is closed,
and the server keeps serving. Timeouts are tiny (0.5 s) so the slow cases take no longer.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.conftest import LiveServer

TIMEOUT = 0.5
LIMITS = {
    "FHIR_HEADER_TIMEOUT": str(TIMEOUT),
    "FHIR_BODY_TIMEOUT": str(TIMEOUT),
    "FHIR_KEEP_ALIVE_TIMEOUT": str(TIMEOUT),
    "FHIR_MAX_HEADERS": "20",
    "FHIR_MAX_HEADER_BYTES": "8192",
    "FHIR_MAX_CONNECTIONS": "30",
}
GIVE_UP = 10.0  # seconds: a test that waits longer than this has found a hang


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("limits") / "live.sqlite3", env=LIMITS)
    live.start()
    try:
        yield live
    finally:
        live.stop()


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=GIVE_UP)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def exchange(server: LiveServer, raw: bytes) -> tuple[int, dict, float]:
    """Send `raw`, read the answer to the server's close: (status, OperationOutcome, seconds)."""
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(raw)
        received = until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, orjson.loads(body), time.monotonic() - started


def assert_serving(server: LiveServer) -> None:
    assert httpx.get(f"{server.base_url}/metadata", timeout=GIVE_UP).status_code == 200


def assert_refused(server: LiveServer, raw: bytes, status: int, code: str) -> float:
    got, outcome, seconds = exchange(server, raw)
    assert got == status, outcome
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code
    assert_serving(server)
    return seconds


POST = b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
MALFORMED = {
    "request line": b"GARBAGE\r\n\r\n",
    "HTTP version": b"GET /fhir/metadata HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
    "chunk size": POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "Content-Length with Transfer-Encoding": POST
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two Content-Lengths": POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    "NUL in a header value": b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_http_is_400_outcome_and_the_server_serves_on(
    server: LiveServer, raw: bytes
) -> None:
    assert_refused(server, raw, 400, "structure")


def test_more_header_fields_than_the_limit_are_431(server: LiveServer) -> None:
    fields = b"".join(b"X-Field-%d: a\r\n" % i for i in range(25))
    raw = b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n"
    assert_refused(server, raw, 431, "too-long")


def test_a_head_over_the_byte_limit_is_431(server: LiveServer) -> None:
    raw = b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert_refused(server, raw, 431, "too-long")


def test_an_endless_header_is_431_before_it_ends(server: LiveServer) -> None:
    """No end of line yet: refused from the bytes received, not buffered to the end."""
    raw = b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000
    assert_refused(server, raw, 431, "too-long")


def test_a_long_request_line_is_431(server: LiveServer) -> None:
    raw = b"GET /fhir/Patient?name=" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert_refused(server, raw, 431, "too-long")


def test_a_slow_head_is_408_after_the_header_timeout(server: LiveServer) -> None:
    """Slowloris: the head never ends; the answer comes at FHIR_HEADER_TIMEOUT."""
    raw = b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a"
    seconds = assert_refused(server, raw, 408, "timeout")
    assert TIMEOUT * 0.8 < seconds < GIVE_UP


def test_a_silent_connection_is_closed_after_the_header_timeout(server: LiveServer) -> None:
    started = time.monotonic()
    with connect(server) as sock:
        assert until_closed(sock) == b""
    assert time.monotonic() - started < GIVE_UP
    assert_serving(server)


def test_an_idle_keep_alive_connection_is_closed(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /fhir/Patient?_count=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert until_closed(sock) == b""  # closed by the server after FHIR_KEEP_ALIVE_TIMEOUT
        assert time.monotonic() - started < GIVE_UP


def test_a_slow_body_is_408_and_the_connection_closed(server: LiveServer) -> None:
    """The head arrives, the body never completes: 408 at FHIR_BODY_TIMEOUT."""
    raw = POST + b"Content-Length: 100\r\n\r\n" + b'{"resourceType":'
    seconds = assert_refused(server, raw, 408, "timeout")
    assert TIMEOUT * 0.8 < seconds < GIVE_UP


def test_connections_beyond_the_cap_get_503_at_once(server: LiveServer) -> None:
    held = [connect(server) for _ in range(30)]  # the cap; accepted in order, before the probe
    try:
        status, outcome, seconds = exchange(server, b"")
        assert (status, outcome["issue"][0]["code"]) == (503, "throttled")
        assert seconds < TIMEOUT
    finally:
        for sock in held:
            sock.close()
    assert_serving(server)

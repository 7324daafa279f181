"""The base of every absolute URL the server writes (`Location`, `fullUrl`, Bundle links).

A client chooses the `Host` header, so echoing it would let `Host: evil.example` put another
server's address into links that other clients follow. The base comes from `FHIR_BASE_URL`
when it is set; otherwise `Host` is echoed only for an allowed host, and the server's own
address (the socket the request came in on) is used in its place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from fhir_server.config import Settings

HOST = re.compile(r"(?P<name>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")
DEFAULT_PORTS = {"http": 80, "https": 443}


def base_url(scope: dict[str, Any], settings: Settings) -> str:
    """`https://fhir.region.se/fhir`, whatever the request's `Host` header says."""
    if settings.base_url:
        return settings.base_url.rstrip("/")
    server = scope.get("server")
    return _base(
        scope.get("scheme", "http"),
        _host_header(scope),
        tuple(server) if server else None,
        scope.get("root_path", ""),
        tuple(settings.allowed_hosts),
        settings.base_path,
    )


@lru_cache(maxsize=256)
def _base(
    scheme: str,
    host: str | None,
    server: tuple[Any, ...] | None,
    root_path: str,
    allowed_hosts: tuple[str, ...],
    base_path: str,
) -> str:
    """The base for one request shape; remembered, as every request of a client asks again."""
    address = _server_authority(server)
    allowed = [*allowed_hosts, address[0]]
    authority = _allowed_host(host, allowed) or _authority(*address, scheme)
    return f"{scheme}://{authority}{root_path}{base_path}"


def _host_header(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return value.decode("latin-1")
    return None


def _allowed_host(header: str | None, allowed: Iterable[str]) -> str | None:
    """The header as sent when it is `name[:port]` and the name is allowed; else None."""
    if header is None:
        return None
    match = HOST.fullmatch(header.strip())
    if match is None:
        return None
    name = match["name"].lower()
    if any(name == host.lower() for host in allowed):
        return match[0]
    return None


def _server_authority(server: tuple[Any, ...] | None) -> tuple[str, int | None]:
    """The listening address as a URL host (`[::1]` for IPv6); localhost for a Unix socket."""
    if not server or str(server[0]).startswith("/"):
        return "localhost", None
    host, port = str(server[0]), server[1]
    return (f"[{host}]" if ":" in host else host), (None if port is None else int(port))


def _authority(host: str, port: int | None, scheme: str) -> str:
    if port is None or DEFAULT_PORTS.get(scheme) == port:
        return host
    return f"{host}:{port}"

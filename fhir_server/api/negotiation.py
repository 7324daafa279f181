"""Content negotiation: what we read (request Content-Type) and what we write (_format, Accept).

We speak FHIR JSON only. Asking for anything else is 406; sending anything else is 415.
"""

from __future__ import annotations

from functools import lru_cache

from starlette.requests import Request

from fhir_server.errors import error

FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir", "text/json"})
FORMAT_ALIASES = frozenset({"json", *JSON_TYPES})
ACCEPT_ANY = frozenset({"*/*", "application/*"})


def check_response_format(request: Request) -> bool:
    """Raise 406 unless JSON is acceptable; return whether `_pretty=true` was asked."""
    if not request.scope["query_string"]:  # the common case: skip parsing a query
        _check_accept(request.headers.get("accept"))
        return False
    fmt = request.query_params.get("_format")
    if fmt is not None:
        media = fmt.split(";")[0].strip().lower()
        if media not in FORMAT_ALIASES:
            raise error(406, "not-supported", f"_format '{fmt}' is not served; use json", "_format")
    else:
        _check_accept(request.headers.get("accept"))
    return request.query_params.get("_pretty") == "true"


def _check_accept(header: str | None) -> None:
    if not header or not header.strip() or _accepts_json(header):
        return
    raise error(
        406, "not-supported", f"None of '{header}' is served; this server speaks {FHIR_JSON}"
    )


@lru_cache(maxsize=256)
def _accepts_json(header: str) -> bool:
    """Whether an Accept header takes FHIR JSON; remembered, as each client sends one."""
    for media_range in header.split(","):
        media, *params = (part.strip() for part in media_range.split(";"))
        options = dict(p.partition("=")[::2] for p in params)
        if options.get("q", "1").strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        version = options.get("fhirVersion")
        if version is not None and not version.startswith("4.0"):
            continue
        if media.lower() in JSON_TYPES or media in ACCEPT_ANY:
            return True
    return False


def check_request_format(request: Request) -> None:
    """Raise 415 unless the body is declared as JSON (no Content-Type is taken as JSON)."""
    header = request.headers.get("content-type")
    if header is None:
        return
    media, *params = (part.strip() for part in header.split(";"))
    charset = dict(p.partition("=")[::2] for p in params).get("charset", "utf-8").strip('"')
    if media.lower() not in JSON_TYPES or charset.lower() not in ("utf-8", "utf8"):
        raise error(
            415,
            "not-supported",
            f"Content-Type '{header}' is not accepted; send {FHIR_JSON} in UTF-8",
        )

"""The rest-hook channel: one notification Bundle POSTed to the subscriber's endpoint.

Only a 2xx answer counts as delivered: a redirect is not followed (the endpoint the subscriber
registered, and that the handshake verified, is the only place notifications go), and anything
else is a failure whose short text becomes `Subscription.error` and the state's `last_error`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from fhir_server import fhirjson

CONTENT_TYPE = "application/fhir+json"
MAX_ERROR = 200  # characters of error text kept: it is stored and shown in $status


class DeliveryError(Exception):
    """A notification that did not reach the endpoint; `str()` is the short reason."""


async def post(
    client: httpx.AsyncClient,
    endpoint: str,
    bundle: dict[str, Any],
    headers: Iterable[tuple[str, str]] = (),
    timeout: float = 10.0,
) -> None:
    """POST `bundle` to `endpoint` with the Subscription's `channel.header`s (parsed and
    checked by `model.parse_subscription`); raises DeliveryError unless the answer is 2xx."""
    sent = {**dict(headers), "Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
    try:
        response = await client.post(
            endpoint,
            content=fhirjson.dumps(bundle),
            headers=sent,
            timeout=timeout,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        raise DeliveryError(f"No answer from {endpoint} within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise DeliveryError(short(f"Could not reach {endpoint}: {reason}")) from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(short(f"{endpoint} answered HTTP {response.status_code}"))


def short(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"

"""Request limits in the app (`RequestLimits`): a head over the limits is 431 and a body that
arrives too slowly is 408, each an OperationOutcome, so they hold under any ASGI server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fhir_server.config import Settings
from tests.conftest import app_client
from tests.engines import make_storage
from tests.resources import patient


@pytest.fixture
async def limited(settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind `RequestLimits` with small limits: 10 fields, 2 KB, a 0.2 s body."""
    small = settings.model_copy(
        update={"max_headers": 10, "max_header_bytes": 2048, "body_timeout": 0.2}
    )
    async with app_client(small, make_storage("sqlite", tmp_path)) as http:
        yield http  # create_app installs RequestLimits with the small settings


def _assert_outcome(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


async def test_more_header_fields_than_the_limit_get_431(limited: httpx.AsyncClient) -> None:
    headers = {f"X-Field-{i}": "a" for i in range(10)}
    _assert_outcome(await limited.get("/metadata", headers=headers), 431, "too-long")


async def test_headers_larger_than_the_limit_get_431(limited: httpx.AsyncClient) -> None:
    response = await limited.get("/metadata", headers={"X-Big": "a" * 2048})
    _assert_outcome(response, 431, "too-long")


async def test_a_long_request_line_counts_towards_the_limit(limited: httpx.AsyncClient) -> None:
    response = await limited.get("/Patient", params={"name": "a" * 2048})
    _assert_outcome(response, 431, "too-long")


async def test_a_head_within_the_limits_is_served(limited: httpx.AsyncClient) -> None:
    assert (await limited.get("/Patient", headers={"X-Small": "a" * 100})).status_code == 200


async def test_a_body_slower_than_the_body_timeout_gets_408(limited: httpx.AsyncClient) -> None:
    async def drip() -> AsyncIterator[bytes]:
        yield b'{"resourceType":'
        await asyncio.sleep(30)  # cancelled at the server's deadline
        yield b'"Patient"}'

    headers = {"Content-Type": "application/fhir+json"}
    response = await limited.post("/Patient", content=drip(), headers=headers)
    _assert_outcome(response, 408, "timeout")
    assert response.headers["connection"] == "close"


async def test_a_body_in_time_is_read(limited: httpx.AsyncClient) -> None:
    assert (await limited.post("/Patient", json=patient())).status_code == 201

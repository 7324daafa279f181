"""Memory stays flat: 40 large, distinct narratives through `$validate` leave nothing behind.

Why: the XHTML checks (txt-1, txt-2) once cached parsed trees keyed on the whole div, so every
5 MB narrative stayed in memory for good (150 MB grew to 1.2 GB). Measured in-process on the
ASGI app: resident memory from /proc (psutil is not installed) and, as a second witness that
no Python object keeps them, the interpreter's count of allocated blocks (a kept tree of one
such narrative is ~100,000 of them). tracemalloc would say the same but makes the run 5x slower.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import sys
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path

import httpx
import pytest

from fhir_server.api.app import create_app
from fhir_server.config import Settings
from fhir_server.storage.sqlite import SqliteStorage
from tests.resources import patient

NARRATIVE_BYTES = 5 * 1024 * 1024
ROUNDS = 40


@cache
def paragraphs() -> str:
    """About 5 MB of paragraphs whose text varies, built once (the test should time the server)."""
    line = "Besök {0} på vårdcentralen: samtal om läkemedel, sömn och stöd i vardagen. " * 3
    count = NARRATIVE_BYTES // len(line)
    return "".join(f"<p>{line.format(i)}</p>" for i in range(count))


def narrative(seed: int) -> str:
    """A valid XHTML div of about 5 MB, different for every seed."""
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><p>Anteckning {seed}</p>{paragraphs()}</div>'


def with_narrative(seed: int) -> dict:
    resource = patient()
    resource["text"] = {"status": "generated", "div": narrative(seed)}
    return resource


def resident_bytes() -> int:
    """Resident set size of this process (Linux /proc; field 2 of statm, in pages)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def settle() -> None:
    """Collect garbage, then have glibc hand its free pages back to the OS. malloc_trim frees
    only memory nothing holds, so it cannot hide a leak; it removes the allocator's slack
    (its raised mmap threshold puts 5 MB strings on the heap), which would make RSS noisy."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@pytest.fixture
async def sqlite_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(sqlite_path=tmp_path / "fhir.sqlite3")
    app = create_app(settings, SqliteStorage(tmp_path / "fhir.sqlite3"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver/fhir"
        ) as http:
            yield http


async def validate(client: httpx.AsyncClient, seed: int) -> None:
    response = await client.post(
        "/Patient/$validate",
        content=json.dumps(with_narrative(seed)),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text[:500]
    assert not [i for i in response.json()["issue"] if i["severity"] in ("error", "fatal")]


async def test_large_narratives_leave_memory_flat(sqlite_client: httpx.AsyncClient) -> None:
    for seed in range(2):  # warm up: definitions, validators, first-use tables
        await validate(sqlite_client, -1 - seed)
    settle()
    before_rss, before_blocks = resident_bytes(), sys.getallocatedblocks()
    for seed in range(ROUNDS):
        await validate(sqlite_client, seed)
    settle()
    after_rss, after_blocks = resident_bytes(), sys.getallocatedblocks()
    mib = 1024 * 1024
    print(
        f"RSS {before_rss / mib:.0f} -> {after_rss / mib:.0f} MiB, "
        f"blocks {before_blocks} -> {after_blocks}"
    )
    assert after_blocks - before_blocks < 10_000  # no parsed tree is kept
    assert after_rss <= before_rss * 1.2

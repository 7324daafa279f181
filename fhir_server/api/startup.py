"""Start-up work that runs once per database, however many processes serve it.

Why: `serve --workers N` starts N processes on one database, and several machines may share
one MongoDB. Bringing the search index up to date and publishing the conformance resources
write to the database; every process doing it at once would race, and a re-index would run
N times. `serve` runs it in the parent before the workers start (they skip it), and each run
holds the `start-up` lease, so a second machine starting at the same moment waits, then finds
nothing left to do (both steps compare before they write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fhir_server.interactions.conformance import publish_conformance
from fhir_server.interactions.reindex import reindex_if_needed
from fhir_server.storage.port import Storage, lease_owner
from fhir_server.subscriptions.websocket import token_key
from fhir_server.validation.conformance import Conformance
from fhir_server.validation.invariants import report_unsupported

log = logging.getLogger(__name__)

LEASE = "start-up"
LEASE_SECONDS = 30.0  # renewed while the work runs, so a long re-index keeps it
WAIT = 0.2  # seconds between tries while another process holds the lease


async def prepare(storage: Storage, conformance: Conformance) -> None:
    """Re-index if the search parameters changed, publish `profiles/`, and make the
    websocket token key: on an open storage, under the `start-up` lease."""
    async with holding(storage, LEASE):
        report_unsupported()
        await reindex_if_needed(storage)
        await publish_conformance(storage, conformance)
        await token_key(storage)
    log.info("start-up work done in process %d", os.getpid())


@asynccontextmanager
async def holding(
    storage: Storage, name: str, seconds: float = LEASE_SECONDS
) -> AsyncIterator[None]:
    """Hold the lease `name` for the block: wait while another process holds it, renew it
    while the block runs, release it at the end."""
    owner = lease_owner()
    while not await storage.outbox.take_lease(name, owner, seconds):
        await asyncio.sleep(WAIT)
    renewing = asyncio.create_task(_renew(storage, name, owner, seconds))
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        await storage.outbox.release_lease(name, owner)


async def _renew(storage: Storage, name: str, owner: str, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds / 3)
        if not await storage.outbox.take_lease(name, owner, seconds):
            log.warning("lease %r lost while its work was running", name)

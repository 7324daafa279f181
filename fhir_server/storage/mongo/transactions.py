"""Multi-document transactions on PyMongo's async API, with bounded retries.

Why not `AsyncClientSession.with_transaction`: it retries for up to 120 s, a limit it does not
let us change, and a FHIR request must fail long before that.  The rules are the same as the
driver's (the MongoDB transactions specification), bounded by attempts and by a deadline:

* the callback or the commit raises an error labelled `TransientTransactionError` (a write
  conflict with another transaction, a primary stepping down, a lost connection before the
  commit): abort and run the whole transaction again, after a short jittered back-off;
* the commit raises `UnknownTransactionCommitResult` (the commit may or may not have been
  applied): run `commitTransaction` again, which is idempotent on the server, without running
  the callback again; not when the error is MaxTimeMSExpired (the server gave up: retrying
  the commit would only wait again), as the driver does;
* anything else (a duplicate key, a validation error) aborts and propagates at once.

The session is `async with client.start_session()` (PyMongo async: `start_session()` is not
awaited, unlike Motor's), and each attempt `await session.start_transaction()`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSACTION_ATTEMPTS = 5  # runs of the callback
COMMIT_ATTEMPTS = 3  # commitTransaction commands per run
TRANSACTION_DEADLINE = 10.0  # seconds, over all attempts
BACKOFF_BASE = 0.005
BACKOFF_CAP = 0.25
_MAX_TIME_MS_EXPIRED = 50

TRANSIENT = "TransientTransactionError"
UNKNOWN_COMMIT = "UnknownTransactionCommitResult"


def _labelled(exc: BaseException, label: str) -> bool:
    return isinstance(exc, PyMongoError) and exc.has_error_label(label)


def _unknown_commit(exc: BaseException) -> bool:
    code = getattr(exc, "code", None)
    return _labelled(exc, UNKNOWN_COMMIT) and code != _MAX_TIME_MS_EXPIRED


async def run_in_transaction(
    client: Any,
    fn: Callable[[Any], Awaitable[T]],
    *,
    attempts: int = TRANSACTION_ATTEMPTS,
    commit_attempts: int = COMMIT_ATTEMPTS,
    deadline: float = TRANSACTION_DEADLINE,
) -> T:
    """`fn(session)` in one transaction on `client` (an `AsyncMongoClient`), committed once.

    `fn` may run several times (each run in a fresh transaction), so it must only write
    through the session and keep no state of its own between runs.
    """
    end = time.monotonic() + deadline
    async with client.start_session() as session:
        attempt = 0
        while True:
            attempt += 1
            await session.start_transaction()
            try:
                result = await fn(session)
            except BaseException as exc:
                if session.in_transaction:
                    await session.abort_transaction()
                if _labelled(exc, TRANSIENT) and _again(attempt, attempts, end):
                    await _back_off(attempt, exc)
                    continue
                raise
            if await _commit(session, commit_attempts, end, _again(attempt, attempts, end)):
                return result
            await _back_off(attempt, None)


async def _commit(session: Any, commit_attempts: int, end: float, rerun: bool) -> bool:
    """True once committed; False when the whole transaction must run again (only when
    `rerun` allows it: otherwise the transient error propagates)."""
    tries = 0
    while True:
        tries += 1
        try:
            await session.commit_transaction()
            return True
        except PyMongoError as exc:
            if _unknown_commit(exc) and tries < commit_attempts and time.monotonic() < end:
                log.info("commit result unknown (%s); committing again", exc)
                continue
            if _labelled(exc, TRANSIENT) and rerun:
                return False
            raise


def _again(attempt: int, attempts: int, end: float) -> bool:
    return attempt < attempts and time.monotonic() < end


async def _back_off(attempt: int, exc: BaseException | None) -> None:
    """Jittered, growing pause: two transactions that conflicted should not collide again."""
    log.info("transient transaction error (%s); attempt %d again", exc, attempt + 1)
    await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))

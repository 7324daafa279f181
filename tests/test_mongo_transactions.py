"""The retry rules of `storage.mongo.transactions` on a scripted session.

mongomock has no transactions, so the rules are checked against a session that fails on
cue the way PyMongo's does (errors with the labels the server and driver attach).  What a
real replica set does with them runs when FHIR_TEST_MONGODB_URI names one.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from fhir_server.storage.mongo import transactions
from fhir_server.storage.mongo.transactions import run_in_transaction


def _labelled(label: str, code: int = 112) -> OperationFailure:
    return OperationFailure("scripted", code, {"errorLabels": [label], "code": code})


class ScriptedSession:
    def __init__(self, client: ScriptedClient) -> None:
        self.client = client
        self.in_transaction = False

    async def __aenter__(self) -> ScriptedSession:
        self.client.log.append("session")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.log.append("end")

    async def start_transaction(self) -> None:
        assert not self.in_transaction
        self.in_transaction = True
        self.client.log.append("start")

    async def abort_transaction(self) -> None:
        self.in_transaction = False
        self.client.log.append("abort")

    async def commit_transaction(self) -> None:
        """As PyMongo's: the transaction counts as ended (committed) even when the commit
        raised; committing again is allowed."""
        self.client.log.append("commit")
        self.in_transaction = False
        failure = self.client.commit_failures.pop(0) if self.client.commit_failures else None
        if failure is not None:
            raise failure


class ScriptedClient:
    def __init__(self, commit_failures: list[PyMongoError | None] | None = None) -> None:
        self.commit_failures = list(commit_failures or [])
        self.log: list[str] = []

    def start_session(self) -> ScriptedSession:  # not a coroutine, as in PyMongo async
        return ScriptedSession(self)


@pytest.fixture(autouse=True)
def no_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "BACKOFF_CAP", 0.0)


def _callback(client: ScriptedClient, failures: list[BaseException | None]) -> Any:
    async def fn(session: ScriptedSession) -> str:
        assert session.in_transaction
        client.log.append("write")
        failure = failures.pop(0) if failures else None
        if failure is not None:
            raise failure
        return "done"

    return fn


async def test_commits_once() -> None:
    client = ScriptedClient()
    assert await run_in_transaction(client, _callback(client, [])) == "done"
    assert client.log == ["session", "start", "write", "commit", "end"]


async def test_transient_error_in_the_callback_runs_the_whole_transaction_again() -> None:
    client = ScriptedClient()
    fn = _callback(client, [_labelled(transactions.TRANSIENT)])
    assert await run_in_transaction(client, fn) == "done"
    assert client.log == [
        "session",
        *["start", "write", "abort"],
        *["start", "write", "commit"],
        "end",
    ]


async def test_transient_error_at_commit_runs_the_whole_transaction_again() -> None:
    client = ScriptedClient([_labelled(transactions.TRANSIENT)])
    assert await run_in_transaction(client, _callback(client, [])) == "done"
    assert client.log == ["session", "start", "write", "commit", "start", "write", "commit", "end"]


async def test_unknown_commit_result_commits_again_without_running_the_callback() -> None:
    unknown = _labelled(transactions.UNKNOWN_COMMIT, code=91)
    client = ScriptedClient([unknown, unknown])
    assert await run_in_transaction(client, _callback(client, [])) == "done"
    assert client.log == ["session", "start", "write", "commit", "commit", "commit", "end"]


async def test_retries_are_bounded() -> None:
    unknown = _labelled(transactions.UNKNOWN_COMMIT, code=91)
    client = ScriptedClient([unknown] * 10)
    with pytest.raises(OperationFailure):
        await run_in_transaction(client, _callback(client, []), commit_attempts=3)
    assert client.log.count("commit") == 3

    transient = [_labelled(transactions.TRANSIENT) for _ in range(10)]
    client = ScriptedClient()
    with pytest.raises(OperationFailure):
        await run_in_transaction(client, _callback(client, list(transient)), attempts=4)
    assert client.log.count("write") == 4 and client.log[-1] == "end"


async def test_max_time_expired_commit_is_not_retried() -> None:
    expired = _labelled(transactions.UNKNOWN_COMMIT, code=50)
    client = ScriptedClient([expired])
    with pytest.raises(OperationFailure):
        await run_in_transaction(client, _callback(client, []))
    assert client.log.count("commit") == 1


async def test_other_errors_abort_and_propagate_at_once() -> None:
    client = ScriptedClient()
    duplicate = DuplicateKeyError("E11000", 11000, {"keyValue": {"_id": "Patient/p/1"}})
    with pytest.raises(DuplicateKeyError):
        await run_in_transaction(client, _callback(client, [duplicate]))
    assert client.log == ["session", "start", "write", "abort", "end"]

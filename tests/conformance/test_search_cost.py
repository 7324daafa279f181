"""Every search's cost is bounded: in size before it runs, in time while it runs.

Size: a search expands to at most `MAX_TERMS` leaf terms (alternatives, repeated parameters,
chains without a type, `_has`); more is 400 too-costly naming the parameter that went over,
and anything up to the limit compiles on both engines.  Time: a search past
`search_timeout` and a transaction holding the SQLite write lock past `transaction_timeout`
are stopped with 400 too-costly.  Reads have their own SQLite connection, so slow searches
never queue a read behind them, and large query trees compile off the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.errors import ExecutionTimeout

from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.search import parser
from fhir_server.search.parser import MAX_TERMS, parse_search
from fhir_server.search.query import AnyOf, SearchQuery
from fhir_server.storage.mongo import engine as mongo_engine
from fhir_server.storage.port import AccessFilter, Storage, UnitOfWork
from fhir_server.storage.sqlite import SqliteStorage
from fhir_server.storage.sqlite import engine as sqlite_engine
from fhir_server.storage.sqlite.connections import in_thread
from fhir_server.storage.sqlite.engine import _fetch
from tests.conftest import app_client
from tests.engines import make_storage

ALL = AccessFilter()
SLOW_ROWS = 200  # patients that make the slow search below take a second, not milliseconds


def _slow_search() -> list[tuple[str, str]]:
    """Within the size limit, but every patient is probed against every term before the
    last one fails."""
    return [*[("name:contains", "a")] * (MAX_TERMS - 2), ("name:contains", "zzz")]


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Anna"]}]}


def _outcome(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-costly", issue
    return issue


async def _load(client: httpx.AsyncClient, count: int) -> None:
    entries = [
        {"resource": _patient(f"Berg{i}"), "request": {"method": "POST", "url": "Patient"}}
        for i in range(count)
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text


# -- size: counted and capped before anything runs ----------------------------------------


async def test_987_alternatives_of_one_parameter_are_answered(client: httpx.AsyncClient):
    await client.post("/Patient", json=_patient("n500"))
    names = ",".join(f"n{i}" for i in range(987))
    response = await client.get("/Patient", params={"family": names})
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 1


async def test_987_repeated_parameters_are_answered(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json=_patient("Berg"))
    params = [("family", "b"), ("family", "be"), ("family", "ber")] * 329
    response = await client.get("/Patient", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 1
    distinct = [("family", f"n{i}") for i in range(987)]
    assert (await client.get("/Patient", params=distinct)).json()["total"] == 0


@pytest.mark.parametrize(
    "params",
    [
        [("family", ",".join(f"n{i}" for i in range(MAX_TERMS + 1)))],
        [("family", f"n{i}") for i in range(MAX_TERMS + 1)],
        [("gender", "male"), ("family", ",".join(f"n{i}" for i in range(MAX_TERMS)))],
    ],
    ids=["alternatives", "repeated", "sum"],
)
async def test_more_terms_than_the_limit_are_too_costly(
    client: httpx.AsyncClient, params: list[tuple[str, str]]
) -> None:
    issue = _outcome(await client.get("/Patient", params=params))
    assert issue["expression"] == ["family"]


async def test_the_parameter_that_goes_over_the_limit_is_named(client: httpx.AsyncClient):
    half = MAX_TERMS // 2
    params = [
        ("family", ",".join(f"n{i}" for i in range(half))),
        ("given", ",".join(f"g{i}" for i in range(half + 1))),
    ]
    issue = _outcome(await client.get("/Patient", params=params))
    assert issue["expression"] == ["given"]


async def test_a_chain_without_type_fanning_out_is_refused(client: httpx.AsyncClient) -> None:
    """Each untyped `target` fans out to every resource type, and `_has` in between."""
    name = "target._has:Provenance:target:target.identifier"
    issue = _outcome(await client.get("/Provenance", params={name: "x"}))
    assert issue["expression"] == [name]


def test_the_fan_out_is_refused_while_parsing_not_after(monkeypatch: pytest.MonkeyPatch):
    """The expansion stops at the limit: the whole 146 x 100 tree is never built."""
    calls = 0
    original = parser.parse_condition

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(parser, "parse_condition", counting)
    with pytest.raises(FhirError) as refused:
        parse_search("Provenance", [("target._has:Provenance:target:target.identifier", "x")])
    assert refused.value.issues[0].code == "too-costly"
    assert calls < 3 * MAX_TERMS


async def test_a_chain_deeper_than_the_limit_names_the_whole_parameter(
    client: httpx.AsyncClient,
) -> None:
    name = "subject:Patient.link:Patient.link:Patient.link:Patient.link:Patient.name"
    issue = _outcome(await client.get("/Observation", params={name: "x"}))
    assert issue["expression"] == [name]


async def test_too_many_sort_keys_are_too_costly(client: httpx.AsyncClient) -> None:
    issue = _outcome(await client.get("/Patient", params={"_sort": ",".join(["family"] * 9)}))
    assert issue["expression"] == ["_sort"]


async def test_an_empty_value_set_matches_nothing(storage: Storage) -> None:
    """An alternative list with no terms (an expansion without codes) is valid on both."""
    page = await storage.search(SearchQuery("Patient", (AnyOf(()),)), ALL)
    assert page.items == [] and page.total == 0


# -- time: a search, a transaction ---------------------------------------------------------


async def test_a_sqlite_search_past_the_time_limit_is_too_costly(
    tmp_path: Path, settings: Settings
) -> None:
    storage = SqliteStorage(tmp_path / "slow.sqlite3", search_timeout=0.2)
    async with app_client(settings, storage) as client:
        await _load(client, SLOW_ROWS)
        issue = _outcome(await client.get("/Patient", params=_slow_search()))
        assert "longer than 0.2 s" in issue["diagnostics"]
        # The interrupted connection serves the next search as usual.
        found = await client.get("/Patient", params={"family": "berg14"})
        assert found.status_code == 200 and found.json()["total"] == 11


async def test_a_mongo_search_past_its_time_budget_is_too_costly(
    tmp_path: Path, settings: Settings
) -> None:
    storage = make_storage("mongo", tmp_path)
    async with app_client(settings, storage) as client:
        await client.post("/Patient", json=_patient("Berg"))
        storage.search_timeout = 0.0  # type: ignore[attr-defined]
        issue = _outcome(await client.get("/Patient", params={"family": "berg"}))
        assert "longer than 0 s" in issue["diagnostics"]
        _outcome(await client.get("/Patient/_history"))


async def test_mongo_execution_timeout_is_too_costly(tmp_path: Path, settings: Settings) -> None:
    """The server's answer to `maxTimeMS` (mongomock never sends it) is the same 400."""
    storage = make_storage("mongo", tmp_path)
    async with app_client(settings, storage) as client:
        collection = storage.resources_col  # type: ignore[attr-defined]

        async def timed_out(*args: Any, **kwargs: Any) -> int:
            assert kwargs["maxTimeMS"] > 0
            raise ExecutionTimeout("operation exceeded time limit", 50)

        collection.count_documents = timed_out
        _outcome(await client.get("/Patient", params={"family": "berg"}))


async def test_a_transaction_past_its_time_limit_stores_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    storage = SqliteStorage(tmp_path / "tx.sqlite3")
    async with app_client(settings, storage) as client:
        storage.transaction_timeout = 0.0
        entries = [{"resource": _patient("Berg"), "request": {"method": "POST", "url": "Patient"}}]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        issue = _outcome(await client.post("", json=bundle))
        assert "nothing was stored" in issue["diagnostics"]
        _outcome(await client.post("/Patient", json=_patient("Berg")))
        assert (await client.get("/Patient")).json()["total"] == 0


async def test_a_slow_statement_inside_a_transaction_is_stopped_and_rolled_back(
    tmp_path: Path,
) -> None:
    """The writer's progress handler stops a statement that outlives the transaction."""
    storage = SqliteStorage(tmp_path / "tx.sqlite3", transaction_timeout=0.2)
    await storage.open()
    counting = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 1000000000)"
    try:
        with pytest.raises(FhirError) as stopped:
            async with asyncio.timeout(20), storage.unit_of_work() as uow:
                await _stored_in(uow)
                await uow._run(_fetch, counting + " SELECT count(*) FROM n", [])
        assert stopped.value.issues[0].code == "too-costly"
        assert await storage.read("Patient", "a", ALL) is None
    finally:
        await storage.close()


# -- reads never wait for searches ---------------------------------------------------------


async def _stored_in(uow: UnitOfWork) -> None:
    from tests.conformance.test_storage_port import version

    await uow.put(version("Patient", "a", 1, "2026-01-01T00:00:00.000001Z", b'{"v":1}'), [])


async def test_reads_answer_while_every_search_connection_is_busy(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "pool.sqlite3", readers=2)
    await storage.open()
    release = threading.Event()
    try:
        async with storage.unit_of_work() as uow:
            await _stored_in(uow)
        assert storage.pool is not None

        async def hold() -> None:  # a search that runs until the test lets it go
            async with storage.pool.connection() as c:  # type: ignore[union-attr]
                await in_thread(c.db, lambda _: release.wait(30))

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await _until(lambda: storage.pool.idle == 0)  # type: ignore[union-attr]
        queued = asyncio.create_task(storage.search(SearchQuery("Patient"), ALL))
        read = await asyncio.wait_for(storage.read("Patient", "a", ALL), 5)
        vread = await asyncio.wait_for(storage.vread("Patient", "a", 1, ALL), 5)
        assert read is not None and vread is not None
        assert not queued.done()  # searches wait for a connection; reads did not
        release.set()
        assert [v.id for v in (await queued).items] == ["a"]
        await asyncio.gather(*holders)
    finally:
        release.set()
        await storage.close()


async def test_a_read_answers_while_slow_searches_hold_every_search_connection(
    tmp_path: Path, settings: Settings
) -> None:
    storage = SqliteStorage(tmp_path / "pool.sqlite3", readers=2)
    async with app_client(settings, storage) as client:
        await _load(client, SLOW_ROWS)
        created = await client.post("/Patient", json=_patient("Läsbar"))
        location = "/Patient/" + created.json()["id"]
        assert storage.pool is not None
        searches = [
            asyncio.create_task(client.get("/Patient", params=_slow_search())) for _ in range(2)
        ]
        await _until(lambda: storage.pool.idle == 0)  # type: ignore[union-attr]
        read = await client.get(location)
        assert read.status_code == 200
        assert not all(search.done() for search in searches)
        assert [(await search).status_code for search in searches] == [200, 200]


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.001)


# -- compiling large trees off the event loop ----------------------------------------------


async def test_large_queries_compile_off_the_event_loop(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine: Any = sqlite_engine if storage.name == "sqlite" else mongo_engine
    original = engine.compile_where
    threads: list[threading.Thread] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "compile_where", recording)
    query = parse_search("Patient", [("family", ",".join(f"n{i}" for i in range(500)))]).query
    await storage.search(query, ALL)
    assert threads and threading.main_thread() not in threads


async def test_a_long_alternative_list_is_listed_once_not_probed_per_resource(
    tmp_path: Path,
) -> None:
    """A probe per alternative per resource made 500 alternatives over 2,000 patients take
    4 s; listed, each alternative is one index lookup (75 ms)."""
    storage = SqliteStorage(tmp_path / "plan.sqlite3")
    await storage.open()
    try:
        names = ",".join(f"n{i}" for i in range(500))
        plan = await storage.explain(parse_search("Patient", [("family", names)]).query)
    finally:
        await storage.close()
    assert not [line for line in plan if "CORRELATED" in line], plan

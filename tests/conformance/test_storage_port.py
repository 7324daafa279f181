"""The storage port's own contract, run on every engine: what interactions rely on."""

from __future__ import annotations

import pytest

from fhir_server.search.query import AnyOf, IdIn, SearchQuery, TokenMatch
from fhir_server.storage.port import (
    AccessFilter,
    HistoryQuery,
    ResourceVersion,
    Storage,
    TokenIndex,
    VersionConflict,
)

ALL = AccessFilter()


def version(type: str, id: str, n: int, at: str, json: bytes | None = b"{}") -> ResourceVersion:
    return ResourceVersion(type, id, n, at, "PUT" if n > 1 else "POST", json)


async def test_put_read_vread(storage: Storage) -> None:
    async with storage.unit_of_work() as uow:
        await uow.put(version("Patient", "a", 1, "2026-01-01T00:00:00.000001Z", b'{"v":1}'), [])
    async with storage.unit_of_work() as uow:
        await uow.put(version("Patient", "a", 2, "2026-01-01T00:00:00.000002Z", b'{"v":2}'), [])
    current = await storage.read("Patient", "a", ALL)
    assert current is not None
    assert (current.version, current.json) == (2, b'{"v":2}')
    first = await storage.vread("Patient", "a", 1, ALL)
    assert first is not None and first.json == b'{"v":1}'
    assert await storage.vread("Patient", "a", 3, ALL) is None
    assert await storage.read("Patient", "b", ALL) is None


async def test_duplicate_version_is_a_conflict(storage: Storage) -> None:
    async with storage.unit_of_work() as uow:
        await uow.put(version("Patient", "a", 1, "2026-01-01T00:00:00.000001Z"), [])
    with pytest.raises(VersionConflict):
        async with storage.unit_of_work() as uow:
            await uow.put(version("Patient", "a", 1, "2026-01-01T00:00:00.000002Z"), [])
    history = await storage.history(HistoryQuery(type="Patient", id="a"), ALL)
    assert history.total == 1


async def test_rollback_leaves_no_trace(storage: Storage) -> None:
    with pytest.raises(RuntimeError):
        async with storage.unit_of_work() as uow:
            await uow.put(
                version("Patient", "a", 1, "2026-01-01T00:00:00.000001Z"),
                [TokenIndex("identifier", "urn:x", "1")],
            )
            raise RuntimeError("a later entry failed")
    assert await storage.read("Patient", "a", ALL) is None
    assert (await storage.history(HistoryQuery(), ALL)).total == 0
    query = SearchQuery("Patient", (TokenMatch("identifier", None, "1"),))
    assert (await storage.search(query, ALL)).items == []


async def test_unit_of_work_sees_its_own_writes(storage: Storage) -> None:
    async with storage.unit_of_work() as uow:
        await uow.put(
            version("Patient", "a", 1, "2026-01-01T00:00:00.000001Z"),
            [TokenIndex("identifier", "urn:x", "1")],
        )
        assert (await uow.current("Patient", "a")) is not None
        query = SearchQuery("Patient", (TokenMatch("identifier", "urn:x", "1"),))
        assert [v.id for v in await uow.find(query, ALL)] == ["a"]


async def test_delete_version_hides_from_search_not_history(storage: Storage) -> None:
    index = [TokenIndex("identifier", "urn:x", "1")]
    async with storage.unit_of_work() as uow:
        await uow.put(version("Patient", "a", 1, "2026-01-01T00:00:00.000001Z"), index)
    async with storage.unit_of_work() as uow:
        await uow.put(version("Patient", "a", 2, "2026-01-01T00:00:00.000002Z", None), [])
    current = await storage.read("Patient", "a", ALL)
    assert current is not None and current.deleted
    query = SearchQuery("Patient", (TokenMatch("identifier", None, "1"),))
    assert (await storage.search(query, ALL)).total == 0
    assert (await storage.history(HistoryQuery(type="Patient"), ALL)).total == 2


async def test_access_filter_hides_types(storage: Storage) -> None:
    async with storage.unit_of_work() as uow:
        await uow.put(version("Patient", "a", 1, "2026-01-01T00:00:00.000001Z"), [])
        await uow.put(version("CarePlan", "c", 1, "2026-01-01T00:00:00.000002Z"), [])
    only_care_plans = AccessFilter(resource_types=frozenset({"CarePlan"}))
    assert await storage.read("Patient", "a", only_care_plans) is None
    assert await storage.vread("Patient", "a", 1, only_care_plans) is None
    assert await storage.read("CarePlan", "c", only_care_plans) is not None
    history = await storage.history(HistoryQuery(), only_care_plans)
    assert [v.type for v in history.items] == ["CarePlan"]
    assert (await storage.history(HistoryQuery(type="Patient"), only_care_plans)).total == 0
    assert (await storage.search(SearchQuery("Patient"), only_care_plans)).items == []


async def test_token_search_semantics(storage: Storage) -> None:
    async with storage.unit_of_work() as uow:
        await uow.put(
            version("Patient", "a", 1, "2026-01-01T00:00:00.000001Z"),
            [TokenIndex("identifier", "urn:x", "1")],
        )
        await uow.put(
            version("Patient", "b", 1, "2026-01-01T00:00:00.000002Z"),
            [TokenIndex("identifier", None, "1")],
        )
        await uow.put(
            version("Patient", "c", 1, "2026-01-01T00:00:00.000003Z"),
            [TokenIndex("identifier", "urn:x", "2")],
        )

    async def ids(*where) -> list[str]:
        page = await storage.search(SearchQuery("Patient", tuple(where)), ALL)
        return [v.id for v in page.items]

    assert await ids(TokenMatch("identifier", None, "1")) == ["a", "b"]
    assert await ids(TokenMatch("identifier", "urn:x", "1")) == ["a"]
    assert await ids(TokenMatch("identifier", "", "1")) == ["b"]
    assert await ids(TokenMatch("identifier", "urn:x", None)) == ["a", "c"]
    either = AnyOf((TokenMatch("identifier", "urn:x", "2"), IdIn(("b",))))
    assert await ids(either) == ["b", "c"]
    assert await ids(either, IdIn(("c",))) == ["c"]


async def test_search_paging_by_id(storage: Storage) -> None:
    async with storage.unit_of_work() as uow:
        for n, id in enumerate(["d", "b", "a", "c", "e"]):
            await uow.put(version("Patient", id, 1, f"2026-01-01T00:00:00.00000{n}Z"), [])
    page = await storage.search(SearchQuery("Patient", count=2), ALL)
    assert [v.id for v in page.items] == ["a", "b"]
    assert page.total == 5 and page.has_more
    page = await storage.search(SearchQuery("Patient", count=2, after="b"), ALL)
    assert [v.id for v in page.items] == ["c", "d"]
    page = await storage.search(SearchQuery("Patient", count=2, after="d"), ALL)
    assert [v.id for v in page.items] == ["e"]
    assert not page.has_more

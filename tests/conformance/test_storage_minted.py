"""Ids a unit of work mints: searches that must refer to them are answered from its own
writes, and every such answer equals what the database answers once committed (both engines;
the answer in memory is `search.overlay`, the committed one the engine's compiled query)."""

from __future__ import annotations

import uuid

import pytest

from fhir_server.search.query import (
    AnyOf,
    CompositeMatch,
    Condition,
    DateMatch,
    IdIn,
    LastUpdated,
    Missing,
    Not,
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    SearchQuery,
    StringMatch,
    TextMatch,
    TokenMatch,
    UriMatch,
)
from fhir_server.storage.port import (
    AccessFilter,
    CompositeIndex,
    DateIndex,
    IndexEntry,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    ResourceVersion,
    Storage,
    StringIndex,
    TextIndex,
    TokenIndex,
    UriIndex,
)

ALL = AccessFilter()
UCUM = "http://unitsofmeasure.org"
DAY = ("2026-03-01T00:00:00.000000Z", "2026-03-01T23:59:59.999999Z")


def version(type: str, id: str, at: str, n: int = 1) -> ResourceVersion:
    return ResourceVersion(type, id, n, at, "POST" if n == 1 else "PUT", b"{}")


def subject(patient: str) -> ReferenceIndex:
    return ReferenceIndex("subject", "Patient", patient, None, None)


def observations(patient: str) -> dict[str, list[IndexEntry]]:
    """Observations of `patient`, one per shape of search value."""
    return {
        "o1": [
            subject(patient),
            TokenIndex("code", "http://loinc.org", "8867-4"),
            TextIndex("code", "heart rate"),
            DateIndex("date", *DAY),
            QuantityIndex("value-quantity", 71.5, 72.5, UCUM, "/min", "/min"),
            CompositeIndex(
                "code-value-quantity",
                (TokenIndex("#", "http://loinc.org", "8867-4"), NumberIndex("#", 71.5, 72.5)),
            ),
        ],
        "o2": [
            subject(patient),
            TokenIndex("code", None, "x"),
            StringIndex("note", "ostersund", "Östersund"),
            UriIndex("instantiates", "http://example.org/fhir/Measure/a"),
            NumberIndex("probability", 0.45, 0.55),
        ],
        "o3": [subject(patient), ReferenceIndex("performer", None, None, None, "https://x/Org/1")],
    }


CONDITIONS: list[tuple[Condition, ...]] = [
    (),
    (TokenMatch("code", "http://loinc.org", "8867-4"),),
    (TokenMatch("code", "", "x"),),
    (TokenMatch("code", None, "x"), TokenMatch("code", "http://loinc.org", None)),
    (TextMatch("code", "heart"),),
    (StringMatch("note", "oster", "start"),),
    (StringMatch("note", "Östersund", "exact"),),
    (StringMatch("note", "ters", "contains"),),
    (DateMatch("date", "eq", *DAY),),
    (DateMatch("date", "gt", *DAY),),
    (DateMatch("date", "lt", "2026-03-02T00:00:00.000000Z", "2026-03-02T23:59:59.999999Z"),),
    (NumberMatch("probability", "ge", 0.4, 0.6),),
    (QuantityMatch("value-quantity", "eq", 71.5, 72.5, None, "/min"),),
    (CompositeMatch("code-value-quantity", (TokenMatch("#", None, "8867-4"),)),),
    (UriMatch("instantiates", "http://example.org/fhir", "below"),),
    (UriMatch("instantiates", "http://example.org/fhir/Measure/a/v2", "above"),),
    (ReferenceMatch("performer", None, None, "https://x/Org/1"),),
    (Missing("code", "token", True),),
    (Missing("date", "date", False),),
    (Not(TokenMatch("code", None, "x")),),
    (AnyOf((TokenMatch("code", None, "x"), IdIn(("o3",)))),),
    (LastUpdated("ge", "2026-01-01T00:00:00.000002Z", "2026-01-01T00:00:00.000002Z"),),
]


@pytest.mark.parametrize("where", CONDITIONS)
async def test_a_minted_subjects_search_equals_the_committed_answer(
    storage: Storage, where: tuple[Condition, ...]
) -> None:
    async with storage.unit_of_work() as uow:
        patient = uow.mint("Patient")
        await uow.put(version("Patient", patient, "2026-01-01T00:00:00.000000Z"), [])
        for n, (id, index) in enumerate(observations(patient).items(), start=1):
            await uow.put(version("Observation", id, f"2026-01-01T00:00:00.00000{n}Z"), index)
        mine = ReferenceMatch("subject", "Patient", patient, None)
        query = SearchQuery("Observation", (mine, *where))
        inside = [v.id for v in await uow.find(query, ALL)]
    committed = [v.id for v in (await storage.search(query, ALL)).items]
    assert inside == committed


async def test_minted_ids_are_new_and_name_nothing_stored(storage: Storage) -> None:
    async with storage.unit_of_work() as uow:
        ids = {uow.mint("Patient") for _ in range(100)}
        assert len(ids) == 100 and all(uuid.UUID(i).version == 4 for i in ids)
        minted = ids.pop()
        assert await uow.current("Patient", minted) is None
        written = version("Patient", minted, "2026-01-01T00:00:00.000000Z")
        await uow.put(written, [])
        assert await uow.current("Patient", minted) == written


async def test_a_search_on_an_id_not_minted_still_reads_the_database(storage: Storage) -> None:
    """Only the unit of work's own ids are answered without the database: a stored
    Observation of another patient, and a later unit of work's search, see what is stored."""
    async with storage.unit_of_work() as uow:
        await uow.put(version("Observation", "old", "2026-01-01T00:00:00.000001Z"), [subject("p")])
    query = SearchQuery("Observation", (ReferenceMatch("subject", "Patient", "p", None),))
    async with storage.unit_of_work() as uow:
        uow.mint("Patient")
        await uow.put(version("Observation", "new", "2026-01-01T00:00:00.000002Z"), [subject("p")])
        assert [v.id for v in await uow.find(query, ALL)] == ["new", "old"]


async def test_a_derived_id_counts_as_minted_only_from_a_minted_source(storage: Storage) -> None:
    """The server's own ids derived from a minted reference (a process of a new stay) name
    nothing stored; derived from a stored one they are read as usual."""
    async with storage.unit_of_work() as uow:
        await uow.put(version("EpisodeOfCare", "of-stored", "2026-01-01T00:00:00.000001Z"), [])
    async with storage.unit_of_work() as uow:
        stay = uow.mint("Encounter")
        derived = uow.derive("EpisodeOfCare", "of-new", f"Encounter/{stay}")
        assert derived == "of-new"
        assert await uow.current("EpisodeOfCare", "of-new") is None
        assert uow.derive("EpisodeOfCare", "of-stored", "Encounter/stored") == "of-stored"
        assert await uow.current("EpisodeOfCare", "of-stored") is not None
        task = SearchQuery("Task", (ReferenceMatch("focus", "EpisodeOfCare", "of-new", None),))
        assert await uow.find(task, ALL) == []

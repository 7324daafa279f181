"""The subscriptions' outbox (`Storage.outbox`, `UnitOfWork.add_event`), run on every engine:
what the dispatcher relies on for numbering without gaps, exactly one dispatcher, retention."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from fhir_server.storage.port import (
    Interaction,
    Progress,
    ResourceVersion,
    Storage,
    TopicEvent,
    VersionConflict,
)

TOPIC = "http://example.org/topic/a"
OTHER_TOPIC = "http://example.org/topic/b"
OLD = "2020-01-01T00:00:00.000000Z"
CUTOFF = "2025-01-01T00:00:00.000000Z"
NEW = "2030-01-01T00:00:00.000000Z"


def event(
    id: str, version: int = 1, at: str = NEW, interaction: Interaction = "create"
) -> TopicEvent:
    return TopicEvent(TOPIC, "Communication", id, version, interaction, at)


def stored(e: TopicEvent) -> TopicEvent:
    """The event as it was appended (before the engine gave it a seq)."""
    return dataclasses.replace(e, seq=0)


async def write(storage: Storage, *events: TopicEvent, id: str | None = None) -> None:
    """One unit of work: a version of a resource plus `events`."""
    async with storage.unit_of_work() as uow:
        rid = id or (events[0].focus_id if events else "x")
        current = await uow.current("Communication", rid)
        n = 1 if current is None else current.version + 1
        version = ResourceVersion("Communication", rid, n, NEW, "POST" if n == 1 else "PUT", b"{}")
        await uow.put(version, [])
        for e in events:
            await uow.add_event(e)


async def events(storage: Storage, *ids: str) -> list[TopicEvent]:
    """Store one event per id, each in its own commit; the stored events."""
    for id in ids:
        await write(storage, event(id))
    return await storage.outbox.events_after(0)


# -- appending at commit ---------------------------------------------------------------------


async def test_events_appear_at_commit_with_increasing_seq(storage: Storage) -> None:
    outbox = storage.outbox
    assert (await outbox.last_seq(), await outbox.events_after(0)) == (0, [])
    first, second = event("a"), event("a", 2, interaction="update")
    async with storage.unit_of_work() as uow:
        await uow.put(ResourceVersion("Communication", "a", 1, NEW, "POST", b"{}"), [])
        await uow.add_event(first)
        await uow.add_event(second)
        assert await outbox.events_after(0) == []  # not before the commit
    found = await outbox.events_after(0)
    assert [stored(e) for e in found] == [first, second]
    assert 0 < found[0].seq < found[1].seq
    await write(storage, event("b"))
    later = await outbox.events_after(found[1].seq)
    assert [e.focus_id for e in later] == ["b"] and later[0].seq > found[1].seq
    assert await outbox.last_seq() == later[0].seq
    assert [e.seq for e in await outbox.events_after(0, limit=2)] == [e.seq for e in found]
    assert await outbox.events_after(later[0].seq) == []


async def test_rolled_back_unit_of_work_leaves_no_event(storage: Storage) -> None:
    with pytest.raises(RuntimeError):
        async with storage.unit_of_work() as uow:
            await uow.put(ResourceVersion("Communication", "a", 1, NEW, "POST", b"{}"), [])
            await uow.add_event(event("a"))
            raise RuntimeError("a later entry failed")
    await write(storage, event("b"))
    with pytest.raises(VersionConflict):  # the version exists: the commit fails, events too
        async with storage.unit_of_work() as uow:
            await uow.put(ResourceVersion("Communication", "b", 1, NEW, "POST", b"{}"), [])
            await uow.add_event(event("b", interaction="update"))
    found = await storage.outbox.events_after(0)
    assert [(e.focus_id, e.interaction) for e in found] == [("b", "create")]
    assert await storage.outbox.last_seq() == found[0].seq


async def test_seq_order_is_commit_order(storage: Storage) -> None:
    """A unit of work that appended first but commits last gets the higher seq (SQLite makes
    the second writer wait; MongoDB numbers at commit)."""
    committed: list[str] = []

    async def slow() -> None:
        async with storage.unit_of_work() as uow:
            await uow.put(ResourceVersion("Communication", "s", 1, NEW, "POST", b"{}"), [])
            await uow.add_event(event("s"))
            for _ in range(50):
                await asyncio.sleep(0)  # let the other writer run
        committed.append("s")

    async def fast() -> None:
        await asyncio.sleep(0)
        await write(storage, event("f"))
        committed.append("f")

    await asyncio.gather(slow(), fast())
    found = await storage.outbox.events_after(0)
    assert [e.focus_id for e in found] == committed


# -- fan-out ---------------------------------------------------------------------------------


async def test_fan_out_numbers_each_subscription_without_gaps(storage: Storage) -> None:
    outbox = storage.outbox
    e1, e2, e3 = await events(storage, "a", "b", "c")
    await outbox.start("s1", TOPIC, 0)
    await outbox.start("s2", TOPIC, 0)
    assert await outbox.cursor() == 0
    pairs = [("s1", e1), ("s2", e1), ("ghost", e2), ("s1", e2), ("s1", e3)]
    await outbox.fan_out(await outbox.cursor(), e3.seq, pairs)
    assert await outbox.cursor() == e3.seq
    s1 = await outbox.notifications("s1", 0)
    assert [(n.subscription, n.number, n.event) for n in s1] == [
        ("s1", 1, e1),
        ("s1", 2, e2),
        ("s1", 3, e3),
    ]
    assert [(n.number, n.event) for n in await outbox.notifications("s2", 0)] == [(1, e1)]
    assert await outbox.notifications("ghost", 0) == []
    assert await outbox.state("ghost") is None  # skipped, not created
    states = {s.subscription: s.number for s in await outbox.states()}
    assert states == {"s1": 3, "s2": 1}
    (e4,) = [e for e in await events(storage, "d") if e.seq > e3.seq]
    await outbox.fan_out(await outbox.cursor(), e4.seq, [("s2", e4)])
    assert [(n.number, n.event) for n in await outbox.notifications("s2", 1)] == [(2, e4)]
    assert (await outbox.state("s2")).number == 2  # type: ignore[union-attr]
    assert (await outbox.state("s1")).number == 3  # type: ignore[union-attr]
    assert await outbox.cursor() == e4.seq


async def test_fan_out_without_notifications_moves_the_cursor(storage: Storage) -> None:
    (e1,) = await events(storage, "a")
    await storage.outbox.fan_out(await storage.outbox.cursor(), e1.seq, [])
    assert await storage.outbox.cursor() == e1.seq
    await storage.outbox.fan_out(await storage.outbox.cursor(), e1.seq, [("nobody", e1)])
    assert await storage.outbox.cursor() == e1.seq
    assert await storage.outbox.states() == []


async def test_a_stale_fan_out_writes_nothing(storage: Storage) -> None:
    """A dispatcher that stalled past its lease fans out from the cursor it read; its
    successor moved the cursor meanwhile, so the late fan-out is refused whole: no event gets
    a second number."""
    outbox = storage.outbox
    await outbox.start("s1", TOPIC, 0)
    e1, e2 = await events(storage, "a", "b")
    assert await outbox.fan_out(0, e2.seq, [("s1", e1), ("s1", e2)]) is True
    assert await outbox.fan_out(0, e2.seq, [("s1", e1), ("s1", e2)]) is False
    assert [n.event for n in await outbox.notifications("s1", 0)] == [e1, e2]
    assert (await outbox.state("s1")).number == 2  # type: ignore[union-attr]
    assert await outbox.cursor() == e2.seq
    e3 = (await events(storage, "c"))[-1]
    assert await outbox.fan_out(e2.seq, e3.seq, [("s1", e3)]) is True
    assert [n.number for n in await outbox.notifications("s1", 0)] == [1, 2, 3]


# -- subscription states ---------------------------------------------------------------------


async def test_start_creates_once(storage: Storage) -> None:
    outbox = storage.outbox
    state = await outbox.start("s1", TOPIC, 7)
    assert dataclasses.astuple(state) == ("s1", TOPIC, 7, 0, 0, 0, None, None, None)
    assert await outbox.state("s1") == state
    await outbox.record(
        [Progress("s1", failures=2, next_attempt=NEW, last_error="boom", last_sent=OLD)]
    )
    again = await outbox.start("s1", OTHER_TOPIC, 99)
    assert dataclasses.astuple(again) == ("s1", TOPIC, 7, 0, 0, 2, NEW, "boom", OLD)
    assert await outbox.states() == [again]


async def test_notifications_ranges(storage: Storage) -> None:
    outbox = storage.outbox
    found = await events(storage, "a", "b", "c", "d", "e")
    await outbox.start("s1", TOPIC, 0)
    await outbox.fan_out(await outbox.cursor(), found[-1].seq, [("s1", e) for e in found])

    async def numbers(since: int, until: int | None = None, limit: int = 100) -> list[int]:
        return [n.number for n in await outbox.notifications("s1", since, until, limit)]

    assert await numbers(0) == [1, 2, 3, 4, 5]
    assert await numbers(2) == [3, 4, 5]
    assert await numbers(1, 3) == [2, 3]
    assert await numbers(0, 1) == [1]
    assert await numbers(3, 3) == []
    assert await numbers(0, limit=2) == [1, 2]
    assert await numbers(2, 5, limit=1) == [3]
    assert await numbers(5) == []
    assert [n.event for n in await outbox.notifications("s1", 3)] == found[3:]


async def test_record_moves_delivered_only_forward(storage: Storage) -> None:
    outbox = storage.outbox
    await outbox.start("s1", TOPIC, 0)
    await outbox.record([Progress("s1", delivered=3)])
    await outbox.record(
        [Progress("s1", delivered=2, failures=1, next_attempt=NEW, last_error="503")]
    )
    state = await outbox.state("s1")
    assert state is not None
    assert (state.delivered, state.failures, state.next_attempt, state.last_error) == (
        3,
        1,
        NEW,
        "503",
    )
    assert state.last_sent is None
    await outbox.record([Progress("s1", last_sent=OLD)])
    state = await outbox.state("s1")
    assert state is not None
    assert (state.delivered, state.failures, state.next_attempt, state.last_error) == (
        3,
        0,
        None,
        None,
    )
    assert state.last_sent == OLD
    await outbox.record([Progress("s1", delivered=5)])
    state = await outbox.state("s1")
    assert state is not None and (state.delivered, state.last_sent) == (5, OLD)
    await outbox.record([Progress("missing", delivered=1)])
    assert await outbox.state("missing") is None


async def test_record_writes_a_batch_in_order(storage: Storage) -> None:
    """A dispatcher round's deliveries in one call: each applied in turn, an untracked
    subscription skipped without holding the others back."""
    outbox = storage.outbox
    await outbox.start("s1", TOPIC, 0)
    await outbox.start("s2", TOPIC, 0)
    await outbox.record(
        [
            Progress("s1", delivered=2, last_sent=OLD),
            Progress("gone", delivered=9),
            Progress("s2", failures=1, next_attempt=NEW, last_error="503"),
            Progress("s1", failures=1, next_attempt=NEW, last_error="timeout", delivered=1),
        ]
    )
    one, two = await outbox.state("s1"), await outbox.state("s2")
    assert one is not None and two is not None
    assert (one.delivered, one.failures, one.last_error, one.last_sent) == (2, 1, "timeout", OLD)
    assert (two.delivered, two.failures, two.next_attempt) == (0, 1, NEW)
    assert await outbox.state("gone") is None
    await outbox.record([])  # nothing to write is no write


async def test_stop_drops_state_and_notifications(storage: Storage) -> None:
    outbox = storage.outbox
    found = await events(storage, "a", "b")
    await outbox.start("s1", TOPIC, 0)
    await outbox.start("s2", TOPIC, 0)
    await outbox.fan_out(
        await outbox.cursor(), found[-1].seq, [(s, e) for e in found for s in ("s1", "s2")]
    )
    await outbox.stop("s1")
    assert await outbox.state("s1") is None
    assert await outbox.notifications("s1", 0) == []
    assert [s.subscription for s in await outbox.states()] == ["s2"]
    assert [n.number for n in await outbox.notifications("s2", 0)] == [1, 2]
    # Started again, it counts from 1: nothing of the old numbering is left.
    await outbox.start("s1", TOPIC, found[-1].seq)
    (late,) = [e for e in await events(storage, "c") if e.seq > found[-1].seq]
    await outbox.fan_out(await outbox.cursor(), late.seq, [("s1", late)])
    assert [(n.number, n.event) for n in await outbox.notifications("s1", 0)] == [(1, late)]


# -- retention -------------------------------------------------------------------------------


async def test_prune_keeps_undelivered_new_and_not_fanned_out(storage: Storage) -> None:
    outbox = storage.outbox
    for id, at in [("a", OLD), ("b", OLD), ("c", OLD), ("d", NEW), ("e", OLD)]:
        await write(storage, event(id, at=at))
    a, b, c, d, _e = await outbox.events_after(0)
    await outbox.start("s1", TOPIC, 0)
    await outbox.start("s2", TOPIC, 0)
    # a: s1 and s2; b: s1 only; c: s2 only; d: s1 (new); e is not fanned out yet.
    await outbox.fan_out(
        await outbox.cursor(), d.seq, [("s1", a), ("s2", a), ("s1", b), ("s2", c), ("s1", d)]
    )
    # s1 delivered a and b (1, 2), not d (3); s2 delivered a (1), not c (2).
    await outbox.record([Progress("s1", delivered=2)])
    await outbox.record([Progress("s2", delivered=1)])
    assert await outbox.prune(CUTOFF) == 2  # a and b: old and delivered everywhere
    assert [x.focus_id for x in await outbox.events_after(0)] == ["c", "d", "e"]
    assert [(n.number, n.event) for n in await outbox.notifications("s1", 0)] == [(3, d)]
    assert [(n.number, n.event) for n in await outbox.notifications("s2", 0)] == [(2, c)]
    assert await outbox.prune(CUTOFF) == 0
    await outbox.record([Progress("s2", delivered=2)])
    assert await outbox.prune(CUTOFF) == 1  # c now; d is too new, e not fanned out
    assert [x.focus_id for x in await outbox.events_after(0)] == ["d", "e"]
    assert await outbox.notifications("s2", 0) == []
    assert (await outbox.state("s2")).number == 2  # type: ignore[union-attr]


async def test_seq_is_never_reused_after_pruning(storage: Storage) -> None:
    outbox = storage.outbox
    for id in ("a", "b"):
        await write(storage, event(id, at=OLD))
    found = await outbox.events_after(0)
    await outbox.fan_out(await outbox.cursor(), found[-1].seq, [])
    assert await outbox.prune(CUTOFF) == 2
    assert await outbox.events_after(0) == []
    assert await outbox.last_seq() == found[-1].seq
    await write(storage, event("c"))
    (c,) = await outbox.events_after(0)
    assert c.seq > found[-1].seq  # else it would hide behind the cursor
    assert await outbox.events_after(await outbox.cursor()) == [c]


# -- leases ----------------------------------------------------------------------------------


async def test_lease_is_exclusive_and_renewable(storage: Storage) -> None:
    outbox = storage.outbox
    assert await outbox.take_lease("subscriptions", "one", 30)
    assert not await outbox.take_lease("subscriptions", "two", 30)
    assert await outbox.take_lease("subscriptions", "one", 30)  # renewal
    assert await outbox.take_lease("other", "two", 30)  # names are independent
    await outbox.release_lease("subscriptions", "two")  # not the holder: no effect
    assert not await outbox.take_lease("subscriptions", "two", 30)
    await outbox.release_lease("subscriptions", "one")
    assert await outbox.take_lease("subscriptions", "two", 30)
    assert not await outbox.take_lease("subscriptions", "one", 30)


async def test_expired_lease_is_taken_over(storage: Storage) -> None:
    outbox = storage.outbox
    assert await outbox.take_lease("subscriptions", "one", 0.05)
    assert not await outbox.take_lease("subscriptions", "two", 0.05)
    await asyncio.sleep(0.08)  # the lease runs out
    assert await outbox.take_lease("subscriptions", "two", 30)
    assert not await outbox.take_lease("subscriptions", "one", 30)


async def test_renewal_extends_the_lease(storage: Storage) -> None:
    outbox = storage.outbox
    assert await outbox.take_lease("subscriptions", "one", 0.05)
    assert await outbox.take_lease("subscriptions", "one", 30)
    await asyncio.sleep(0.08)  # past the first term, within the renewed one
    assert not await outbox.take_lease("subscriptions", "two", 30)

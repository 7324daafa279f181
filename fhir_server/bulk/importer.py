"""`fhir-server import`: load NDJSON and Bundle files into the database, validated and
indexed as the server's writes are, resumable, with a report of what was refused.

How it goes: the files are read once per pass (`passes`: what the SIP gates read loads
first, so the order of files never matters). Each pass cuts its items into batches; worker
processes prepare a batch (parse, person numbers, validation, search values: `prepare`)
while this process stores the previous one in one unit of work (`store`), together with
each file's checkpoint: `bulk-import/<sha256>/pass-<n>` = the last position consumed. So a
killed import, run again, starts after the last committed batch and writes no version
twice; a finished one, run again, finds every checkpoint at the end of its file.

Decided on purpose: an import stores and indexes, and runs the gates, but fires no
subscription topic and runs none of the process's hooks (obligation Tasks, process state,
closures); see `store`. Resources keep their ids; one without an id gets an id derived
from its file's content and position, so it is the same id each time the file is imported.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from fhir_server.config import Settings
from fhir_server.errors import Issue
from fhir_server.interactions.context import Context
from fhir_server.interactions.reindex import reindex_if_needed
from fhir_server.search.registry import use_conformance
from fhir_server.security.principal import ANONYMOUS
from fhir_server.storage.port import Storage, VersionConflict
from fhir_server.storage.sqlite import SqliteStorage
from fhir_server.validation.conformance import load_conformance
from fhir_server.validation.validator import Validator

from . import prepare as preparing
from .passes import PASSES, pass_of, pass_of_line
from .prepare import Prepared, Refused, Work
from .progress import Progress
from .report import Report
from .sources import Item, Source, discover, items
from .store import write_batch

BATCH = 1000
ATTEMPTS = 3  # a batch that lost a race with another writer is stored again
EXIT_OK, EXIT_REFUSED = 0, 3
WRITE_CACHE_MB = 256  # SQLite writer's page cache while importing (benchmarks/README.md)


def checkpoint_key(source: Source, pass_no: int) -> str:
    return f"bulk-import/{source.digest}/pass-{pass_no}"


@dataclass(slots=True)
class Summary:
    files: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: int = 0
    resumed: int = 0  # items committed by an earlier run
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_REFUSED if self.refused else EXIT_OK

    def lines(self, report: Path) -> list[str]:
        stored = self.created + self.updated + self.unchanged
        rate = stored / self.seconds if self.seconds else 0.0
        out = [
            f"imported {self.files} file(s) in {self.seconds:,.1f} s ({rate:,.0f} resources/s): "
            f"{self.created:,} created, {self.updated:,} updated, {self.unchanged:,} unchanged",
        ]
        if self.resumed:
            out.append(f"{self.resumed:,} resources were committed by an earlier run")
        if self.refused:
            out.append(f"{self.refused:,} refused: see {report}")
        return out


@dataclass(slots=True)
class _Batch:
    """Items of one pass on their way to one unit of work, and the checkpoints it moves."""

    works: list[Work] = field(default_factory=list)
    owners: list[tuple[Source, Item]] = field(default_factory=list)  # per work
    refused: list[tuple[Source, Item, list[Issue]]] = field(default_factory=list)
    marks: dict[Source, int] = field(default_factory=dict)


async def run_import(
    paths: list[Path],
    storage: Storage,
    settings: Settings,
    *,
    report: Path,
    workers: int = 0,
    batch_size: int = BATCH,
    progress: bool = True,
    verbose: bool = False,
) -> Summary:
    """Import `paths` into the open `storage`; `workers` processes prepare (0: this one);
    `verbose` prints a line per committed batch."""
    started = time.perf_counter()
    sources = discover(paths)
    await reindex_if_needed(storage)  # stamps the index version, as the server's start does
    if isinstance(storage, SqliteStorage):
        await storage.use_write_cache(WRITE_CACHE_MB)
    ctx = _context(storage, settings, workers)
    checkpoints = await _checkpoints(storage, sources)
    digests = {s.digest: s for s in sources}

    def covered(digest: str, pass_no: int, position: int) -> bool:
        source = digests.get(digest)
        return source is not None and position <= checkpoints.get((source, pass_no), 0)

    summary = Summary(files=len(sources))
    refusals = Report(report, covered)
    bar = Progress(sum(_count(s) for s in sources), enabled=progress)
    pool = _pool(workers, settings)
    try:
        for pass_no in PASSES:
            batches = _batches(sources, pass_no, checkpoints, batch_size, summary, bar)
            await _run_pass(ctx, pool, batches, pass_no, refusals, summary, bar, workers, verbose)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        refusals.close()
        bar.close()
    summary.refused = refusals.count
    summary.seconds = time.perf_counter() - started
    return summary


def _context(storage: Storage, settings: Settings, workers: int) -> Context:
    """The gates' context. With workers, this process validates nothing: it loads the
    conformance resources (search parameters, value sets) without compiling the profiles,
    as the standalone dispatcher does."""
    if workers <= 0:
        prepared = preparing.context_for(settings)
        preparing.use_context(prepared)
        return Context(storage, settings, ANONYMOUS, "", prepared.validator)
    use_conformance(load_conformance(settings.profile_dirs))
    return Context(storage, settings, ANONYMOUS, "", cast(Validator, None))


async def _checkpoints(storage: Storage, sources: list[Source]) -> dict[tuple[Source, int], int]:
    found: dict[tuple[Source, int], int] = {}
    async with storage.unit_of_work() as uow:
        for source in sources:
            for pass_no in PASSES:
                value = await uow.meta(checkpoint_key(source, pass_no))
                if value is not None:
                    found[(source, pass_no)] = int(value)
    return found


def _count(source: Source) -> int:
    return sum(1 for _ in items(source))


def _pool(workers: int, settings: Settings) -> Executor | None:
    if workers <= 0:
        return None
    import multiprocessing

    # spawn, not fork: this process has threads (the SQLite writer's) by now
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=preparing.start_worker, initargs=(settings,)
    )


def _batches(
    sources: list[Source],
    pass_no: int,
    checkpoints: dict[tuple[Source, int], int],
    size: int,
    summary: Summary,
    bar: Progress,
) -> Iterator[_Batch]:
    """The pass's items in batches of `size`; the last batch carries the files' final
    checkpoints even when it has no items."""
    batch = _Batch()
    for source in sources:
        done = checkpoints.get((source, pass_no), 0)
        for item in items(source):
            if _pass(item) != pass_no:
                if item.position > done:
                    batch.marks[source] = item.position
                continue
            if item.position <= done:
                summary.resumed += 1
                bar.update(1)
                continue
            batch.marks[source] = item.position
            if item.failure is not None:
                batch.refused.append((source, item, item.failure.issues))
                continue
            body = item.raw if item.raw is not None else item.resource
            assert body is not None
            batch.works.append((item.position, body, item.minted_id(source)))
            batch.owners.append((source, item))
            if len(batch.works) >= size:
                yield batch
                batch = _Batch()
    yield batch


def _pass(item: Item) -> int:
    if item.raw is not None:
        return pass_of_line(item.raw)
    if item.resource is not None:
        return pass_of(item.resource)
    return PASSES[0]  # a failure is reported in the first pass


async def _run_pass(
    ctx: Context,
    pool: Executor | None,
    batches: Iterator[_Batch],
    pass_no: int,
    report: Report,
    summary: Summary,
    bar: Progress,
    workers: int,
    verbose: bool,
) -> None:
    """Workers prepare the next batches while this process stores the current one."""
    in_flight: deque[tuple[_Batch, Future[list[Prepared | Refused]] | list[Prepared | Refused]]]
    in_flight = deque()
    ahead = workers + 1 if pool is not None else 1  # batches being prepared, and this one
    for batch in batches:
        if pool is None:
            in_flight.append((batch, preparing.prepare_chunk(batch.works)))
        else:
            in_flight.append((batch, pool.submit(preparing.prepare_chunk, batch.works)))
        while len(in_flight) >= ahead:
            await _commit(ctx, *in_flight.popleft(), pass_no, report, summary, bar, verbose)
    while in_flight:
        await _commit(ctx, *in_flight.popleft(), pass_no, report, summary, bar, verbose)


async def _commit(
    ctx: Context,
    batch: _Batch,
    pending: Any,
    pass_no: int,
    report: Report,
    summary: Summary,
    bar: Progress,
    verbose: bool,
) -> None:
    """Store one batch, its refusals and its checkpoints in one unit of work."""
    results: list[Prepared | Refused]
    results = await asyncio.wrap_future(pending) if isinstance(pending, Future) else pending
    for attempt in range(ATTEMPTS):
        try:
            async with ctx.storage.unit_of_work() as uow:
                for source, item, issues in batch.refused:
                    report.add(source, item, pass_no, issues)
                prepared = [r for r in results if isinstance(r, Prepared)]
                owners = [
                    o for o, r in zip(batch.owners, results, strict=True) if isinstance(r, Prepared)
                ]
                for (source, item), result in zip(batch.owners, results, strict=True):
                    if isinstance(result, Refused):
                        report.add(source, item, pass_no, result.issues)
                written = await write_batch(ctx, uow, prepared)
                for at, issues in written.refused:
                    source, item = owners[at]
                    report.add(source, item, pass_no, issues)
                for source, position in batch.marks.items():
                    await uow.set_meta(checkpoint_key(source, pass_no), str(position))
                report.flush()
            report.committed()
            break
        except VersionConflict:  # another writer took a version first: read them again
            report.undo()
            if attempt + 1 == ATTEMPTS:
                raise
        except BaseException:
            report.undo()
            raise
    summary.created += written.created
    summary.updated += written.updated
    summary.unchanged += written.unchanged
    bar.update(len(batch.works) + len(batch.refused), f"pass {pass_no}")
    if verbose and batch.marks:
        marks = ", ".join(f"{s.path.name}:{p}" for s, p in batch.marks.items())
        print(f"import: pass {pass_no} committed up to {marks}", file=sys.stderr, flush=True)

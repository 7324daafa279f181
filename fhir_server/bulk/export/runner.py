"""The export runner: each process looks for unfinished jobs, and runs those it can lease.

Why a lease per job: several server processes may share one database and one export
directory. A job runs where its lease (`storage.outbox.take_lease("export:<id>", …)`) is
held; the holder renews it while it works, and checks it again before every state write, so
a holder that stalled past its lease neither overwrites its successor's state nor keeps
writing. A process that dies stops renewing; when the lease has run out, any process's next
look (at start-up and every `export_poll_interval`) takes the job over and resumes it: the
types already written are kept, the type in progress is exported again from its start
(its partial files removed). The `transactionTime` bound makes the rerun write what the
first run would have. After `MAX_ATTEMPTS` runs (restarts count) a job is marked failed,
never dropped silently.

The same looks sweep: expired jobs, and cancelled ones whose lease is free, are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from fhir_server import fhirjson
from fhir_server.bulk.export.files import NdjsonWriter, write_lines
from fhir_server.bulk.export.jobs import ERRORS, RUNNING, Job, JobStore, OutputFile
from fhir_server.bulk.export.scope import passes
from fhir_server.config import Settings
from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.search.query import SearchQuery
from fhir_server.sip.clock import Clock
from fhir_server.storage.port import AccessFilter, Storage, lease_owner

log = logging.getLogger(__name__)

ALL = AccessFilter()  # the export is the server's own reading (scopes come with security)
MAX_RUNNING = 2  # jobs one process runs at once; the rest wait for a slot or another process
MAX_ATTEMPTS = 5
PROGRESS_EVERY = 1.0  # seconds between progress writes within a type


class Cancelled(Exception):
    """The job was cancelled (DELETE) or removed while it ran."""


class LeaseLost(Exception):
    """Another process holds the job's lease now: this one must stop writing."""


def lease_name(id: str) -> str:
    return f"export:{id}"


class ExportRunner:
    def __init__(self, storage: Storage, settings: Settings, clock: Clock) -> None:
        self.storage, self.settings, self.clock = storage, settings, clock
        self.store = JobStore(settings.export_dir)
        self.owner = lease_owner()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._saved = 0.0  # monotonic time of the last state write (progress pacing)

    def notify(self) -> None:
        """A job was created or cancelled here: look at once rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Look, run and sweep until cancelled; then stop the jobs (their leases released,
        so another process resumes them without waiting for the lease to run out)."""
        try:
            while True:
                try:
                    await self.look()
                except Exception:
                    log.exception("export runner: a look at the jobs failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.export_poll_interval)
                self._wake.clear()
        finally:
            tasks = list(self._running.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def look(self) -> None:
        for id in await asyncio.to_thread(self.store.ids):
            if id not in self._running:
                await self._look_at(id)

    async def _look_at(self, id: str) -> None:
        store = self.store
        job = await asyncio.to_thread(store.load, id)
        if job is None or await asyncio.to_thread(store.cancelled, id):
            if job is None and await asyncio.to_thread(store.age, id) < 60:
                return  # a kick-off between making the directory and writing the state
            if await self._take(id):  # nobody is writing it
                await asyncio.to_thread(store.remove, id)
                await self._release(id)
            return
        if job.status not in RUNNING:
            if job.expired(self.clock.now()):
                await asyncio.to_thread(store.remove, id)
            return
        if len(self._running) < MAX_RUNNING and await self._take(id):
            self._running[id] = asyncio.create_task(self._run(id), name=f"export {id}")

    async def _take(self, id: str) -> bool:
        name, seconds = lease_name(id), self.settings.export_lease
        return await self.storage.outbox.take_lease(name, self.owner, seconds)

    async def _release(self, id: str) -> None:
        with contextlib.suppress(Exception):
            await self.storage.outbox.release_lease(lease_name(id), self.owner)

    async def _run(self, id: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(id, task, lost))
        try:
            await self._execute(id)
        except asyncio.CancelledError:
            if not lost.is_set():
                raise  # shutting down: the state stays unfinished, to be resumed
            task.uncancel()
            log.warning("export job %s: lease lost; its new holder resumes it", id)
        except LeaseLost:
            lost.set()
            log.warning("export job %s: lease lost; its new holder resumes it", id)
        except Exception as exc:
            if isinstance(exc, Cancelled) or await asyncio.to_thread(self.store.cancelled, id):
                await asyncio.to_thread(self.store.remove, id)
            else:
                log.exception("export job %s failed", id)
                await self._give_up_or_retry(id, exc)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not lost.is_set():
                await self._release(id)
            self._running.pop(id, None)
            self._wake.set()  # a slot is free

    async def _renew(self, id: str, task: asyncio.Task[None], lost: asyncio.Event) -> None:
        """Renew the lease while the job runs (a search may take a while between writes)."""
        while True:
            await asyncio.sleep(self.settings.export_lease / 3)
            try:
                held = await self._take(id)
            except Exception:
                log.exception("export job %s: the lease could not be renewed", id)
                held = False
            if not held:
                lost.set()
                task.cancel()
                return

    async def _execute(self, id: str) -> None:
        job = await asyncio.to_thread(self.store.load, id)
        if job is None:
            raise Cancelled
        if job.status not in RUNNING:
            return
        job.attempts += 1
        if job.attempts > MAX_ATTEMPTS:
            await self._finish(job, failure=f"Gave up after {MAX_ATTEMPTS} attempts")
            return
        job.status = "in-progress"
        await self._save(job)
        for type in job.types:
            if type in job.done:
                continue
            job.current, job.current_count = type, 0
            await asyncio.to_thread(self.store.clear, id, type)
            try:
                files = await self._export_type(job, type)
            except FhirError as exc:  # e.g. too costly: this type is reported, not written
                await asyncio.to_thread(self.store.clear, id, type)
                message = f"{type} was not exported: {exc}"
                job.errors.append(operation_outcome([Issue("error", "exception", message)]))
                files = []
            job.output += files
            job.done.append(type)
            job.current, job.current_count = None, 0
            if files or self._due():  # an empty type is cheap to redo after a restart
                await self._save(job)
        await self._finish(job)

    def _due(self) -> bool:
        return time.monotonic() - self._saved > PROGRESS_EVERY

    async def _export_type(self, job: Job, type: str) -> list[OutputFile]:
        settings = self.settings
        where_list = passes(
            type,
            transaction_time=job.transaction_time,
            since=job.since,
            patients=job.patients,
            level=job.level,
            type_filters=job.type_filters.get(type, []),
        )
        seen: set[str] | None = set() if len(where_list) > 1 else None  # ORed filters
        writer = NdjsonWriter(self.store.dir(job.id), type, settings.export_file_size)
        try:
            for where in where_list:
                after: str | None = None
                while True:
                    if await asyncio.to_thread(self.store.cancelled, job.id):
                        raise Cancelled
                    query = SearchQuery(
                        type, where, settings.export_batch_size, after, total=False, id_order=True
                    )
                    page = await self.storage.search(query, ALL)
                    lines = []
                    for version in page.items:
                        if version.json is None or (seen is not None and version.id in seen):
                            continue
                        if seen is not None:
                            seen.add(version.id)
                        lines.append(version.json)  # the stored bytes: never re-serialised
                    await writer.write(lines)
                    job.current_count += len(lines)
                    if self._due():
                        await self._save(job)
                    if not page.has_more or not page.items:
                        break
                    after = page.items[-1].id
                    await asyncio.sleep(settings.export_page_delay)
            return await writer.close()
        finally:
            writer.discard()

    async def _save(self, job: Job) -> None:
        """Write the state, if the job is still ours and not cancelled."""
        if await asyncio.to_thread(self.store.cancelled, job.id):
            raise Cancelled
        if not await self._take(job.id):
            raise LeaseLost
        try:
            await asyncio.to_thread(self.store.save, job)
        except FileNotFoundError:
            raise Cancelled from None
        self._saved = time.monotonic()

    async def _finish(self, job: Job, failure: str | None = None) -> None:
        if job.errors and failure is None:
            lines = [fhirjson.dumps(outcome) for outcome in job.errors]
            path = self.store.file(job.id, ERRORS)
            await asyncio.to_thread(write_lines, path, lines)
        now = self.clock.now()
        job.status = "failed" if failure else "completed"
        job.failure = failure
        job.finished = now.isoformat()
        job.expires = (now + timedelta(seconds=self.settings.export_retention)).isoformat()
        await self._save(job)

    async def _give_up_or_retry(self, id: str, exc: Exception) -> None:
        """A defect or an unreachable database: the next look resumes the job (the attempt
        counted); after MAX_ATTEMPTS it is failed with the reason."""
        job = await asyncio.to_thread(self.store.load, id)
        if job is None or job.attempts < MAX_ATTEMPTS:
            return
        with contextlib.suppress(Cancelled, LeaseLost):
            await self._finish(job, failure=f"Export failed: {type(exc).__name__}")

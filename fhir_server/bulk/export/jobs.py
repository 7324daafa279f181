"""An `$export` job's state, kept as `job.json` beside its NDJSON files.

Why files and not the database: the state lives with the output it describes, so deleting a
job is deleting one directory, and the storage engines need nothing new. Several processes
may share the export directory (and the database): the job lease (`runner.py`) says which one
writes a job, every write of `job.json` is a temp file renamed over the old one (a reader sees
the old state or the new, never half), and a cancellation is a marker file of its own that
only a removal takes away, so no state write can undo it.

Blocking file work: every method here is synchronous; async callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson

log = logging.getLogger(__name__)

Status = Literal["accepted", "in-progress", "completed", "failed"]
RUNNING: frozenset[str] = frozenset({"accepted", "in-progress"})
JOB_ID = re.compile(r"[0-9a-f]{32}")
FILE_NAME = re.compile(r"[A-Za-z]{1,64}-[0-9]{1,9}\.ndjson|errors\.ndjson")
STATE = "job.json"
CANCELLED = "cancelled"
ERRORS = "errors.ndjson"


@dataclass(slots=True)
class OutputFile:
    type: str
    file: str
    count: int


@dataclass(slots=True)
class Job:
    """One export: what was asked (fixed at kick-off) and how far it got."""

    id: str
    request: str  # the kick-off URL, for the manifest
    level: str
    types: list[str]
    transaction_time: str  # UTC instant: nothing last updated after it is exported
    created: str  # process clock (ISO with offset)
    since: str | None = None
    type_filters: dict[str, list[str]] = field(default_factory=dict)
    output_format: str = "application/fhir+ndjson"
    patients: list[str] | None = None  # None: every Patient (system or Patient level)
    status: Status = "accepted"
    done: list[str] = field(default_factory=list)  # types whose files are complete
    output: list[OutputFile] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # OperationOutcomes
    current: str | None = None
    current_count: int = 0  # resources written of `current` so far (progress only)
    attempts: int = 0  # runs started: more than one means it was resumed
    failure: str | None = None
    finished: str | None = None  # process clock
    expires: str | None = None  # process clock: finished + retention

    @property
    def written(self) -> int:
        return sum(f.count for f in self.output)

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and datetime.fromisoformat(self.expires) <= now

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> Job:
        raw = orjson.loads(data)
        raw["output"] = [OutputFile(**f) for f in raw.get("output", [])]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """The export directory: one subdirectory per job id."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def dir(self, id: str) -> Path:
        if not JOB_ID.fullmatch(id):  # ids reach file names: never a path of the client's
            raise ValueError(f"not a job id: {id!r}")
        return self.root / id

    def ids(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(p.name for p in self.root.iterdir() if JOB_ID.fullmatch(p.name))
        return []

    def create(self, job: Job) -> None:
        self.dir(job.id).mkdir(parents=True, exist_ok=False)
        self.save(job)

    def save(self, job: Job) -> None:
        """Write the state atomically; FileNotFoundError when the job was removed."""
        write_atomically(self.dir(job.id) / STATE, job.to_json())

    def load(self, id: str) -> Job | None:
        try:
            return Job.from_json((self.dir(id) / STATE).read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, orjson.JSONDecodeError):
            log.warning("export job %s: unreadable state, ignored", id)
            return None

    def cancel(self, id: str) -> None:
        write_atomically(self.dir(id) / CANCELLED, b"")

    def cancelled(self, id: str) -> bool:
        """Cancelled, or removed under the job's feet (which is how a cancellation ends)."""
        folder = self.dir(id)
        return (folder / CANCELLED).exists() or not folder.exists()

    def remove(self, id: str) -> None:
        """Renamed away first (atomic), then deleted: a state write racing the removal fails
        with FileNotFoundError instead of landing in a half-deleted folder."""
        folder = self.dir(id)
        trash = folder.with_name(f".{folder.name}.removed-{secrets.token_hex(4)}")
        try:
            folder.rename(trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def file(self, id: str, name: str) -> Path:
        if not FILE_NAME.fullmatch(name):
            raise ValueError(f"not an export file name: {name!r}")
        return self.dir(id) / name

    def clear(self, id: str, type: str) -> None:
        """Remove the files (and partial files) of `type`: it is exported again from the start."""
        for path in self.dir(id).glob(f"{type}-*"):
            path.unlink(missing_ok=True)

    def age(self, id: str) -> float:
        """Seconds since the job's directory last changed (for directories without a state)."""
        try:
            return time.time() - self.dir(id).stat().st_mtime
        except FileNotFoundError:
            return 0.0


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename: readers see the old bytes or the new ones, never a mix."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)

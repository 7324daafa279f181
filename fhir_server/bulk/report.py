"""The report of refused items: NDJSON, one object per refusal:
`{"file", "line" (or "entry" for a Bundle entry), "pass", "sha256", "outcome"}`, the
outcome being the OperationOutcome the server would have answered.

Why it is written before the batch commits, and rewritten at start: a batch's refusals are
on disk before its checkpoint, so a crash never loses one; and a resumed import keeps only
the refusals its checkpoints cover (the rest it meets again), so each refusal is reported
once however often the import was interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.interactions.bundle_entries import at_entry

from .sources import Item, Source

Covered = Callable[[str, int, int], bool]  # (sha256, pass, position) -> committed already


class Report:
    def __init__(self, path: Path, covered: Covered) -> None:
        self.path = path
        self.count = 0
        kept = list(_previous(path, covered))
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as f:
            for line in kept:
                f.write(line)
        os.replace(temporary, path)
        self.count = len(kept)
        self._file: IO[bytes] = path.open("ab")
        self._mark = self._file.tell()
        self._pending = 0

    def add(self, source: Source, item: Item, pass_no: int, issues: list[Issue]) -> None:
        """A refusal; the issues of a Bundle entry's resource are placed in the entry
        (`Patient.birthDate` -> `Bundle.entry[1].resource.birthDate`)."""
        record: dict[str, Any] = {"file": source.name}
        if item.entry is not None:
            record["entry"] = item.entry
            issues = at_entry(item.entry, FhirError(400, issues)).issues
        else:
            record["line"] = item.position
        record |= {"position": item.position, "pass": pass_no, "sha256": source.digest}
        record["outcome"] = operation_outcome(issues)
        self._file.write(orjson.dumps(record) + b"\n")
        self.count += 1
        self._pending += 1

    def flush(self) -> None:
        """To disk, before the batch they belong to commits."""
        if self._pending:
            self._file.flush()
            os.fsync(self._file.fileno())

    def committed(self) -> None:
        self._mark, self._pending = self._file.tell(), 0

    def undo(self) -> None:
        """Forget what was added since the last commit (the batch rolled back)."""
        self._file.flush()
        self._file.truncate(self._mark)
        self._file.seek(self._mark)
        self.count, self._pending = self.count - self._pending, 0

    def close(self) -> None:
        self._file.close()


def _previous(path: Path, covered: Covered) -> list[bytes]:
    if not path.exists():
        return []
    kept = []
    for line in path.read_bytes().splitlines():
        try:
            record = orjson.loads(line)
            if covered(record["sha256"], record["pass"], record["position"]):
                kept.append(line + b"\n")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a crash: the item is met again
    return kept


def read_report(path: Path) -> list[dict[str, Any]]:
    """The report's records (for the summary and for tests)."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]

"""NDJSON output files: written in a worker thread, a page at a time, and read back in chunks.

Why a thread: a page of stored JSON is a few megabytes at most, but a disk write (and the
fsync that makes a finished file durable) can take long enough to stall every request on
the event loop. A file is written under a temporary name and renamed when complete, so the name a
manifest lists always holds the whole file.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from fhir_server.bulk.export.jobs import OutputFile

CHUNK = 64 * 1024


class NdjsonWriter:
    """The files of one type: `Type-1.ndjson`, `Type-2.ndjson`, … of at most `per_file` lines."""

    def __init__(self, folder: Path, type: str, per_file: int) -> None:
        self.folder, self.type, self.per_file = folder, type, per_file
        self.files: list[OutputFile] = []
        self._out: BinaryIO | None = None
        self._count = 0
        # A writer of its own: a stalled former lease holder never writes into our file.
        self._part = f".{uuid.uuid4().hex[:8]}.part"

    async def write(self, lines: list[bytes]) -> None:
        if lines:
            await asyncio.to_thread(self._write, lines)

    async def close(self) -> list[OutputFile]:
        """Finish the last file; the type's files (none when it had no resources)."""
        await asyncio.to_thread(self._finish)
        return self.files

    def discard(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def _write(self, lines: list[bytes]) -> None:
        while lines:
            if self._out is None:
                name = f"{self.type}-{len(self.files) + 1}.ndjson"
                self._out = open(self.folder / (name + self._part), "wb")  # noqa: SIM115
                self._count = 0
            room = self.per_file - self._count
            chunk, lines = lines[:room], lines[room:]
            self._out.write(b"\n".join(chunk) + b"\n")
            self._count += len(chunk)
            if self._count >= self.per_file:
                self._finish()

    def _finish(self) -> None:
        if self._out is None:
            return
        out, self._out = self._out, None
        out.flush()
        os.fsync(out.fileno())
        out.close()
        name = f"{self.type}-{len(self.files) + 1}.ndjson"
        os.replace(self.folder / (name + self._part), self.folder / name)
        self.files.append(OutputFile(self.type, name, self._count))


def write_lines(path: Path, lines: list[bytes]) -> None:
    """A whole small file (the error file) at once, durable before it is listed."""
    with open(path, "wb") as out:
        out.write(b"".join(line + b"\n" for line in lines))
        out.flush()
        os.fsync(out.fileno())


async def read_chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    """An open file's bytes, chunk by chunk, read in a thread; closed at the end.

    The handler opens the file before answering, so a job removed meanwhile (expiry, a
    DELETE) still serves the whole file it began: the open descriptor keeps it readable."""
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        handle.close()

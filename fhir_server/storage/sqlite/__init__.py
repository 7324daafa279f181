"""The embedded engine: one SQLite file, WAL mode, synchronous=FULL."""

from fhir_server.storage.sqlite.engine import SqliteStorage

__all__ = ["SqliteStorage"]

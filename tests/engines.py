"""The storage engines the tests run on, and which of them ran.

A module of its own, not in conftest.py: pytest loads conftest as `conftest` while tests
import it as `tests.conftest`, and two copies would keep two records of the engines that ran.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from fhir_server.storage.port import Storage

MONGODB_URI = os.environ.get("FHIR_TEST_MONGODB_URI")
ENGINES_RAN: set[str] = set()


def make_storage(engine: str, tmp_path: Path) -> Storage:
    if engine == "sqlite":
        from fhir_server.storage.sqlite import SqliteStorage

        ENGINES_RAN.add("sqlite")
        return SqliteStorage(tmp_path / "fhir.sqlite3")
    from fhir_server.storage.mongo import MongoStorage

    database = f"fhir_test_{uuid.uuid4().hex[:12]}"
    if MONGODB_URI:
        ENGINES_RAN.add(f"mongo (real server at {MONGODB_URI.split('@')[-1]})")
        return MongoStorage(MONGODB_URI, database)  # the real AsyncMongoClient
    from tests.mongo_double import MongoDouble

    ENGINES_RAN.add("mongo (mongomock double, PyMongo-async surface)")
    return MongoStorage.from_client(MongoDouble(), database)

"""Pick the engine from settings: MongoDB when `MONGODB_URI` is set, else embedded SQLite."""

from __future__ import annotations

from fhir_server.config import Settings
from fhir_server.storage.port import Storage


def create_storage(settings: Settings) -> Storage:
    if settings.mongodb_uri:
        from fhir_server.storage.mongo import MongoStorage

        return MongoStorage(
            settings.mongodb_uri,
            settings.mongodb_database,
            search_timeout=settings.search_timeout,
        )
    from fhir_server.storage.sqlite import SqliteStorage

    return SqliteStorage(
        settings.sqlite_path,
        readers=settings.sqlite_readers,
        search_timeout=settings.search_timeout,
        transaction_timeout=settings.transaction_timeout,
    )

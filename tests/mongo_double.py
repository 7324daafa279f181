"""The MongoDB test double: mongomock-motor's client with PyMongo's async surface.

Why: production talks to `pymongo.AsyncMongoClient`; mongomock-motor imitates Motor, whose
surface differs in a few calls.  This adapter presents the PyMongo-async shape of those calls,
so the engine runs the same code on the double as on a real server:

| call | Motor / mongomock-motor | PyMongo async (here) |
|---|---|---|
| `client.close()` | plain call | coroutine (`aclose` too) |
| `client.start_session()` | awaited | plain call, an async context manager |
| `session.start_transaction()` | plain call | coroutine |
| `collection.aggregate()`, `list_indexes()` | cursor at once | coroutine giving a cursor |
| `cursor.to_list(0)` | everything | ValueError (`None` means everything) |
| `admin.command("hello")` | NotImplementedError | a standalone server's answer |

Like a standalone server, the double has sessions but no transactions: `start_transaction`
fails with IllegalOperation (code 20), so the engine takes its fallback commit.  mongomock
has no planner, so `explain()` is refused; instead the double records each query's filter,
sort and `hint` (`MongoDouble.queries`) for the plan tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mongomock_motor import AsyncMongoMockClient
from pymongo.errors import InvalidOperation, OperationFailure

STANDALONE_HELLO = {
    "isWritablePrimary": True,
    "maxWireVersion": 21,  # MongoDB 7.0
    "logicalSessionTimeoutMinutes": 30,
    "ok": 1.0,
}


@dataclass(slots=True)
class Query:
    """One read the engine sent: what a real server's planner would get."""

    collection: str
    operation: str  # find, count_documents, aggregate
    filter: Any
    hint: str | None = None
    sort: list[tuple[str, int]] = field(default_factory=list)


class MongoDouble:
    """Stands where `AsyncMongoClient` stands; one in-memory mongomock deployment."""

    def __init__(self, inner: AsyncMongoMockClient | None = None) -> None:
        self._inner = inner or AsyncMongoMockClient()
        self.queries: list[Query] = []
        self.closed = False

    def __getitem__(self, name: str) -> DatabaseDouble:
        return DatabaseDouble(self, self._inner[name], name)

    def get_database(self, name: str) -> DatabaseDouble:
        return self[name]

    @property
    def admin(self) -> DatabaseDouble:
        return self["admin"]

    def start_session(self, **options: Any) -> SessionDouble:
        return SessionDouble(self)

    async def close(self) -> None:
        self.closed = True

    aclose = close


class SessionDouble:
    """A standalone server's session: usable as a context, refusing transactions."""

    def __init__(self, client: MongoDouble) -> None:
        self.client = client
        self.in_transaction = False

    async def __aenter__(self) -> SessionDouble:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def start_transaction(self, *args: Any, **kwargs: Any) -> Any:
        raise OperationFailure(
            "Transaction numbers are only allowed on a replica set member or mongos", 20
        )

    async def with_transaction(self, *args: Any, **kwargs: Any) -> Any:
        return await self.start_transaction()

    async def commit_transaction(self) -> None:
        raise InvalidOperation("No transaction started")

    async def abort_transaction(self) -> None:
        raise InvalidOperation("No transaction started")


class DatabaseDouble:
    def __init__(self, client: MongoDouble, inner: Any, name: str) -> None:
        self.client = client
        self._inner = inner
        self.name = name

    def __getitem__(self, name: str) -> CollectionDouble:
        return CollectionDouble(self, self._inner[name], name)

    def get_collection(self, name: str) -> CollectionDouble:
        return self[name]

    async def command(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        name = command if isinstance(command, str) else next(iter(command))
        if name in ("hello", "isMaster", "ismaster"):
            return dict(STANDALONE_HELLO)
        return await self._inner.command(command, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CollectionDouble:
    """mongomock-motor's coroutines pass through; the Motor-shaped calls are reshaped."""

    def __init__(self, database: DatabaseDouble, inner: Any, name: str) -> None:
        self.database = database
        self._inner = inner
        self.name = name

    def _record(self, operation: str, filter_: Any, hint: Any = None) -> Query:
        query = Query(self.name, operation, filter_, _hint_name(hint))
        self.database.client.queries.append(query)
        return query

    def find(self, filter: Any = None, *args: Any, **kwargs: Any) -> CursorDouble:
        query = self._record("find", filter or {}, kwargs.pop("hint", None))
        return CursorDouble(self._inner.find(filter, *args, **kwargs), query)

    async def count_documents(self, filter: Any, **kwargs: Any) -> int:
        self._record("count_documents", filter, kwargs.get("hint"))
        return int(await self._inner.count_documents(filter, **kwargs))

    async def aggregate(self, pipeline: list[Any], **kwargs: Any) -> CursorDouble:
        first = pipeline[0].get("$match", {}) if pipeline else {}
        query = self._record("aggregate", first, kwargs.pop("hint", None))
        kwargs.pop("maxTimeMS", None)
        return CursorDouble(self._inner.aggregate(pipeline, **kwargs), query)

    async def list_indexes(self, *args: Any, **kwargs: Any) -> CursorDouble:
        return CursorDouble(self._inner.list_indexes(*args, **kwargs), None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CursorDouble:
    """An `AsyncCursor`: chaining returns the cursor, `to_list` takes PyMongo's length."""

    def __init__(self, inner: Any, query: Query | None) -> None:
        self._inner = inner
        self._query = query

    def hint(self, index: Any) -> CursorDouble:
        if self._query is not None:
            self._query.hint = _hint_name(index)
        return self

    def sort(self, key: Any, direction: int | None = None) -> CursorDouble:
        keys = [(key, direction or 1)] if isinstance(key, str) else list(key)
        if self._query is not None:
            self._query.sort = keys
        self._inner.sort(keys)
        return self

    def limit(self, n: int) -> CursorDouble:
        self._inner.limit(n)
        return self

    def skip(self, n: int) -> CursorDouble:
        self._inner.skip(n)
        return self

    def max_time_ms(self, ms: int | None) -> CursorDouble:
        self._inner.max_time_ms(ms)
        return self

    async def to_list(self, length: int | None = None) -> list[Any]:
        if isinstance(length, int) and length < 1:
            raise ValueError("to_list() length must be greater than 0")
        found = await self._inner.to_list(None)
        return found if length is None else found[:length]

    async def explain(self) -> Any:
        raise NotImplementedError("mongomock has no query planner: read MongoDouble.queries")

    def __aiter__(self) -> CursorDouble:
        return self

    async def __anext__(self) -> Any:
        return await self._inner.__anext__()


def _hint_name(hint: Any) -> str | None:
    """PyMongo takes an index name or its key list; the plan tests compare names."""
    if hint is None or isinstance(hint, str):
        return hint
    return "_".join(f"{name}_{direction}" for name, direction in hint)

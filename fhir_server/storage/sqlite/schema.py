"""SQLite schema: versions in `history`, a current pointer in `resources`, typed index tables.

The JSON bytes live once, in `history`; `resources` says which version is current. Search
values live in one table per parameter type (HAPI's layout), only for current versions.
"""

PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",  # a 201 means the version is on disk
    "PRAGMA foreign_keys = OFF",
    "PRAGMA busy_timeout = 10000",
)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS history (
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        last_updated TEXT NOT NULL,
        method TEXT NOT NULL,
        json BLOB,
        PRIMARY KEY (type, id, version)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS history_by_time ON history (last_updated, type, id, version)",
    "CREATE INDEX IF NOT EXISTS history_by_type_time ON history (type, last_updated, id, version)",
    """CREATE TABLE IF NOT EXISTS resources (
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        PRIMARY KEY (type, id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS idx_token (
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        param TEXT NOT NULL,
        system TEXT,
        code TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS idx_token_code ON idx_token (type, param, code, system, id)",
    "CREATE INDEX IF NOT EXISTS idx_token_system ON idx_token (type, param, system, code, id)",
    "CREATE INDEX IF NOT EXISTS idx_token_owner ON idx_token (type, id)",
)

"""SQLite schema: versions in `history`, a current pointer in `resources`, typed index tables.

The JSON bytes live once, in `history`; `resources` says which version is current. Search
values live in one table per parameter type (HAPI's layout), only for current versions.
"""

import re


def _names(columns: str) -> str:
    """'lo REAL NOT NULL, hi REAL NOT NULL' -> 'lo, hi'."""
    return ", ".join(column.split()[0] for column in columns.split(","))


PRAGMAS = (
    # New files only (before WAL is set): 16 KiB pages keep a version's JSON (~2 KB) inside
    # its B-tree page instead of an overflow page, and make every index one level shallower.
    "PRAGMA page_size = 16384",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",  # a 201 means the version is on disk
    "PRAGMA foreign_keys = OFF",
    "PRAGMA busy_timeout = 10000",
    # Reads through a memory map (SQLite caps it at 2 GiB) skip the copy into the 2 MB page
    # cache: in benchmarks/search.py most searches got 10-35 % faster at both 10k and 1M.
    "PRAGMA mmap_size = 2147418112",
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
    # `system|code` and `|code` use the code index; a bare `system|` searches within the
    # parameter's range of it (rare, so no second index to update on every write).
    "CREATE INDEX IF NOT EXISTS idx_token_code ON idx_token (type, param, code, system, id)",
    "CREATE INDEX IF NOT EXISTS idx_token_by_owner ON idx_token (type, id, param, code, system)",
    *(
        statement
        for table, columns, keys in (
            ("idx_text", "value TEXT NOT NULL", ("value",)),
            # `:exact` looks up the folded value too (value = fold(exact)), then compares.
            ("idx_string", "value TEXT NOT NULL, exact TEXT NOT NULL", ("value",)),
            ("idx_date", "lo TEXT NOT NULL, hi TEXT NOT NULL", ("lo, hi", "hi")),
            ("idx_number", "lo REAL NOT NULL, hi REAL NOT NULL", ("lo, hi", "hi")),
            (
                "idx_quantity",
                "lo REAL NOT NULL, hi REAL NOT NULL, system TEXT, code TEXT, unit TEXT",
                ("code, lo", "unit, lo"),
            ),
            (
                "idx_reference",
                "target_type TEXT, target_id TEXT, target_version TEXT, url TEXT",
                ("target_id, target_type",),
            ),
            ("idx_uri", "value TEXT NOT NULL", ("value",)),
        )
        for statement in (
            f"CREATE TABLE IF NOT EXISTS {table} "
            f"(type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, {columns})",
            # Covering: a per-resource probe or sort value never reads the table row.
            # References are never probed (their lists drive a search): owner only.
            f"CREATE INDEX IF NOT EXISTS {table}_by_owner ON {table} "
            f"(type, id, param{'' if table == 'idx_reference' else ', ' + _names(columns)})",
            *(
                f"CREATE INDEX IF NOT EXISTS {table}_{i} ON {table} (type, param, {key}, id)"
                for i, key in enumerate(keys)
            ),
        )
    ),
    # Composite parameters: one row per component; the parts of one entry share `grp`.
    """CREATE TABLE IF NOT EXISTS idx_composite (
        type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER NOT NULL,
        comp INTEGER NOT NULL, system TEXT, code TEXT, value TEXT, lo, hi, unit TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS idx_composite_code ON idx_composite "
    "(type, param, comp, code, system, id, grp)",
    "CREATE INDEX IF NOT EXISTS idx_composite_by_owner ON idx_composite "
    "(type, id, param, grp, comp)",
    # Canonical references (`instantiates-canonical=…`): only rows that have a url.
    "CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (type, param, url, id) "
    "WHERE url IS NOT NULL",
    # Reverse chains and _revinclude look references up by target.
    "CREATE INDEX IF NOT EXISTS idx_reference_target ON idx_reference "
    "(target_type, target_id, type, param, id)",
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    # The subscriptions' outbox (see `outbox`). AUTOINCREMENT: a seq is never reused, even
    # after retention dropped the newest events, so nothing lands behind the fan-out cursor
    # (kept in `meta`).
    """CREATE TABLE IF NOT EXISTS topic_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        focus_type TEXT NOT NULL,
        focus_id TEXT NOT NULL,
        focus_version INTEGER NOT NULL,
        interaction TEXT NOT NULL,
        at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS subscription_states (
        subscription TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        start_seq INTEGER NOT NULL,
        number INTEGER NOT NULL DEFAULT 0,
        delivered INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        next_attempt TEXT,
        last_error TEXT,
        last_sent TEXT
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS notifications (
        subscription TEXT NOT NULL,
        number INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (subscription, number)
    ) WITHOUT ROWID""",
    # Retention drops an event's notifications with it.
    "CREATE INDEX IF NOT EXISTS notifications_by_seq ON notifications (seq)",
    # Named leases (the one dispatcher); `expires` in wall-clock seconds, shared by processes.
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires REAL NOT NULL
    ) WITHOUT ROWID""",
)


def declared_indexes() -> dict[str, str]:
    """Index name -> the SQL SQLite keeps for it (it drops `IF NOT EXISTS`).

    Why: `open()` drops any index whose name is not declared here or whose definition changed,
    so an existing database follows the schema (HAPI's migrator, in miniature).
    """
    out = {}
    for statement in SCHEMA:
        match = re.match(r"CREATE INDEX IF NOT EXISTS (\w+) ", statement)
        if match:
            out[match.group(1)] = statement.replace(" IF NOT EXISTS", "", 1)
    return out

"""docs/mongodb.md lists exactly the indexes the MongoDB engine declares.

Why: operators create shard keys and check index builds from that page; an index added in
`documents.INDEXES` without the page (or a stale row) would mislead them.
"""

from __future__ import annotations

import re
from pathlib import Path

from fhir_server.storage.mongo.documents import INDEXES

DOC = Path(__file__).resolve().parent.parent / "docs" / "mongodb.md"
ROW = re.compile(r"^\| `(\w+)` \| `(\w+)` \| `([^`]+)` \| ([^|]*)\|$")


def _documented() -> set[tuple[str, str, str, str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Indexes", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        if match := ROW.match(line.strip()):
            collection, name, keys, options = match.groups()
            rows.add((collection, name, keys, options.strip().strip("`")))
    return rows


def _declared() -> set[tuple[str, str, str, str]]:
    rows = set()
    for collection, keys, options in INDEXES:
        spec = ", ".join(f"{field}: {direction}" for field, direction in keys)
        extra = ", ".join(
            f"{k}: {str(v).lower() if isinstance(v, bool) else v}"
            for k, v in options.items()
            if k != "name"
        )
        rows.add((collection, options["name"], spec, extra))
    return rows


def test_the_mongodb_page_lists_exactly_the_declared_indexes() -> None:
    assert _documented() == _declared()


def test_the_readme_links_the_mongodb_page() -> None:
    readme = (DOC.parent.parent / "README.md").read_text(encoding="utf-8")
    assert "docs/mongodb.md" in readme

"""Re-index stored resources when the server's search parameters change.

Why: search values are computed on write.  A server upgraded with new parameters (or custom
SearchParameters added to `profiles/`) would not find resources stored before; at start-up
the stored index version is compared with the current one and, if they differ, every current
resource's values are recomputed from its stored JSON.  No new versions are written.
"""

from __future__ import annotations

import logging

from fhir_server import fhirjson
from fhir_server.resource_types import resource_types
from fhir_server.search.indexer import index_entries, index_version
from fhir_server.search.query import SearchQuery
from fhir_server.storage.port import AccessFilter, Storage

log = logging.getLogger(__name__)
INDEX_KEY = "search-index-version"
BATCH = 500


async def reindex_if_needed(storage: Storage) -> int:
    """Re-index everything if the stored index version differs; return how many resources."""
    wanted = index_version()
    async with storage.unit_of_work() as uow:
        if await uow.meta(INDEX_KEY) == wanted:
            return 0
    done = 0
    for type_name in sorted(resource_types()):
        after: str | None = None
        while True:
            query = SearchQuery(type_name, count=BATCH, after=after, total=False)
            page = await storage.search(query, AccessFilter())
            async with storage.unit_of_work() as uow:
                for version in page.items:
                    if version.json is not None:
                        resource = fhirjson.loads_resource(version.json)
                        await uow.reindex(type_name, version.id, index_entries(type_name, resource))
            done += len(page.items)
            if not page.has_more or not page.items:
                break
            after = page.items[-1].id
    async with storage.unit_of_work() as uow:
        await uow.set_meta(INDEX_KEY, wanted)
    if done:
        log.warning("re-indexed %d stored resources for search index %s", done, wanted)
    return done

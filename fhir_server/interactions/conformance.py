"""Publish the conformance resources of `profiles/` as ordinary, readable resources.

Why: an implementer must be able to fetch exactly what the server enforces, e.g.
`GET /StructureDefinition?url=…`.  At start-up each loaded artefact is stored under its own
id; an unchanged one is left alone, so restarts add no versions and history shows real edits.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.search.indexer import index_entries
from fhir_server.storage.port import Storage
from fhir_server.validation.conformance import Conformance

from .versions import stored_version


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in _SERVER_META}
    body = {k: v for k, v in resource.items() if k != "meta"}
    return {**body, "meta": meta} if meta else body


_SERVER_META = ("versionId", "lastUpdated")


async def publish_conformance(storage: Storage, conformance: Conformance) -> None:
    """All in one unit of work: one commit (one fsync) at start-up, not one per artefact."""
    async with storage.unit_of_work() as uow:
        for resource in conformance.resources:
            rtype, rid = resource["resourceType"], resource["id"]
            current = await uow.current(rtype, rid)
            unchanged = current is not None and current.json is not None
            if unchanged and _content(orjson.loads(current.json)) == _content(resource):
                continue
            version = stored_version(resource, rtype, rid, current, "PUT")
            await uow.put(version, index_entries(rtype, resource))

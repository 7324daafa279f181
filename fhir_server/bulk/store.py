"""Storing a batch of prepared resources in one unit of work, as an update-as-create PUT
stores each: the resource keeps its id; a new one is version 1; one that exists gets a new
version only when its content differs (`meta.versionId` and `meta.lastUpdated` aside), so
running an import again adds nothing.

What a PUT over HTTP does besides, a bulk import does not: it runs the SIP process's gates
(a refusal is a refused line, nothing stored), but not its hooks (process state, obligation
Tasks, closures) nor the subscription topics. An import migrates records of acts that
happened elsewhere, earlier: their obligations were the source system's, and a notification
for each of 200,000 historical writes would tell subscribers about nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server.errors import FhirError, Issue
from fhir_server.interactions.context import Context
from fhir_server.interactions.versions import stored_version
from fhir_server.sip import gates
from fhir_server.storage.port import ResourceVersion, UnitOfWork

from .prepare import Prepared

SERVER_META = ("versionId", "lastUpdated")


@dataclass(slots=True)
class Written:
    """What one batch did; `refused` holds (position in the batch's list, issues)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[tuple[int, list[Issue]]] = field(default_factory=list)


async def write_batch(ctx: Context, uow: UnitOfWork, batch: list[Prepared]) -> Written:
    written = Written()
    for at, item in enumerate(batch):
        current = await uow.current(item.type, item.id)
        if current is not None and not current.deleted and same_content(current, item.resource):
            written.unchanged += 1
            continue
        version = stored_version(item.resource, item.type, item.id, current, "PUT")
        try:
            await gates.check(ctx, uow, version, item.resource)
        except FhirError as failure:
            written.refused.append((at, failure.issues))
            continue
        await uow.put(version, item.index)
        if current is None or current.deleted:
            written.created += 1
        else:
            written.updated += 1
    return written


def same_content(current: ResourceVersion, resource: dict[str, Any]) -> bool:
    """Whether storing `resource` would repeat the current version (the server's meta
    elements aside)."""
    if current.json is None:
        return False
    return _content(orjson.loads(current.json)) == _content(resource)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return resource
    kept = {k: v for k, v in meta.items() if k not in SERVER_META}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if kept:
        out["meta"] = kept
    return out

"""Gates on write (422 naming the rule and the element; nothing stored)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context


async def check(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, resource: dict[str, Any]
) -> None:
    """Refuse `resource` if a process rule forbids storing it now."""

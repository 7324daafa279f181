"""Obligations as FHIR Tasks: opened and completed by the acts of the process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context


async def apply(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, resource: dict[str, Any]
) -> None:
    """Open the Tasks the rules impose for `resource`, and complete those it fulfils."""

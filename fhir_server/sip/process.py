"""What the process does when one of its resources is written, in the same unit of work:
gates that refuse the write (422 naming the rule) and obligations that open and close.

Why one entry point: every write path (create, update, patch, transaction entries) stores
through `crud.store`, which calls `on_write` first, so no path can skip a rule. Resources
outside the process cost one set lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.sip import gates, obligations
from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context

PROCESS_TYPES = frozenset(
    {
        "Appointment",
        "CarePlan",
        "Communication",
        "Consent",
        "Encounter",
        "EpisodeOfCare",
        "Patient",
        "QuestionnaireResponse",
        "Task",
    }
)


async def on_write(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, resource: dict[str, Any]
) -> None:
    """Run the process rules for `resource`, about to be stored as `version`."""
    if version.type not in PROCESS_TYPES:
        return
    await gates.check(ctx, uow, version, resource)
    await obligations.apply(ctx, uow, version, resource)

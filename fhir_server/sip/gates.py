"""Gates on write (422 naming the rule and the element; nothing stored).

Each gate reads the other resources it needs through the unit of work. Inside a
transaction the gates run once every entry is written (`process.gates_deferred`), so they
judge the bundle's end state whatever the order of its entries.
The consent gates (R-SIP-01, R-DIS-04) apply to a subject that is a Patient stored here;
R-SIP-01 is checked again when the Patient is written. Types without a gate return at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fhir_server.sip.gate_meetings import check_meeting
from fhir_server.sip.gate_messages import check_message
from fhir_server.sip.gate_person import check_person
from fhir_server.sip.gate_plan import check_plan
from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context

Gate = Callable[["Context", UnitOfWork, ResourceVersion, dict[str, Any]], Awaitable[None]]

GATES: dict[str, Gate] = {
    "Appointment": check_meeting,
    "CarePlan": check_plan,
    "Communication": check_message,
    "Patient": check_person,
}


async def check(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, resource: dict[str, Any]
) -> None:
    """Refuse `resource` if a process rule forbids storing it now."""
    gate = GATES.get(version.type)
    if gate is not None:
        await gate(ctx, uow, version, resource)

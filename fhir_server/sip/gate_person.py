"""R-SIP-01 when the person is written: the consent gates apply to Patients stored here, so a
Patient written after its active SIP (e.g. later in the same transaction) is checked then,
with its own birthDate. Consents written before it count; so no order of writes skips the
rule once both the plan and the person are stored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.sip.gate_plan import consented
from fhir_server.sip.resources import PLAN_TYPE, find, is_deceased
from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context


async def check_person(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, patient: dict[str, Any]
) -> None:
    if is_deceased(patient):
        return  # R-DIS-13: a death is always recorded; its closure revokes the person's SIPs
    plans = await find(
        ctx, uow, "CarePlan",
        [("subject", f"Patient/{version.id}"), ("status", "active"),
         ("category", f"{PLAN_TYPE}|SIP")],
    )  # fmt: skip
    for plan in plans:
        await consented(ctx, uow, plan, {**patient, "id": version.id}, "Patient")

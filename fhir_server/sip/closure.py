"""Closures the server makes itself: death (R-DIS-13) and a withdrawn SIP consent (R-SIP-10).

Why the server and not the coordinator: whoever learns of a death may record it, and a
person may withdraw consent at any time; either way no SIP may go on, so the writer of the
Patient or the Consent closes the plans and processes in the same unit of work. The closed
CarePlans, EpisodeOfCares and cancelled Tasks are new versions stored with `uow.put`, so the
gates (R-SIP-10 closure by the coordinator) never refuse the server's own closure.

In a transaction `process.check_gates` runs `apply` again on the bundle's end state, so a
plan written active after the consent was withdrawn (or the death recorded) in the same
bundle is closed too, whatever the order of the entries.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fhir_server.sip.clock import instant, moment
from fhir_server.sip.episodes import (
    SIP_PROCESS,
    find,
    finish,
    open_processes,
    put,
    reason,
    with_reason,
)
from fhir_server.sip.process_state import discharge_open, sip_consents
from fhir_server.sip.resources import (
    CONSENT_KIND,
    PLAN_TYPE,
    codes,
    is_deceased,
    local_id,
    resource_of,
)
from fhir_server.sip.tasks import cancel, obligation_codes, open_tasks
from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context

OPEN_PLAN = "active,on-hold"
# The obligations that exist only for a SIP: without consent none of them can be met.
SIP_OBLIGATIONS = frozenset(
    {
        "skicka-sip-kallelse",
        "uppratta-sip",
        "dokumentera-plan",
        "folja-upp-plan",
        "skicka-uppfoljningskallelse",
    }
)


async def apply(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, resource: dict[str, Any]
) -> None:
    """Close what a death or a withdrawn consent ends; other writes: nothing."""
    if version.type == "Patient" and is_deceased(resource):
        await on_death(ctx, uow, f"Patient/{version.id}", resource)
    elif version.type == "Consent" and withdrawn(resource):
        patient = local_id(resource.get("patient"), "Patient")
        if patient is not None:
            await on_withdrawal(ctx, uow, f"Patient/{patient}", version.id)


def withdrawn(consent: dict[str, Any]) -> bool:
    """A SIP consent written inactive (withdrawn) or rejected (declined, R-DIS-13)."""
    sip = "sip" in codes(consent.get("category"), CONSENT_KIND)
    return sip and consent.get("status") in ("inactive", "rejected")


async def on_death(ctx: Context, uow: UnitOfWork, patient: str, person: dict[str, Any]) -> None:
    """R-DIS-13: the patient's open processes finish and their open SIPs are revoked, both
    with the reason `avliden`, at the time of death (`deceasedDateTime`; for
    `deceasedBoolean` the clock's now, the only time known); their open obligations are
    cancelled."""
    died = person.get("deceasedDateTime")
    at = moment(died) or ctx.clock.now()
    why = reason("avliden")
    for process in await open_processes(uow, patient):
        await finish(uow, process, at, why)
    for plan in await _open_plans(uow, patient):
        await revoke(uow, plan, why, at)
    for task in await open_tasks(uow, patient=patient):
        if obligation_codes(resource_of(task)):
            await cancel(uow, task, "Avliden")


async def on_withdrawal(ctx: Context, uow: UnitOfWork, patient: str, consent: str) -> None:
    """R-SIP-10: with no active SIP consent left, the person's open SIPs are revoked with the
    reason `samtycke-aterkallat`, their SIP process finishes (a process that is also an open
    discharge process goes on as that), and the SIP's open obligations are cancelled. The
    time is the clock's now: a Consent records when it was given, not when it was withdrawn."""
    others = await sip_consents(uow, patient)
    if any(s == "active" for id, s in others.items() if id != consent):
        return
    at, why = ctx.clock.now(), reason("samtycke-aterkallat")
    closed = set()
    for plan in await _open_plans(uow, patient):
        await revoke(uow, plan, why, at)
        closed.add(f"CarePlan/{plan.id}")
    for process in await open_processes(uow, patient, SIP_PROCESS):
        if not await discharge_open(uow, process):
            await finish(uow, process, at, why)
    for task in await open_tasks(uow, patient=patient):
        resource = resource_of(task)
        focus = (resource.get("focus") or {}).get("reference")
        obligation = obligation_codes(resource)
        if obligation and (focus in closed or obligation & SIP_OBLIGATIONS):
            await cancel(uow, task, "Samtycke återkallat")


async def _open_plans(uow: UnitOfWork, patient: str) -> list[ResourceVersion]:
    pairs = [("subject", patient), ("category", f"{PLAN_TYPE}|SIP"), ("status", OPEN_PLAN)]
    return await find(uow, "CarePlan", pairs)


async def revoke(
    uow: UnitOfWork, version: ResourceVersion, why: dict[str, Any], at: datetime
) -> None:
    """An open SIP CarePlan revoked with its closure reason (sip-careplan-4); its period ends
    at `at` unless it ended earlier."""
    plan = with_reason(resource_of(version), why)
    plan["status"] = "revoked"
    period = dict(plan.get("period") or {})
    start, end = (moment(period.get(k)) for k in ("start", "end"))
    if (end is None or end > at) and (start is None or start <= at):
        as_date = len(str(period.get("start", ""))) == 10  # the precision of the timeline
        period["end"] = at.date().isoformat() if as_date else instant(at)
        plan["period"] = period
    await put(uow, plan, version)

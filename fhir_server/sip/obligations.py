"""Obligations as FHIR Tasks: opened and completed by the acts of the process.

`apply` runs inside the writer's unit of work (from `process.on_write`), so a notice and the
Tasks it imposes commit together. `sweep` runs on a timer: the only thing that needs a now
is noticing that an open obligation's deadline has passed (businessStatus `overdue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, time
from typing import TYPE_CHECKING, Any

from fhir_server.search.parser import parse_search
from fhir_server.sip import rules_care_contact, rules_discharge, rules_invitations, rules_plan
from fhir_server.sip.clock import Clock
from fhir_server.sip.resources import ALL, resource_of
from fhir_server.sip.tasks import (
    BUSINESS_STATUS,
    OVERDUE,
    business_status,
    deadline_of,
    put_task,
)
from fhir_server.storage.port import ResourceVersion, Storage, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context

log = logging.getLogger(__name__)
SWEEP_PAGE = 200
SWEEP_LEASE = "obligation-sweep"


async def apply(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, resource: dict[str, Any]
) -> None:
    """Open the Tasks the rules impose for `resource`, and complete those it fulfils: the
    discharge process's (rules_discharge, rules_care_contact), invitations
    (rules_invitations), the SIP plan's (rules_plan, rules_follow_up)."""
    type = version.type
    resource = {**resource, "id": version.id}
    clock = ctx.clock  # for completions that have no recorded time of their own
    if type == "Communication":
        acknowledge_by = cutoff(ctx.settings.acknowledgement_cutoff)
        await rules_discharge.communication(uow, resource, acknowledge_by, clock)
        await rules_invitations.communication(uow, resource)
        await rules_plan.communication(uow, resource)
    elif type == "Encounter":
        await rules_discharge.encounter(uow, resource)
    elif type == "QuestionnaireResponse":
        await rules_discharge.planning_basis(uow, resource)
    elif type == "Appointment":
        await rules_invitations.meeting(uow, resource)
        await rules_plan.appointment(uow, resource)
    elif type == "CarePlan":
        await rules_plan.care_plan(uow, resource, clock)
    elif type in ("Patient", "EpisodeOfCare"):
        await rules_care_contact.recorded(uow, resource, clock)


def cutoff(text: str) -> time:
    """The acknowledgement cut-off setting ("12:00") as a time of day."""
    return time.fromisoformat(text)


async def sweep(storage: Storage, clock: Clock) -> int:
    """Mark requested obligations past their deadline `overdue`; how many were marked."""
    now = clock.now()
    criteria = [
        ("status", "requested"),
        ("code:in", "http://sip-fhir.se/fhir/ValueSet/sip-obligation-type"),
        ("deadline", f"lt{now.isoformat(timespec='seconds')}"),
        ("business-status:not", f"{BUSINESS_STATUS}|{OVERDUE}"),
        ("_sort", "deadline"),
        ("_count", str(SWEEP_PAGE)),
    ]
    query = parse_search("Task", criteria).query
    marked = 0
    while True:
        page = await storage.search(query, ALL)
        done = await _mark_overdue(storage, page.items, now)
        marked += done
        if not page.has_more or done == 0:
            return marked


async def _mark_overdue(storage: Storage, found: list[ResourceVersion], now: datetime) -> int:
    """Each Task in its own unit of work: a concurrent completion wins, never overwritten."""
    marked = 0
    for found_version in found:
        async with storage.unit_of_work() as uow:
            current = await uow.current("Task", found_version.id)
            if current is None or current.deleted:
                continue
            task = resource_of(current)
            deadline = deadline_of(task)
            if task.get("status") != "requested" or deadline is None or deadline >= now:
                continue
            task.pop("meta", None)
            task["businessStatus"] = business_status(OVERDUE)
            await put_task(uow, task, current)
            marked += 1
    return marked


async def sweep_forever(storage: Storage, clock: Clock, interval: float, owner: str) -> None:
    """`sweep` now and every `interval` seconds (the app's lifespan runs and cancels it), by
    the process that holds the `obligation-sweep` lease: with several processes on one
    database one sweeps, and another takes over within two intervals when it stops."""
    try:
        while True:
            try:
                if await storage.outbox.take_lease(SWEEP_LEASE, owner, 2 * interval + 5):
                    await sweep(storage, clock)
            except Exception:  # a failed sweep must not stop the next one
                log.exception("obligation sweep failed")
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(storage.outbox.release_lease(SWEEP_LEASE, owner))

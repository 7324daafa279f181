"""Following a SIP up: the agreed follow-up (R-SIP-08), its invitation (R-SIP-09), and an
existing plan followed up after a discharge (R-DIS-14).

- R-SIP-08 `folja-upp-plan`: an active SIP plan with a follow-up (extension sip-follow-up:
  `date`, `responsible`) has one open Task, owner the responsible's unit (an Organization, a
  PractitionerRole's `organization`; else the coordinator's = `author`'s), focus the plan,
  start the last follow-up (the plan's `created`, or when the previous follow-up was done),
  deadline the earlier of the follow-up date's 23:59:59 and 23:59:59 a year after the last
  follow-up ("at least once a year"). A new date moves the open Task; once it is completed,
  the next date opens a new Task (its id keyed by the date). Each Task records its date as
  `input`, so a date already followed up opens nothing again.
- R-SIP-09 `skicka-uppfoljningskallelse`: per agreed date, owner the coordinator's unit,
  start the plan's `created` (or the clock's now when a later update agreed the date: an
  update records no time of its own), due 23:59:59 on the 3rd working day after the start
  but not after the follow-up date's 23:59:59; completed by an invitation
  (rules_invitations).
- R-DIS-14: at the discharge notice a plan made before the discharge is followed up by the
  end of the 21st day after it (`folja-upp-plan`, focus the notice, owner as for R-SIP-08),
  instead of a new SIP being established.

A follow-up is done by a follow-up meeting (serviceType sip-meeting-purpose `uppfoljning`)
of the patient held (fulfilled), ending after the obligation began (done = its `end`). A
closed plan (completed or revoked) is not followed up: its open follow-ups are cancelled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_server.sip import rules_invitations
from fhir_server.sip.clock import Clock, moment
from fhir_server.sip.resources import resource_of
from fhir_server.sip.rules_support import (
    due,
    end_of_day,
    end_of_day_a_year_after,
    end_of_working_day,
    follow_up,
    patient_of,
    plan_made,
    purposes,
    ref,
    sip_plans,
    unit_of,
)
from fhir_server.sip.tasks import (
    OBLIGATION_TYPE,
    Obligation,
    cancel,
    complete,
    find,
    follow_up_of,
    move,
    open_task,
    open_tasks,
)
from fhir_server.storage.port import ResourceVersion, UnitOfWork

FOLLOW_UP = "folja-upp-plan"
LABEL = "Uppföljning"
DAYS_AFTER_DISCHARGE = 21


async def plan_written(
    uow: UnitOfWork, plan: dict[str, Any], previous: dict[str, Any] | None, clock: Clock
) -> None:
    """An active SIP plan is written (`previous`: its version before this write)."""
    day, responsible = follow_up(plan)
    patient = ref(plan.get("subject"))
    date_end = moment(day)
    if day is None or date_end is None or patient is None:
        return
    date_end = end_of_day(date_end)
    coordinator = await unit_of(uow, ref(plan.get("author")))
    owner = await unit_of(uow, responsible) or coordinator
    made = plan_made(plan) or clock.now()
    focus = f"CarePlan/{plan['id']}"
    if owner is not None:
        await _follow_up_due(uow, focus, patient, owner, day, date_end, made)
    if coordinator is not None:
        agreed_now = previous is not None and follow_up(previous)[0] != day
        start = clock.now() if agreed_now else made
        deadline = min(end_of_working_day(start, 3), date_end)
        code = rules_invitations.FOLLOW_UP_INVITATION
        opened = Obligation(
            code, coordinator, patient, focus, start, deadline, key=day, follow_up=day
        )
        await open_task(uow, opened)
        await rules_invitations.so_far(uow, code, patient, start)


async def _follow_up_due(
    uow: UnitOfWork,
    focus: str,
    patient: str,
    owner: str,
    day: str,
    date_end: datetime,
    made: datetime,
) -> None:
    """R-SIP-08: move the plan's open follow-up, or open the next one."""
    found = [(version, resource_of(version)) for version in await _follow_ups_of(uow, focus)]
    completed = [task for _, task in found if task.get("status") == "completed"]
    ends = [moment((task.get("executionPeriod") or {}).get("end")) for task in completed]
    last = max([made, *(end for end in ends if end is not None)])
    deadline = min(date_end, end_of_day_a_year_after(last))
    still_open = [version for version, task in found if task.get("status") == "requested"]
    for version in still_open:
        await move(uow, version, deadline, owner, day)
    if still_open or day in {follow_up_of(task) for task in completed}:
        return
    opened = Obligation(FOLLOW_UP, owner, patient, focus, last, deadline, key=day, follow_up=day)
    await open_task(uow, opened)
    await _followed_up_so_far(uow, patient, last)


async def _follow_ups_of(uow: UnitOfWork, focus: str) -> list[ResourceVersion]:
    return await find(uow, "Task", [("focus", focus), ("code", f"{OBLIGATION_TYPE}|{FOLLOW_UP}")])


async def plan_closed(uow: UnitOfWork, focus: str) -> None:
    """A closed plan (R-SIP-10) is not followed up: its open follow-up and follow-up
    invitation are cancelled."""
    for code in (FOLLOW_UP, rules_invitations.FOLLOW_UP_INVITATION):
        for version in await open_tasks(uow, code=code, focus=focus):
            await cancel(uow, version, "Planen avslutad")


async def follow_up_after_discharge(uow: UnitOfWork, base: Obligation, left: datetime) -> bool:
    """R-DIS-14 at the discharge notice `base`: whether the patient has an active SIP plan
    made before the discharge (`left`); each such plan is followed up within 21 days."""
    plans = [
        p for p in await sip_plans(uow, base.patient) if (made := plan_made(p)) and made < left
    ]
    for plan in plans:
        responsible = follow_up(plan)[1]
        owner = await unit_of(uow, responsible) or await unit_of(uow, ref(plan.get("author")))
        if owner is not None:
            deadline = end_of_day(left, DAYS_AFTER_DISCHARGE)
            await open_task(uow, due(base, FOLLOW_UP, owner, left, deadline))
    if plans:
        await _followed_up_so_far(uow, base.patient, left)
    return bool(plans)


async def followed_up(uow: UnitOfWork, patient: str, end: datetime, output: str) -> None:
    """A follow-up meeting held, ending at `end`: the patient's follow-ups begun before it."""
    for version in await open_tasks(uow, code=FOLLOW_UP, patient=patient):
        start = moment(resource_of(version).get("authoredOn"))
        if start is None or end > start:
            await complete(uow, version, end, output, LABEL)


async def _followed_up_so_far(uow: UnitOfWork, patient: str, since: datetime) -> None:
    for version in await find(uow, "Appointment", [("actor", patient), ("status", "fulfilled")]):
        meeting = resource_of(version)
        end = moment(meeting.get("end"))
        if "uppfoljning" in purposes(meeting) and end and end > since and patient_of(meeting):
            await followed_up(uow, patient, end, f"Appointment/{meeting['id']}")

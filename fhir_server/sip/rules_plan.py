"""The SIP's obligations up to a documented plan; following it up is rules_follow_up's.

- R-SIP-02 `skicka-sip-kallelse`: an outpatient need of a SIP is recorded as a completed
  Communication `sip-behov` (subject the patient, sender whoever noticed the need, initially
  the coordinator, R-SIP-03). The sender's unit invites within 3 working days: due 23:59:59
  on the 3rd working day after `sent`; completed by an invitation (rules_invitations).
- R-SIP-06 `dokumentera-plan`: a SIP meeting held (fulfilled) obliges each participating
  organisation (participant extension sip-participant-organization) to document the plan by
  the end of the 3rd day after its `end`. An organisation has documented when a SIP plan of
  the patient holds an activity it performs (`detail.performer` the Organization or one of
  its PractitionerRoles) or is authored (coordinated) by it. Done at the plan's `created`
  when this write creates the plan; an update records no time of its own, so then the
  clock's now (scenario playback sets the clock).
- R-DIS-14 `uppratta-sip` (opened by the discharge notice, rules_discharge): completed by an
  active SIP plan made (`created`) at or after the discharge.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_server.sip import rules_follow_up, rules_invitations
from fhir_server.sip.clock import Clock, moment
from fhir_server.sip.resources import (
    MESSAGE_TYPE,
    PARTICIPANT_ORGANIZATION_URL,
    PLAN_CLOSED,
    codes,
    current,
    is_sip_plan,
    resource_of,
)
from fhir_server.sip.rules_support import (
    end_of_day,
    end_of_working_day,
    patient_of,
    plan_made,
    purposes,
    ref,
    sip_plans,
    unit_of,
)
from fhir_server.sip.tasks import Obligation, complete, open_task, open_tasks
from fhir_server.storage.port import UnitOfWork

NEED = "sip-behov"
DOCUMENT = "dokumentera-plan"
ESTABLISH = "uppratta-sip"
PLAN_LABEL = "Samordnad individuell plan"
DOCUMENTED = ("draft", "active")  # a plan being written down, or in force


async def communication(uow: UnitOfWork, comm: dict[str, Any]) -> None:
    """R-SIP-02: a completed `sip-behov` message opens the invitation obligation."""
    if comm.get("status") != "completed" or NEED not in codes(comm.get("category"), MESSAGE_TYPE):
        return
    patient, sender, sent = (
        ref(comm.get("subject")),
        ref(comm.get("sender")),
        moment(comm.get("sent")),
    )
    owner = await unit_of(uow, sender)
    if patient is None or owner is None or sent is None:
        return
    code = rules_invitations.SIP_INVITATION
    focus = f"Communication/{comm['id']}"
    deadline = end_of_working_day(sent, 3)
    await open_task(uow, Obligation(code, owner, patient, focus, sent, deadline, sender))
    await rules_invitations.so_far(uow, code, patient, sent)


async def appointment(uow: UnitOfWork, meeting: dict[str, Any]) -> None:
    """A meeting held: a SIP meeting opens R-SIP-06, a follow-up meeting is a follow-up."""
    patient, end = patient_of(meeting), moment(meeting.get("end"))
    if meeting.get("status") != "fulfilled" or patient is None or end is None:
        return
    held = purposes(meeting)
    if "sip" in held:
        await _documentation_due(uow, meeting, patient, end)
    if "uppfoljning" in held:
        await rules_follow_up.followed_up(uow, patient, end, f"Appointment/{meeting['id']}")


async def _documentation_due(
    uow: UnitOfWork, meeting: dict[str, Any], patient: str, end: datetime
) -> None:
    """R-SIP-06 for every organisation that took part (a participant who declined did not),
    completed at once by a plan already made since the meeting ended."""
    this = f"Appointment/{meeting['id']}"
    for participant in meeting.get("participant") or []:
        if participant.get("status") == "declined":
            continue
        for extension in participant.get("extension") or []:
            owner = ref(extension.get("valueReference"))
            if extension.get("url") == PARTICIPANT_ORGANIZATION_URL and owner:
                opened = Obligation(DOCUMENT, owner, patient, this, end, end_of_day(end, 3))
                await open_task(uow, opened)
    for plan in await sip_plans(uow, patient, ",".join(DOCUMENTED)):
        made = moment(plan.get("created"))
        if made is not None and made >= end:
            await _documented(uow, plan, made)


async def care_plan(uow: UnitOfWork, plan: dict[str, Any], clock: Clock) -> None:
    """A SIP CarePlan is written: who has documented it (R-SIP-06), the SIP established
    after a discharge (R-DIS-14), its follow-up (R-SIP-08, R-SIP-09)."""
    if not is_sip_plan(plan):
        return
    previous = await current(uow, "CarePlan", plan["id"])  # before this write
    if plan.get("status") in DOCUMENTED:
        created = moment(plan.get("created")) if previous is None else None
        await _documented(uow, plan, created or clock.now())
    if plan.get("status") == "active":
        await _established(uow, plan)
        await rules_follow_up.plan_written(uow, plan, previous, clock)
    elif plan.get("status") in PLAN_CLOSED:
        await rules_follow_up.plan_closed(uow, f"CarePlan/{plan['id']}")


async def _documented(uow: UnitOfWork, plan: dict[str, Any], done: datetime) -> None:
    """R-SIP-06: complete the open Tasks of the organisations this plan shows documenting."""
    patient = ref(plan.get("subject"))
    if patient is None:
        return
    units = await _documenting_units(uow, plan)
    for version in await open_tasks(uow, code=DOCUMENT, patient=patient):
        task = resource_of(version)
        start = moment(task.get("authoredOn"))
        if ref(task.get("owner")) in units and (start is None or done >= start):
            await complete(uow, version, done, f"CarePlan/{plan['id']}", PLAN_LABEL)


async def _documenting_units(uow: UnitOfWork, plan: dict[str, Any]) -> set[str]:
    """The organisations behind the plan's author and its activities' performers."""
    actors = [ref(plan.get("author"))]
    for activity in plan.get("activity") or []:
        actors += [ref(p) for p in (activity.get("detail") or {}).get("performer") or []]
    return {unit for actor in actors if (unit := await unit_of(uow, actor))}


async def _established(
    uow: UnitOfWork, plan: dict[str, Any], since: datetime | None = None
) -> None:
    """R-DIS-14: an active SIP plan made at or after the discharge (each Task's start, or
    `since`) completes `uppratta-sip`."""
    patient, made = ref(plan.get("subject")), plan_made(plan)
    if patient is None or made is None:
        return
    for task in await open_tasks(uow, code=ESTABLISH, patient=patient):
        start = since or moment(resource_of(task).get("authoredOn"))
        if start is None or made >= start:
            await complete(uow, task, made, f"CarePlan/{plan['id']}", PLAN_LABEL)


async def established_so_far(uow: UnitOfWork, patient: str, since: datetime) -> None:
    """R-DIS-14 just opened: a plan made since the discharge completes it at once."""
    for plan in await sip_plans(uow, patient):
        await _established(uow, plan, since)

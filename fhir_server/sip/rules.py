"""The rule table: which act opens which obligation, for whom, due when, and which act
completes it.

Why deadlines come from the act: a notice's `received`/`sent`, a meeting's `end`, a stay's
`period.end` are what the law counts from; a late upload must not move a deadline. A
deadline counted in days ends at 23:59:59 Stockholm time on the last day (as in
examples/sip-case/Task-establish-sip.json); one counted in hours is that many hours later.
Opening also looks for an act that fulfilled the obligation already (a transaction may carry
the acknowledgement before the notice), so the result does not depend on write order.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from fhir_server.sip.clock import STOCKHOLM, local_moment, next_cutoff
from fhir_server.sip.resources import (
    CONSENT_KIND,
    MEETING_PURPOSE,
    MESSAGE_TYPE,
    PARTICIPANT_ORGANIZATION_URL,
    PLAN_TYPE,
    UNIT_TYPE,
    codes,
    current,
    reference,
    resource_of,
)
from fhir_server.sip.tasks import (
    Obligation,
    complete,
    find,
    open_task,
    open_tasks,
    task_id,
)
from fhir_server.storage.port import UnitOfWork

NOTICES = frozenset({"inskrivningsmeddelande", "utskrivningsklar", "utskrivningsmeddelande"})
PRIMARY_CARE = "narsjukvard"  # region-financed outpatient care: the fast vårdkontakt's unit


def ref(value: Any) -> str | None:
    """A `Type/id` reference as written, else None."""
    found = reference(value)
    return found if found is not None and "/" in found else None


def moment(value: Any) -> datetime | None:
    return local_moment(value) if isinstance(value, str) else None


def hours_after(start: datetime, hours: int) -> datetime:
    """Elapsed hours (24 h across a DST change is 23 or 25 on the wall clock)."""
    return (start.astimezone(UTC) + timedelta(hours=hours)).astimezone(STOCKHOLM)


def end_of_day(start: datetime, days: int) -> datetime:
    return datetime.combine(start.date() + timedelta(days=days), time(23, 59, 59), STOCKHOLM)


async def _read(uow: UnitOfWork, literal: str) -> dict[str, Any] | None:
    type, _, id = literal.partition("/")
    return await current(uow, type, id)


async def _primary_care(uow: UnitOfWork, recipients: list[str]) -> list[str]:
    """The recipients that are region-financed outpatient (primary care) units."""
    found = []
    for recipient in recipients:
        organization = await _read(uow, recipient)
        if organization and PRIMARY_CARE in codes(organization.get("type"), UNIT_TYPE):
            found.append(recipient)
    return found


async def _messages(uow: UnitOfWork, code: str, **criteria: str) -> list[dict[str, Any]]:
    pairs = [("category", f"{MESSAGE_TYPE}|{code}"), ("status", "completed")]
    pairs += list(criteria.items())
    return [resource_of(v) for v in await find(uow, "Communication", pairs)]


async def communication(uow: UnitOfWork, comm: dict[str, Any], cutoff: time) -> None:
    """A completed message: what it completes, then, for a notice, what it opens."""
    if comm.get("status") != "completed":
        return
    kinds = codes(comm.get("category"), MESSAGE_TYPE)
    this = f"Communication/{comm['id']}"
    patient, sender, encounter = (
        ref(comm.get("subject")),
        ref(comm.get("sender")),
        ref(comm.get("encounter")),
    )
    sent = moment(comm.get("sent"))
    if "kvittens" in kinds and sender and sent:
        await _acknowledged(uow, comm, sender, sent)
    if "planeringsunderlag" in kinds and encounter and sent:
        for task in await open_tasks(uow, code="fylla-i-planeringsunderlag", encounter=encounter):
            await complete(uow, task, sent, this, "Planeringsunderlag")
    if "kallelse" in kinds and patient and sent:
        await _invited(uow, patient, sent, this)
    if kinds & NOTICES and patient and sender and sent:
        base = Obligation("", "", patient, this, sent, sent, sender, encounter)
        await _notice(uow, comm, kinds, base, cutoff)


async def _notice(
    uow: UnitOfWork, comm: dict[str, Any], kinds: set[str], base: Obligation, cutoff: time
) -> None:
    """A notice of the discharge process: the obligations it opens (R-DIS-05, -06, -10, -14)."""
    patient, sender, this, sent = base.patient, str(base.requester), base.focus, base.start
    encounter = base.encounter
    recipients = [
        r for r in map(ref, comm.get("recipient") or []) if r and r.startswith("Organization/")
    ]
    received = moment(comm.get("received")) or sent
    for owner in recipients:  # R-DIS-05
        opened = _due(base, "kvittera-meddelande", owner, received, next_cutoff(received, cutoff))
        await open_task(uow, opened)
    await _acknowledgements_so_far(uow, comm, patient)
    if "inskrivningsmeddelande" in kinds:  # R-DIS-06
        due = _due(base, "fylla-i-planeringsunderlag", sender, sent, hours_after(sent, 24))
        await open_task(uow, due)
        if encounter:
            for basis in await _messages(uow, "planeringsunderlag", encounter=encounter):
                done = moment(basis.get("sent"))
                if done:
                    output = f"Communication/{basis['id']}"
                    await _complete_one(
                        uow, this, due.code, sender, done, output, "Planeringsunderlag"
                    )
    if "utskrivningsklar" in kinds and await _consents(uow, patient):  # R-DIS-10
        for owner in await _primary_care(uow, recipients):
            due = _due(base, "skicka-sip-kallelse", owner, sent, end_of_day(sent, 3))
            await open_task(uow, due)
        await _invitations_so_far(uow, patient, sent)
    if "utskrivningsmeddelande" in kinds:  # R-DIS-14
        stay = await _read(uow, encounter) if encounter else None
        left = moment(((stay or {}).get("period") or {}).get("end")) or sent
        for owner in await _primary_care(uow, recipients):
            due = _due(base, "uppratta-sip", owner, left, end_of_day(left, 21))
            await open_task(uow, due)
        for plan in await _sip_plans(uow, patient):
            await care_plan(uow, plan, since=left)


def _due(
    base: Obligation, code: str, owner: str, start: datetime, deadline: datetime
) -> Obligation:
    """`base` (patient, focus, requester, stay) with this rule's what, who and when."""
    b = base
    return Obligation(code, owner, b.patient, b.focus, start, deadline, b.requester, b.encounter)


async def _complete_one(
    uow: UnitOfWork, focus: str, code: str, owner: str, done: datetime, output: str, label: str
) -> None:
    """Complete the Task (focus, code, owner) if it is open."""
    version = await uow.current("Task", task_id(focus, code, owner))
    if version is not None and not version.deleted:
        await complete(uow, version, done, output, label)


async def _acknowledged(uow: UnitOfWork, ack: dict[str, Any], sender: str, sent: datetime) -> None:
    """R-DIS-05: the acknowledging organisation's Task for each notice it answers."""
    for notice in map(ref, ack.get("inResponseTo") or []):
        if notice and notice.startswith("Communication/"):
            output = f"Communication/{ack['id']}"
            await _complete_one(
                uow, notice, "kvittera-meddelande", sender, sent, output, "Kvittens"
            )


async def _acknowledgements_so_far(uow: UnitOfWork, notice: dict[str, Any], patient: str) -> None:
    this = f"Communication/{notice['id']}"
    for ack in await _messages(uow, "kvittens", subject=patient):
        sender, sent = ref(ack.get("sender")), moment(ack.get("sent"))
        if sender and sent and this in map(ref, ack.get("inResponseTo") or []):
            await _acknowledged(uow, ack, sender, sent)


async def _consents(uow: UnitOfWork, patient: str) -> bool:
    """R-DIS-10: an active SIP consent of the patient."""
    pairs = [("patient", patient), ("status", "active"), ("category", f"{CONSENT_KIND}|sip")]
    return bool(await find(uow, "Consent", pairs))


async def _invited(uow: UnitOfWork, patient: str, done: datetime, output: str) -> None:
    """R-DIS-10: an invitation sent at or after the ready-for-discharge notice completes."""
    for task in await open_tasks(uow, code="skicka-sip-kallelse", patient=patient):
        start = moment(resource_of(task).get("authoredOn"))
        if start is None or done >= start:
            await complete(uow, task, done, output, "Kallelse")


async def _invitations_so_far(uow: UnitOfWork, patient: str, since: datetime) -> None:
    for letter in await _messages(uow, "kallelse", subject=patient):
        sent = moment(letter.get("sent"))
        if sent and sent >= since:
            await _invited(uow, patient, sent, f"Communication/{letter['id']}")
    for version in await find(uow, "Appointment", [("actor", patient)]):
        meeting = resource_of(version)
        created = moment(meeting.get("created"))
        if _is_sip_meeting(meeting) and created and created >= since:
            await _invited(uow, patient, created, f"Appointment/{meeting['id']}")


def _is_sip_meeting(meeting: dict[str, Any]) -> bool:
    return "sip" in codes(meeting.get("serviceType"), MEETING_PURPOSE)


async def _sip_plans(uow: UnitOfWork, patient: str) -> list[dict[str, Any]]:
    pairs = [("subject", patient), ("status", "active"), ("category", f"{PLAN_TYPE}|SIP")]
    return [resource_of(v) for v in await find(uow, "CarePlan", pairs)]


async def appointment(uow: UnitOfWork, meeting: dict[str, Any]) -> None:
    """A SIP meeting: its invitation completes R-DIS-10; held (fulfilled) opens R-SIP-06."""
    if not _is_sip_meeting(meeting):
        return
    this = f"Appointment/{meeting['id']}"
    actors = [ref(p.get("actor")) for p in meeting.get("participant") or []]
    patient = next((a for a in actors if a and a.startswith("Patient/")), None)
    if patient is None:
        return
    created = moment(meeting.get("created"))
    if created is not None and meeting.get("status") != "cancelled":
        await _invited(uow, patient, created, this)
    end = moment(meeting.get("end"))
    if meeting.get("status") != "fulfilled" or end is None:
        return
    for participant in meeting.get("participant") or []:
        for extension in participant.get("extension") or []:
            owner = ref(extension.get("valueReference"))
            if extension.get("url") == PARTICIPANT_ORGANIZATION_URL and owner:
                due = Obligation("dokumentera-plan", owner, patient, this, end, end_of_day(end, 3))
                await open_task(uow, due)


async def care_plan(uow: UnitOfWork, plan: dict[str, Any], since: datetime | None = None) -> None:
    """R-DIS-14: an active SIP CarePlan, made after discharge, completes `uppratta-sip`."""
    if plan.get("status") != "active" or "SIP" not in codes(plan.get("category"), PLAN_TYPE):
        return
    patient = ref(plan.get("subject"))
    made = moment(plan.get("created")) or moment((plan.get("period") or {}).get("start"))
    if patient is None or made is None:
        return
    for task in await open_tasks(uow, code="uppratta-sip", patient=patient):
        start = since or moment(resource_of(task).get("authoredOn"))
        if start is None or made >= start:
            await complete(uow, task, made, f"CarePlan/{plan['id']}", "Samordnad individuell plan")

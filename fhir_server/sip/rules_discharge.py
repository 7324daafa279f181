"""The discharge process's obligations (lag 2017:612): which notice or which end of a stay
opens which obligation, for whom, due when, and which act completes it.

- R-DIS-05 `kvittera-meddelande`: each recipient Organization of a notice acknowledges by the
  next cut-off (12:00) after `received`, by a `kvittens` in response to it.
- R-DIS-06 `fylla-i-planeringsunderlag`: the ward fills in the planning basis within 24 h of
  the admission notice's `sent`, by a `planeringsunderlag` message of the stay.
- R-DIS-07 `utse-fast-vardkontakt`: see rules_care_contact.
- R-DIS-10 `skicka-sip-kallelse`: each primary-care recipient of the ready-for-discharge
  notice invites to the SIP meeting by the end of the 3rd day after `sent`, when the patient
  consents to a SIP and the stay's planning basis shows a need of coordination that is not
  only social services; completed by an invitation (rules_invitations).
- R-DIS-12 `skicka-utskrivningsmeddelande`: when a stay with a completed admission notice
  ends (`Encounter.period.end`), the notice's sender sends the discharge notice that day.
- R-DIS-14 `uppratta-sip`: each primary-care recipient of the discharge notice establishes a
  SIP by the end of the 21st day after the stay ended, unless the planning basis says no SIP
  is needed or the patient has a plan already (then rules_plan follows that plan up).

Why deadlines come from the act: a notice's `received`/`sent`, a stay's `period.end` are what
the law counts from; a late upload must not move a deadline. Opening also looks for an act
that fulfilled the obligation already (a transaction may carry the acknowledgement before the
notice), so the result does not depend on write order.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from fhir_server.sip import rules_care_contact, rules_follow_up, rules_invitations, rules_plan
from fhir_server.sip.clock import Clock, moment, next_cutoff
from fhir_server.sip.planning_basis import is_planning_basis
from fhir_server.sip.resources import CONSENT_KIND, MESSAGE_TYPE, codes
from fhir_server.sip.rules_support import (
    complete_one,
    due,
    end_of_day,
    hours_after,
    messages,
    primary_care,
    read,
    ref,
    stay_needs,
)
from fhir_server.sip.tasks import Obligation, cancel, complete, find, open_task, open_tasks
from fhir_server.storage.port import UnitOfWork

ADMISSION, READY, DISCHARGE = "inskrivningsmeddelande", "utskrivningsklar", "utskrivningsmeddelande"
NOTICES = frozenset({ADMISSION, READY, DISCHARGE})
SEND_DISCHARGE_NOTICE = "skicka-utskrivningsmeddelande"


async def communication(uow: UnitOfWork, comm: dict[str, Any], cutoff: time, clock: Clock) -> None:
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
    if DISCHARGE in kinds and encounter and sent:  # R-DIS-12
        for task in await open_tasks(uow, code=SEND_DISCHARGE_NOTICE, encounter=encounter):
            await complete(uow, task, sent, this, "Utskrivningsmeddelande")
    if kinds & NOTICES and patient and sender and sent:
        base = Obligation("", "", patient, this, sent, sent, sender, encounter)
        await _notice(uow, comm, kinds, base, cutoff, clock)


async def _notice(
    uow: UnitOfWork,
    comm: dict[str, Any],
    kinds: set[str],
    base: Obligation,
    cutoff: time,
    clock: Clock,
) -> None:
    """A notice of the discharge process: the obligations it opens."""
    patient, sender, sent = base.patient, str(base.requester), base.start
    recipients = [
        r for r in map(ref, comm.get("recipient") or []) if r and r.startswith("Organization/")
    ]
    received = moment(comm.get("received")) or sent
    for owner in recipients:  # R-DIS-05
        opened = due(base, "kvittera-meddelande", owner, received, next_cutoff(received, cutoff))
        await open_task(uow, opened)
    await _acknowledgements_so_far(uow, comm, patient)
    if ADMISSION in kinds:
        await _planning_basis_due(uow, base)  # R-DIS-06
        units = await primary_care(uow, recipients)
        await rules_care_contact.admitted(uow, comm, base, units, clock)  # R-DIS-07
        stay = await read(uow, base.encounter)
        if stay is not None:
            await _discharge_notice_due(uow, stay, sender, patient)  # R-DIS-12
    if READY in kinds and await _sip_invitation_due(uow, base):  # R-DIS-10
        for owner in await primary_care(uow, recipients):
            opened = due(base, rules_invitations.SIP_INVITATION, owner, sent, end_of_day(sent, 3))
            await open_task(uow, opened)
        await rules_invitations.so_far(uow, rules_invitations.SIP_INVITATION, patient, sent)
    if DISCHARGE in kinds:  # R-DIS-14
        await _sip_due(uow, base, recipients)


async def _planning_basis_due(uow: UnitOfWork, base: Obligation) -> None:
    """R-DIS-06, completed at once by a planning-basis message of the stay already sent."""
    sender = str(base.requester)
    code = "fylla-i-planeringsunderlag"
    await open_task(uow, due(base, code, sender, base.start, hours_after(base.start, 24)))
    if base.encounter:
        for basis in await messages(uow, "planeringsunderlag", encounter=base.encounter):
            done = moment(basis.get("sent"))
            if done:
                output = f"Communication/{basis['id']}"
                await complete_one(
                    uow, base.focus, code, sender, done, output, "Planeringsunderlag"
                )


async def _sip_invitation_due(uow: UnitOfWork, base: Obligation) -> bool:
    """R-DIS-10: a consenting patient who needs a SIP (not when the newest planning basis
    says no coordination is needed, or that only social services are)."""
    pairs = [("patient", base.patient), ("status", "active"), ("category", f"{CONSENT_KIND}|sip")]
    if not await find(uow, "Consent", pairs):
        return False
    needs = await stay_needs(uow, base.encounter)
    return needs.sip_needed is not False and not needs.only_social_services


async def _sip_due(uow: UnitOfWork, base: Obligation, recipients: list[str]) -> None:
    """R-DIS-14 at the discharge notice: a plan made before the discharge is followed up;
    otherwise, unless the planning basis says no SIP is needed, one is established."""
    stay = await read(uow, base.encounter)
    left = moment(((stay or {}).get("period") or {}).get("end")) or base.start
    if await rules_follow_up.follow_up_after_discharge(uow, base, left):
        return
    if (await stay_needs(uow, base.encounter)).sip_needed is False:
        return
    for owner in await primary_care(uow, recipients):
        await open_task(uow, due(base, rules_plan.ESTABLISH, owner, left, end_of_day(left, 21)))
    await rules_plan.established_so_far(uow, base.patient, left)


async def planning_basis(uow: UnitOfWork, response: dict[str, Any]) -> None:
    """R-DIS-10: a planning basis that now says no SIP is needed, or only social services,
    cancels the stay's open SIP invitation obligations."""
    stay = ref(response.get("encounter"))
    if not is_planning_basis(response) or stay is None:
        return
    needs = await stay_needs(uow, stay, response)
    if needs.sip_needed is not False and not needs.only_social_services:
        return
    for version in await open_tasks(uow, code=rules_invitations.SIP_INVITATION, encounter=stay):
        await cancel(uow, version, "Ingen SIP behövs enligt planeringsunderlaget")


async def encounter(uow: UnitOfWork, stay: dict[str, Any]) -> None:
    """The stay's Encounter is written: R-DIS-07 deadlines follow it; ended, R-DIS-12."""
    await rules_care_contact.stay_changed(uow, stay)
    patient = ref(stay.get("subject"))
    if patient is None or moment((stay.get("period") or {}).get("end")) is None:
        return
    this = f"Encounter/{stay['id']}"
    senders = {
        sender
        for notice in await messages(uow, ADMISSION, encounter=this)
        if (sender := ref(notice.get("sender")))
    }
    for sender in sorted(senders):
        await _discharge_notice_due(uow, stay, sender, patient)


async def _discharge_notice_due(
    uow: UnitOfWork, stay: dict[str, Any], sender: str, patient: str
) -> None:
    """R-DIS-12 for an ended stay, completed at once by a discharge notice already sent."""
    left = moment((stay.get("period") or {}).get("end"))
    if left is None:
        return
    this = f"Encounter/{stay['id']}"
    opened = Obligation(
        SEND_DISCHARGE_NOTICE, sender, patient, this, left, end_of_day(left), encounter=this
    )
    await open_task(uow, opened)
    for notice in await messages(uow, DISCHARGE, encounter=this):
        done = moment(notice.get("sent"))
        if done:
            output = f"Communication/{notice['id']}"
            label = "Utskrivningsmeddelande"
            await complete_one(uow, this, SEND_DISCHARGE_NOTICE, sender, done, output, label)


async def _acknowledged(uow: UnitOfWork, ack: dict[str, Any], sender: str, sent: datetime) -> None:
    """R-DIS-05: the acknowledging organisation's Task for each notice it answers."""
    for notice in map(ref, ack.get("inResponseTo") or []):
        if notice and notice.startswith("Communication/"):
            output = f"Communication/{ack['id']}"
            await complete_one(uow, notice, "kvittera-meddelande", sender, sent, output, "Kvittens")


async def _acknowledgements_so_far(uow: UnitOfWork, notice: dict[str, Any], patient: str) -> None:
    this = f"Communication/{notice['id']}"
    for ack in await messages(uow, "kvittens", subject=patient):
        sender, sent = ref(ack.get("sender")), moment(ack.get("sent"))
        if sender and sent and this in map(ref, ack.get("inResponseTo") or []):
            await _acknowledged(uow, ack, sender, sent)

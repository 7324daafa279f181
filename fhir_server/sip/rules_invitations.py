"""What completes an obligation to invite: `skicka-sip-kallelse` (R-DIS-10 after the
ready-for-discharge notice, R-SIP-02 after an outpatient need) and
`skicka-uppfoljningskallelse` (R-SIP-09, once a follow-up date is agreed).

An invitation is a kallelse letter (Communication, done at `sent`) or the meeting itself
booked (Appointment not cancelled, done at `created`), for the patient, at or after the
obligation began. From whom does not matter: whoever invites fulfils the duty.

Which duty: a meeting invites to what it is for (`sip` or `uppfoljning`); a letter to what
the meeting it is `about` is for (the invitation-letter profile requires one). A letter
whose meeting is not stored here, or has neither purpose, counts for both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_server.sip.clock import moment
from fhir_server.sip.resources import MESSAGE_TYPE, codes, resource_of
from fhir_server.sip.rules_support import messages, patient_of, purposes, read, ref
from fhir_server.sip.tasks import complete, find, open_tasks
from fhir_server.storage.port import UnitOfWork

SIP_INVITATION = "skicka-sip-kallelse"
FOLLOW_UP_INVITATION = "skicka-uppfoljningskallelse"
BY_PURPOSE = {"sip": SIP_INVITATION, "uppfoljning": FOLLOW_UP_INVITATION}
LABEL = "Kallelse"
KALLELSE = "kallelse"


def meeting_invites(meeting: dict[str, Any]) -> set[str]:
    """The invitation duties a meeting's booking fulfils."""
    return {BY_PURPOSE[p] for p in purposes(meeting) if p in BY_PURPOSE}


async def letter_invites(uow: UnitOfWork, letter: dict[str, Any]) -> set[str]:
    """The invitation duties a kallelse letter fulfils."""
    found: set[str] = set()
    for about in map(ref, letter.get("about") or []):
        if about and about.startswith("Appointment/"):
            found |= meeting_invites(await read(uow, about) or {})
    return found or set(BY_PURPOSE.values())


async def communication(uow: UnitOfWork, comm: dict[str, Any]) -> None:
    """A Communication is written: a completed kallelse letter is an invitation."""
    if comm.get("status") != "completed" or KALLELSE not in codes(
        comm.get("category"), MESSAGE_TYPE
    ):
        return
    patient, sent = ref(comm.get("subject")), moment(comm.get("sent"))
    if patient and sent:
        for code in await letter_invites(uow, comm):
            await invited(uow, code, patient, sent, f"Communication/{comm['id']}")


async def meeting(uow: UnitOfWork, appointment: dict[str, Any]) -> None:
    """A meeting, written now: booked (not cancelled), it is an invitation."""
    patient, created = patient_of(appointment), moment(appointment.get("created"))
    if patient is None or created is None or appointment.get("status") == "cancelled":
        return
    for code in meeting_invites(appointment):
        await invited(uow, code, patient, created, f"Appointment/{appointment['id']}")


async def invited(uow: UnitOfWork, code: str, patient: str, done: datetime, output: str) -> None:
    """Complete the patient's open `code` obligations that began at or before `done`."""
    for task in await open_tasks(uow, code=code, patient=patient):
        start = moment(resource_of(task).get("authoredOn"))
        if start is None or done >= start:
            await complete(uow, task, done, output, LABEL)


async def so_far(uow: UnitOfWork, code: str, patient: str, since: datetime) -> None:
    """An obligation just opened: the invitations already written since it began."""
    for sent_letter in await messages(uow, KALLELSE, subject=patient):
        sent = moment(sent_letter.get("sent"))
        if sent and sent >= since and code in await letter_invites(uow, sent_letter):
            await invited(uow, code, patient, sent, f"Communication/{sent_letter['id']}")
    for version in await find(uow, "Appointment", [("actor", patient)]):
        booked = resource_of(version)
        created = moment(booked.get("created"))
        if booked.get("status") == "cancelled" or created is None or created < since:
            continue
        if code in meeting_invites(booked):
            await invited(uow, code, patient, created, f"Appointment/{booked['id']}")

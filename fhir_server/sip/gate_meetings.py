"""Gates on meetings (Appointment with a sip-meeting-purpose).

R-MTG-01: an actor/planning meeting has no Patient or RelatedPerson participant and is called
by an outpatient unit. The caller is the organisation of the first participant that carries
the extension sip-participant-organization (until authentication names the writer); its
sip-unit-type must be primary care, psychiatric outpatient care or a municipal unit (or, with
no unit type, its principal type a municipality); an unknown caller is refused.
R-MTG-04: a meeting note (`comment`) is brief; nothing marks a text as "not record content",
so only its length is checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.sip.gate_messages import brief_note
from fhir_server.sip.resources import (
    MEETING_PURPOSE,
    PARTICIPANT_ORGANIZATION_URL,
    PRINCIPAL_TYPE,
    UNIT_TYPE,
    codes,
    current,
    local_id,
    reference,
    refused,
)
from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context

ACTOR_MEETING = "aktors-och-planeringsmote"
OUTPATIENT_UNITS = frozenset(
    {
        "narsjukvard",
        "psykiatrisk-oppenvard",
        "kommun",
        "socialtjanst",
        "kommunal-halso-och-sjukvard",
        "sarskilt-boende",
    }
)
PERSONS = ("Patient", "RelatedPerson")


async def check_meeting(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, meeting: dict[str, Any]
) -> None:
    purposes = codes(meeting.get("serviceType"), MEETING_PURPOSE)
    if not purposes:
        return
    if ACTOR_MEETING in purposes:
        without_the_person(meeting)
        await called_by_outpatient_unit(uow, meeting)
    brief_note(meeting.get("comment"), "Appointment.comment")


def without_the_person(meeting: dict[str, Any]) -> None:
    for i, participant in enumerate(meeting.get("participant") or []):
        actor = participant.get("actor")
        if any(local_id(actor, type) for type in PERSONS):
            raise refused(
                "R-MTG-01",
                f"an actor/planning meeting is held without the person and next of kin: "
                f"{reference(actor)} may not take part",
                f"Appointment.participant[{i}].actor",
            )


async def called_by_outpatient_unit(uow: UnitOfWork, meeting: dict[str, Any]) -> None:
    for i, participant in enumerate(meeting.get("participant") or []):
        for extension in participant.get("extension") or []:
            if extension.get("url") == PARTICIPANT_ORGANIZATION_URL:
                where = f"Appointment.participant[{i}].extension('{PARTICIPANT_ORGANIZATION_URL}')"
                await outpatient(uow, extension.get("valueReference"), where)
                return
    raise refused(
        "R-MTG-01",
        "an actor/planning meeting is called by an outpatient unit: the first participant "
        "must name its organisation (sip-participant-organization)",
        "Appointment.participant",
    )


async def outpatient(uow: UnitOfWork, caller: Any, where: str) -> None:
    organization = await current(uow, "Organization", local_id(caller, "Organization"))
    types = (organization or {}).get("type")
    units = codes(types, UNIT_TYPE)
    if not units and "kommun" in codes(types, PRINCIPAL_TYPE):
        return  # a municipality itself, no unit named
    if not units & OUTPATIENT_UNITS:
        shown = ", ".join(sorted(units)) or "unknown"
        raise refused(
            "R-MTG-01",
            f"only primary care, psychiatric outpatient care or a municipal unit calls an "
            f"actor/planning meeting; the caller {reference(caller)} is {shown}",
            where,
        )

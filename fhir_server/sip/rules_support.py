"""What the obligation rules share: the acts' times and references, deadline arithmetic, and
the reads several rules make (the unit an actor works for, primary-care recipients, the
stay's planning basis, the patient's SIP plans, a meeting's purpose and patient).

Why deadlines are computed here: a deadline counted in days ends at 23:59:59 Stockholm time
on the last day (as in examples/sip-case/Task-establish-sip.json), one counted in hours is
that many elapsed hours later, one counted in working days skips weekends, Swedish public
holidays and the eves counted as Sundays (`clock.add_working_days`). Every rule counts the
same way, from the act's own recorded time, never from the moment of the HTTP request.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fhir_server.sip.clock import STOCKHOLM, add_working_days, moment
from fhir_server.sip.planning_basis import Needs, latest
from fhir_server.sip.resources import (
    MEETING_PURPOSE,
    MESSAGE_TYPE,
    PLAN_TYPE,
    SIP,
    UNIT_TYPE,
    codes,
    current,
    reference,
    resource_of,
)
from fhir_server.sip.tasks import Obligation, complete, find, task_id
from fhir_server.storage.port import UnitOfWork

PRIMARY_CARE = "narsjukvard"  # region-financed outpatient care: the fast vårdkontakt's unit
FOLLOW_UP_URL = f"{SIP}/StructureDefinition/sip-follow-up"
END_OF_DAY = time(23, 59, 59)


def ref(value: Any) -> str | None:
    """A `Type/id` reference as written, else None."""
    found = reference(value)
    return found if found is not None and "/" in found else None


def hours_after(start: datetime, hours: int) -> datetime:
    """Elapsed hours (24 h across a DST change is 23 or 25 on the wall clock)."""
    return (start.astimezone(UTC) + timedelta(hours=hours)).astimezone(STOCKHOLM)


def end_of_day(start: datetime | date, days: int = 0) -> datetime:
    """23:59:59 Stockholm time on the day `days` calendar days after `start`."""
    day = start.astimezone(STOCKHOLM).date() if isinstance(start, datetime) else start
    return datetime.combine(day + timedelta(days=days), END_OF_DAY, STOCKHOLM)


def end_of_working_day(start: datetime, days: int) -> datetime:
    """23:59:59 on the `days`-th working day after `start` (R-SIP-02's "vardagar")."""
    return end_of_day(add_working_days(start.astimezone(STOCKHOLM).date(), days))


def end_of_day_a_year_after(start: datetime) -> datetime:
    """23:59:59 on the same date a year later (29 February: 28 February)."""
    day = start.astimezone(STOCKHOLM).date()
    try:
        return end_of_day(day.replace(year=day.year + 1))
    except ValueError:
        return end_of_day(date(day.year + 1, 2, 28))


def due(base: Obligation, code: str, owner: str, start: datetime, deadline: datetime) -> Obligation:
    """`base` (patient, focus, requester, stay) with this rule's what, who and when."""
    return replace(base, code=code, owner=owner, start=start, deadline=deadline)


async def read(uow: UnitOfWork, literal: str | None) -> dict[str, Any] | None:
    """The current resource a `Type/id` reference names, as this unit of work sees it."""
    if not literal:
        return None
    type, _, id = literal.partition("/")
    return await current(uow, type, id)


async def unit_of(uow: UnitOfWork, actor: str | None) -> str | None:
    """The organisation an actor acts for: an Organization itself, a PractitionerRole's
    `organization`; None for anyone else (a Practitioner works for no one unit)."""
    if actor is None:
        return None
    if actor.startswith("Organization/"):
        return actor
    if actor.startswith("PractitionerRole/"):
        role = await read(uow, actor)
        found = ref((role or {}).get("organization"))
        return found if found and found.startswith("Organization/") else None
    return None


async def primary_care(uow: UnitOfWork, recipients: list[str]) -> list[str]:
    """The recipients that are region-financed outpatient (primary care) units."""
    found = []
    for recipient in recipients:
        organization = await read(uow, recipient)
        if organization and PRIMARY_CARE in codes(organization.get("type"), UNIT_TYPE):
            found.append(recipient)
    return found


async def messages(uow: UnitOfWork, code: str, **criteria: str) -> list[dict[str, Any]]:
    """The completed Communications of one sip-message-type matching search `criteria`."""
    pairs = [("category", f"{MESSAGE_TYPE}|{code}"), ("status", "completed")]
    pairs += list(criteria.items())
    return [resource_of(v) for v in await find(uow, "Communication", pairs)]


async def stay_needs(
    uow: UnitOfWork, encounter: str | None, written: dict[str, Any] | None = None
) -> Needs:
    """What the stay's newest planning basis says about the patient's needs (`written`: a
    response about to be stored, counted with the stored ones)."""
    if encounter is None:
        return latest([])
    found = await find(uow, "QuestionnaireResponse", [("encounter", encounter)])
    responses = {v.id: resource_of(v) for v in found}
    if written is not None:
        responses[written["id"]] = written
    return latest(list(responses.values()))  # `latest` keeps the planning bases


def plan_made(plan: dict[str, Any]) -> datetime | None:
    """When a plan was made: `created`, else the start of its period."""
    return moment(plan.get("created")) or moment((plan.get("period") or {}).get("start"))


async def sip_plans(uow: UnitOfWork, patient: str, status: str = "active") -> list[dict[str, Any]]:
    """The patient's SIP CarePlans of `status` (a search value: "draft,active" is either)."""
    pairs = [("subject", patient), ("status", status), ("category", f"{PLAN_TYPE}|SIP")]
    return [resource_of(v) for v in await find(uow, "CarePlan", pairs)]


def follow_up(plan: dict[str, Any]) -> tuple[str | None, str | None]:
    """The plan's agreed follow-up (extension sip-follow-up): its date and who is responsible."""
    for extension in plan.get("extension") or []:
        if extension.get("url") != FOLLOW_UP_URL:
            continue
        parts = {e.get("url"): e for e in extension.get("extension") or []}
        day = (parts.get("date") or {}).get("valueDate")
        responsible = ref((parts.get("responsible") or {}).get("valueReference"))
        return (day if isinstance(day, str) else None), responsible
    return None, None


def purposes(meeting: dict[str, Any]) -> set[str]:
    """What a meeting is for (sip-meeting-purpose): `sip`, `uppfoljning`, …"""
    return codes(meeting.get("serviceType"), MEETING_PURPOSE)


def patient_of(meeting: dict[str, Any]) -> str | None:
    """The Patient taking part in a meeting."""
    actors = [ref(p.get("actor")) for p in meeting.get("participant") or []]
    return next((a for a in actors if a and a.startswith("Patient/")), None)


async def complete_one(
    uow: UnitOfWork, focus: str, code: str, owner: str, done: datetime, output: str, label: str
) -> None:
    """Complete the Task (focus, code, owner) if it is open."""
    version = await uow.current("Task", task_id(focus, code, owner))
    if version is not None and not version.deleted:
        await complete(uow, version, done, output, label)

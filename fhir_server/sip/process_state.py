"""Which acts open and finish a process (EpisodeOfCare), run from `process.on_write` before
the obligation rules so that the Tasks an act opens can link the process it opened.

The status is derived from the acts: a discharge process is active from the stay's first
completed admission notice and finished when the discharge notice is sent (`period.end` =
its `sent`); a SIP process is active while the SIP is planned (a `sip-behov` message, a SIP
meeting, a draft plan) or a plan is active, and finished when the plan is closed. A process
that is both (SPU and SIP) finishes when both parts have. Death and a withdrawn consent are
`closure.py`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.sip.clock import moment
from fhir_server.sip.episodes import (
    DISCHARGE,
    OPEN,
    SIP_PROCESS,
    Process,
    activate,
    closure_reason,
    create,
    discharge_id,
    find,
    finish,
    link_tasks,
    named_discharge,
    new_process,
    person_process,
    retire,
    sip_id,
    stay_process,
    stored,
)
from fhir_server.sip.resources import (
    CONSENT_KIND,
    MEETING_PURPOSE,
    MESSAGE_TYPE,
    PARTICIPANT_ORGANIZATION_URL,
    PLAN_CLOSED,
    PLAN_TYPE,
    codes,
    current,
    is_deceased,
    local_id,
    reference,
    resource_of,
)
from fhir_server.sip.rules_support import unit_of
from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from datetime import datetime

    from fhir_server.interactions.context import Context

PLANNING = ("draft", "active", "on-hold")  # a SIP plan that keeps its process open
NOT_HELD = ("cancelled", "entered-in-error", "noshow")


async def follow(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, resource: dict[str, Any]
) -> None:
    """Open, finish or merge the process `resource` (about to be stored) concerns."""
    resource = {**resource, "id": version.id}
    if version.type == "Communication":
        await _message(ctx, uow, resource)
    elif version.type == "Appointment":
        await _meeting(ctx, uow, resource)
    elif version.type == "CarePlan":
        await _plan(ctx, uow, resource)
    elif version.type == "Encounter":
        await _stay(uow, resource)
    elif version.type == "EpisodeOfCare":
        await _client_process(uow, resource)


def _ref(value: Any, type: str) -> str | None:
    id = local_id(value, type)
    return f"{type}/{id}" if id else None


# -- the discharge process ------------------------------------------------------------------


async def _message(ctx: Context, uow: UnitOfWork, comm: dict[str, Any]) -> None:
    if comm.get("status") != "completed":
        return
    kinds = codes(comm.get("category"), MESSAGE_TYPE)
    patient, stay = _ref(comm.get("subject"), "Patient"), _ref(comm.get("encounter"), "Encounter")
    sender, sent = reference(comm.get("sender")), moment(comm.get("sent"))
    if patient is None or sent is None:
        return
    ward = await unit_of(uow, sender) if "inskrivningsmeddelande" in kinds else None
    if ward and stay:
        recipients = [_ref(r, "Organization") for r in comm.get("recipient") or []]
        await admitted(uow, stay, patient, ward, sent, [r for r in recipients if r])
    if "utskrivningsmeddelande" in kinds and stay:
        await discharged(uow, stay, sent)
    if "sip-behov" in kinds:  # R-SIP-02, R-SIP-03: who noticed the need coordinates
        manager = await unit_of(uow, sender)
        await sip_planned(uow, patient, manager, sent, comm.get("about"))


async def admitted(
    uow: UnitOfWork, stay: str, patient: str, ward: str, sent: datetime, recipients: list[str]
) -> None:
    """The stay's first completed admission notice opens its discharge process, managed by
    the ward that sent it, with the recipients taking part (R-ACC-01)."""
    found = await stay_process(uow, stay)
    if found is not None:
        if found.episode.get("status") in ("planned", "waitlist"):
            await activate(uow, found, sent)
        return
    if await deceased(uow, patient):
        return
    episode = new_process(discharge_id(stay), DISCHARGE, patient, ward, sent, recipients)
    await create(uow, episode)
    await link_tasks(uow, f"EpisodeOfCare/{episode['id']}", [("encounter", stay)])


async def discharged(
    uow: UnitOfWork, stay: str, sent: datetime, found: Process | None = None
) -> None:
    """The discharge notice finishes the stay's discharge process at its `sent`; a process
    that is also the SIP stays open while the SIP does."""
    found = found or await stay_process(uow, stay)
    if found is None or not found.is_open:
        return
    patient = reference(found.episode.get("patient"))
    if SIP_PROCESS in found.kinds and patient and await sip_open(uow, patient):
        return
    await finish(uow, found, sent)


async def _stay(uow: UnitOfWork, encounter: dict[str, Any]) -> None:
    """A stay now naming its own discharge process: the one the server made for it merges
    into that, which then follows the stay's discharge notice if one was sent."""
    stay = f"Encounter/{encounter['id']}"
    duplicate = await stored(uow, discharge_id(stay), stay)
    named = await named_discharge(uow, encounter.get("episodeOfCare"))
    if duplicate is None or named is None or named.version.id == duplicate.version.id:
        return
    await retire(uow, duplicate, named.ref)
    notices = await _notices(uow, stay, "utskrivningsmeddelande")
    sent = min(filter(None, (moment(n.get("sent")) for n in notices)), default=None)
    if sent is not None:
        await discharged(uow, stay, sent, named)


async def _notices(uow: UnitOfWork, stay: str, code: str) -> list[dict[str, Any]]:
    pairs = [("encounter", stay), ("category", f"{MESSAGE_TYPE}|{code}"), ("status", "completed")]
    return [resource_of(v) for v in await find(uow, "Communication", pairs)]


async def discharge_open(uow: UnitOfWork, process: Process) -> bool:
    """The discharge part of a process is open while a stay naming it has no completed
    discharge notice."""
    if DISCHARGE not in process.kinds:
        return False
    for stay in await find(uow, "Encounter", [("episode-of-care", process.ref)]):
        if not await _notices(uow, f"Encounter/{stay.id}", "utskrivningsmeddelande"):
            return True
    return False


async def _client_process(uow: UnitOfWork, episode: dict[str, Any]) -> None:
    """A client's own process: the ones the server made before it was stored (for the stays
    that name it; for its person's SIP) merge into it."""
    this = f"EpisodeOfCare/{episode['id']}"
    kinds = codes(episode.get("type"), PLAN_TYPE)
    if DISCHARGE in kinds:
        for stay in await find(uow, "Encounter", [("episode-of-care", this)]):
            duplicate = await stored(uow, discharge_id(f"Encounter/{stay.id}"))
            if duplicate is not None and duplicate.version.id != episode["id"]:
                await retire(uow, duplicate, this)
    patient = _ref(episode.get("patient"), "Patient")
    if SIP_PROCESS in kinds and patient and episode.get("status") in OPEN:
        duplicate = await stored(uow, sip_id(patient))
        if duplicate is not None and duplicate.is_open and duplicate.version.id != episode["id"]:
            await retire(uow, duplicate, this)


# -- the SIP process ------------------------------------------------------------------------


async def _meeting(ctx: Context, uow: UnitOfWork, meeting: dict[str, Any]) -> None:
    """A SIP meeting plans the SIP. Its process is managed by the first organisation a
    participant represents (the inviting unit is not recorded on an Appointment); it starts
    at the meeting's `created`, else at the clock's now (the act has no other time)."""
    if "sip" not in codes(meeting.get("serviceType"), MEETING_PURPOSE):
        return
    if meeting.get("status") in NOT_HELD:
        return
    actors = [_ref(p.get("actor"), "Patient") for p in meeting.get("participant") or []]
    patient = next((a for a in actors if a), None)
    if patient is None:
        return
    represented = [
        _ref(e.get("valueReference"), "Organization")
        for p in meeting.get("participant") or []
        for e in p.get("extension") or []
        if e.get("url") == PARTICIPANT_ORGANIZATION_URL
    ]
    manager = next(filter(None, represented), None)
    at = moment(meeting.get("created")) or ctx.clock.now()
    await sip_planned(uow, patient, manager, at, meeting.get("supportingInformation"))


async def _plan(ctx: Context, uow: UnitOfWork, plan: dict[str, Any]) -> None:
    """A SIP plan: drafted or active it keeps the SIP process open (from `created`, else the
    plan's start, else the clock's now); closed it finishes the process at the clock's now
    (a CarePlan records no closing time), with the plan's closure reason."""
    if "SIP" not in codes(plan.get("category"), PLAN_TYPE):
        return
    patient = _ref(plan.get("subject"), "Patient")
    if patient is None:
        return
    status = plan.get("status")
    if status in PLANNING:
        made = moment(plan.get("created")) or moment((plan.get("period") or {}).get("start"))
        manager = await unit_of(uow, reference(plan.get("author")))
        made = made or ctx.clock.now()
        await sip_planned(uow, patient, manager, made, plan.get("supportingInfo"))
    elif status in PLAN_CLOSED:
        if await _open_plans(uow, patient, leaving=plan["id"]):
            return
        found = await person_process(uow, patient, plan.get("supportingInfo"))
        if found is None or not found.is_open or await discharge_open(uow, found):
            return
        await finish(uow, found, ctx.clock.now(), closure_reason(plan))


async def sip_planned(
    uow: UnitOfWork, patient: str, manager: str | None, at: datetime, named: Any
) -> None:
    """The person's SIP process is open: found, reopened (the server's, by an act after it
    finished) or made, managed by `manager` (none known: nothing is made)."""
    found = await person_process(uow, patient, named)
    if found is not None and found.is_open:
        return
    if await deceased(uow, patient):
        return
    if found is not None:
        ended = moment((found.episode.get("period") or {}).get("end"))
        if ended is not None and at > ended:
            await activate(uow, found, at)
        return
    if manager is not None:
        await create(uow, new_process(sip_id(patient), SIP_PROCESS, patient, manager, at))
        waiting = [("patient", patient), ("encounter:missing", "true")]
        await link_tasks(uow, f"EpisodeOfCare/{sip_id(patient)}", waiting)


async def sip_open(uow: UnitOfWork, patient: str) -> bool:
    """The SIP part of a process is open while a SIP plan of the person is drafted or active,
    or, before any plan closed, while the person has not withdrawn consent."""
    pairs = [("subject", patient), ("category", f"{PLAN_TYPE}|SIP")]
    statuses = {resource_of(v).get("status") for v in await find(uow, "CarePlan", pairs)}
    if statuses & set(PLANNING):
        return True
    if statuses & set(PLAN_CLOSED):
        return False
    return not await consent_withdrawn(uow, patient)


async def consent_withdrawn(uow: UnitOfWork, patient: str) -> bool:
    """No active SIP consent of the person, and one inactive or rejected."""
    statuses = set((await sip_consents(uow, patient)).values())
    return "active" not in statuses and bool(statuses & {"inactive", "rejected"})


async def sip_consents(uow: UnitOfWork, patient: str) -> dict[str, Any]:
    """The person's SIP consents: id -> status."""
    pairs = [("patient", patient), ("category", f"{CONSENT_KIND}|sip")]
    return {v.id: resource_of(v).get("status") for v in await find(uow, "Consent", pairs)}


async def _open_plans(uow: UnitOfWork, patient: str, leaving: str) -> list[ResourceVersion]:
    pairs = [("subject", patient), ("category", f"{PLAN_TYPE}|SIP"), ("status", ",".join(PLANNING))]
    return [v for v in await find(uow, "CarePlan", pairs) if v.id != leaving]


async def deceased(uow: UnitOfWork, patient: str) -> bool:
    """Whether the stored Patient died: no process is opened for them any more (R-DIS-13)."""
    person = await current(uow, "Patient", patient.partition("/")[2])
    return is_deceased(person or {})

"""Gates on a SIP CarePlan: consent before it is active (R-SIP-01), closure by its
coordinator (R-SIP-10), responsible units that take part in the process (R-SIP-07, R-SIP-11).

What the profile sip-careplan already enforces (goals, interventions, a performer each,
follow-up, the closure reason's code) is not repeated; these gates need other resources."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from fhir_server.sip.resources import (
    CLOSURE_REASON,
    CLOSURE_REASON_URL,
    CONSENT_KIND,
    PARTICIPATING_ORGANIZATION_URL,
    PLAN_CLOSED,
    current,
    find,
    is_sip_plan,
    local_id,
    reference,
    refused,
    resource_of,
    stored_patient,
)
from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context

ADULT_AGE = 18


async def check_plan(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, plan: dict[str, Any]
) -> None:
    if not is_sip_plan(plan) or await closed_by_the_server(uow, version):
        return
    status = plan.get("status")
    if status == "active":
        await consent_to_plan(ctx, uow, plan)
        await responsible_units_take_part(uow, plan)
    elif status in PLAN_CLOSED:
        await closed_by_coordinator(uow, version, plan)


async def closed_by_the_server(uow: UnitOfWork, version: ResourceVersion) -> bool:
    """In a transaction the gates judge the end state: a later version of the plan in this
    unit of work is the server's closure (a withdrawn consent, a death: R-SIP-10, R-DIS-13),
    which wins over the plan as the bundle wrote it."""
    latest = await uow.current("CarePlan", version.id)
    if latest is None or latest.deleted or latest.version <= version.version:
        return False
    return resource_of(latest).get("status") in PLAN_CLOSED


# -- R-SIP-01 ------------------------------------------------------------------------------


async def consent_to_plan(ctx: Context, uow: UnitOfWork, plan: dict[str, Any]) -> None:
    """R-SIP-01 for a plan whose Patient is stored here (else gate_person checks when the
    Patient is written)."""
    patient = await stored_patient(uow, plan.get("subject"))
    if patient is not None:
        await consented(ctx, uow, plan, patient, "CarePlan.status")


async def consented(
    ctx: Context, uow: UnitOfWork, plan: dict[str, Any], patient: dict[str, Any], where: str
) -> None:
    """An active plan needs the person's active SIP consent recorded here (no `source[x]`);
    for a person under 18 at the plan's start (or today) one pointing at the local record
    (`source[x]`) is enough."""
    subject = f"Patient/{patient.get('id')}"
    consents = await find(
        ctx, uow, "Consent",
        [("patient", subject), ("status", "active"), ("category", f"{CONSENT_KIND}|sip")],
    )  # fmt: skip
    if any(not has_source(c) for c in consents):
        return
    if consents and is_minor(ctx, plan, patient):
        return
    raise refused(
        "R-SIP-01",
        f"an active SIP needs the person's active consent to SIP (Consent with category "
        f"{CONSENT_KIND}#sip, patient {subject}) recorded in this system; a reference "
        "to the local record (source[x]) is enough only for a person under 18",
        where,
    )


def has_source(consent: dict[str, Any]) -> bool:
    return any(key.startswith("source") for key in consent)


def is_minor(ctx: Context, plan: dict[str, Any], patient: dict[str, Any]) -> bool:
    born = first_day(patient.get("birthDate"))
    if born is None:
        return False
    start = first_day((plan.get("period") or {}).get("start"))
    on = start or ctx.clock.now().date()
    return on < birthday(born, ADULT_AGE)


def first_day(text: Any) -> date | None:
    """The first day a FHIR date or dateTime (possibly partial: 2009, 2009-05) can mean."""
    if not isinstance(text, str) or len(text) < 4:
        return None
    parts = [*text[:10].split("-"), "01", "01"][:3]
    try:
        return date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        return None


def birthday(born: date, age: int) -> date:
    """The day a person born on `born` turns `age` (29 February: 1 March)."""
    try:
        return born.replace(year=born.year + age)
    except ValueError:
        return date(born.year + age, 3, 1)


# -- R-SIP-10 ------------------------------------------------------------------------------


async def closed_by_coordinator(
    uow: UnitOfWork, version: ResourceVersion, plan: dict[str, Any]
) -> None:
    """Moving a stored open plan to completed/revoked is done by the coordinator (the closure
    reason itself is the profile's, sip-careplan-4): until authentication tells who writes,
    the writer is taken to be the plan's `author`, so the author may not change on closing.
    On death (reason `avliden`) anyone who learns of it may close the plan. A plan stored
    closed at once (an import) or rewritten once closed is not "moved"."""
    previous = await current(uow, "CarePlan", version.id)
    if previous is None or previous.get("status") in PLAN_CLOSED:
        return
    reasons = [e for e in plan.get("extension") or [] if e.get("url") == CLOSURE_REASON_URL]
    if "avliden" in {c for e in reasons for c in reason_codes(e)}:
        return
    before, now = reference(previous.get("author")), reference(plan.get("author"))
    if now != before:
        raise refused(
            "R-SIP-10",
            f"only the coordinator closes a SIP: the author must stay {before} (now {now})",
            "CarePlan.author",
        )


def reason_codes(extension: dict[str, Any]) -> set[str]:
    concept = extension.get("valueCodeableConcept") or {}
    return {
        c["code"] for c in concept.get("coding") or []
        if c.get("system") == CLOSURE_REASON and "code" in c
    }  # fmt: skip


# -- R-SIP-07 / R-SIP-11 -------------------------------------------------------------------


async def responsible_units_take_part(uow: UnitOfWork, plan: dict[str, Any]) -> None:
    """Each intervention's responsible Organization takes part in the process: it is the
    managing or a participating organisation of the EpisodeOfCare the plan names (in
    `supportingInfo`, or as its `encounter`'s episode). No episode named: nothing to check."""
    taking_part = await process_organizations(uow, plan)
    if taking_part is None:
        return
    for i, activity in enumerate(plan.get("activity") or []):
        for j, performer in enumerate((activity.get("detail") or {}).get("performer") or []):
            ref = reference(performer)
            if local_id(performer, "Organization") is not None and ref not in taking_part:
                raise refused(
                    "R-SIP-07",
                    f"the responsible unit {ref} does not take part in the process (not the "
                    "managing or a participating organisation of its EpisodeOfCare, R-SIP-11)",
                    f"CarePlan.activity[{i}].detail.performer[{j}]",
                )


async def process_organizations(uow: UnitOfWork, plan: dict[str, Any]) -> set[str] | None:
    ids = {local_id(r, "EpisodeOfCare") for r in plan.get("supportingInfo") or []}
    encounter = await current(uow, "Encounter", local_id(plan.get("encounter"), "Encounter"))
    ids |= {local_id(r, "EpisodeOfCare") for r in (encounter or {}).get("episodeOfCare") or []}
    episodes = [e for e in [await current(uow, "EpisodeOfCare", id) for id in ids] if e]
    if not episodes:
        return None
    organizations: set[str] = set()
    for episode in episodes:
        organizations.add(reference(episode.get("managingOrganization")) or "")
        for extension in episode.get("extension") or []:
            if extension.get("url") == PARTICIPATING_ORGANIZATION_URL:
                organizations.add(reference(extension.get("valueReference")) or "")
    return organizations - {""}

"""R-DIS-07 `utse-fast-vardkontakt`: after a completed admission notice each primary-care
unit among its recipients appoints a fast vårdkontakt, a named person, at the latest before
the patient is discharged.

Deadline, from what is known of the discharge: the stay's `Encounter.period.end`, else the
end of the estimated discharge date (extension sip-estimated-discharge-date on the Encounter,
else on the notice), else 23:59:59 seven days after the notice. As the stay learns more
(its Encounter gets a `period.end`, a new estimated date) the open Task's deadline follows.

Done when a PractitionerRole of the unit is recorded as the patient's fast vårdkontakt:
`Patient.generalPractitioner` or the `careManager` of one of the patient's EpisodeOfCares.
Such a record carries no time of its own, so it is done at the clock's now (scenario
playback sets the clock), and never before the obligation began: a fast vårdkontakt
recorded before the notice fulfils it at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_server.sip.clock import Clock, moment
from fhir_server.sip.resources import ESTIMATED_DISCHARGE_URL, resource_of
from fhir_server.sip.rules_support import due, end_of_day, read, ref
from fhir_server.sip.tasks import Obligation, complete, find, move, open_task, open_tasks, task_id
from fhir_server.storage.port import UnitOfWork

CODE = "utse-fast-vardkontakt"
LABEL = "Fast vårdkontakt"
DAYS_WITHOUT_DATE = 7
CLOSED_EPISODES = frozenset({"cancelled", "entered-in-error"})


def discharge_deadline(
    stay: dict[str, Any] | None, notice: dict[str, Any], start: datetime
) -> datetime:
    """The moment the patient leaves, or is expected to (see the module docstring)."""
    left = moment(((stay or {}).get("period") or {}).get("end"))
    if left is not None:
        return left
    for holder in (stay or {}, notice):
        estimated = _estimated_discharge(holder)
        if estimated is not None:
            return end_of_day(estimated)
    return end_of_day(start, DAYS_WITHOUT_DATE)


def _estimated_discharge(resource: dict[str, Any]) -> datetime | None:
    for extension in resource.get("extension") or []:
        if extension.get("url") == ESTIMATED_DISCHARGE_URL:
            found = moment(extension.get("valueDate"))
            if found is not None:
                return found
    return None


async def admitted(
    uow: UnitOfWork, notice: dict[str, Any], base: Obligation, units: list[str], clock: Clock
) -> None:
    """A completed admission notice: one Task per primary-care recipient (`units`)."""
    start = moment(notice.get("received")) or base.start
    deadline = discharge_deadline(await read(uow, base.encounter), notice, start)
    for owner in units:
        await open_task(uow, due(base, CODE, owner, start, deadline))
        version = await uow.current("Task", task_id(base.focus, CODE, owner))
        if version is not None and not version.deleted:
            await move(uow, version, deadline)  # a resent notice with a new estimated date
    await _appointed(uow, base.patient, await _recorded_so_far(uow, base.patient), clock)


async def stay_changed(uow: UnitOfWork, stay: dict[str, Any]) -> None:
    """The stay's Encounter is written: open Tasks follow what it says of the discharge."""
    for version in await open_tasks(uow, code=CODE, encounter=f"Encounter/{stay['id']}"):
        task = resource_of(version)
        notice = await read(uow, ref(task.get("focus"))) or {}
        start = moment(task.get("authoredOn"))
        if start is not None:
            await move(uow, version, discharge_deadline(stay, notice, start))


async def recorded(uow: UnitOfWork, resource: dict[str, Any], clock: Clock) -> None:
    """A Patient or an EpisodeOfCare is written: the fast vårdkontakt it records, if any."""
    if resource.get("resourceType") == "Patient":
        patient = f"Patient/{resource['id']}"
        roles = [ref(r) for r in resource.get("generalPractitioner") or []]
    elif resource.get("status") not in CLOSED_EPISODES:
        patient = ref(resource.get("patient")) or ""
        roles = [ref(resource.get("careManager"))]
    else:
        return
    contacts = [r for r in roles if r and r.startswith("PractitionerRole/")]
    if patient.startswith("Patient/") and contacts:
        await _appointed(uow, patient, contacts, clock)


async def _recorded_so_far(uow: UnitOfWork, patient: str) -> list[str]:
    """The PractitionerRoles recorded as the patient's fast vårdkontakt before now."""
    found = [ref(r) for r in ((await read(uow, patient)) or {}).get("generalPractitioner") or []]
    for version in await find(uow, "EpisodeOfCare", [("patient", patient)]):
        episode = resource_of(version)
        if episode.get("status") not in CLOSED_EPISODES:
            found.append(ref(episode.get("careManager")))
    return [r for r in found if r and r.startswith("PractitionerRole/")]


async def _appointed(uow: UnitOfWork, patient: str, contacts: list[str], clock: Clock) -> None:
    """Complete the open Tasks of the units these PractitionerRoles work for."""
    tasks = await open_tasks(uow, code=CODE, patient=patient)
    if not tasks:
        return
    by_unit: dict[str, str] = {}
    for contact in contacts:
        unit = ref(((await read(uow, contact)) or {}).get("organization"))
        if unit:
            by_unit.setdefault(unit, contact)
    for version in tasks:
        task = resource_of(version)
        contact = by_unit.get(ref(task.get("owner")) or "")
        start = moment(task.get("authoredOn"))
        if contact is not None:
            now = clock.now()
            await complete(uow, version, max(now, start) if start else now, contact, LABEL)

"""Obligation Tasks (profile sip-obligation): built, found and stored inside the writer's
unit of work.

Why a deterministic id: the same act written twice (an update of a notice, a transaction
replayed) must not open the same obligation twice, so the id is a UUIDv5 of (focus, code,
owner, and a key where one act imposes the obligation more than once, e.g. per follow-up
date) and opening checks `uow.current` first. Tasks are stored with `uow.put` directly, not
through `crud`, so writing a Task never runs the process rules again.

`businessStatus` carries the deadline outcome, a coding of the local system
`http://sip-fhir.se/fhir/CodeSystem/sip-obligation-status` (profiles/):
`late` (completed after the deadline) or `overdue` (still open past it, set by the sweep).
A coding, not only text, so `business-status:not=…|overdue` can find the rest.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.interactions.versions import stored_version
from fhir_server.search.indexer import index_entries
from fhir_server.sip import episodes
from fhir_server.sip.clock import instant, local_moment
from fhir_server.sip.resources import codes, coding, reference, resource_of
from fhir_server.sip.resources import find_versions as find
from fhir_server.storage.port import ResourceVersion, UnitOfWork
from fhir_server.subscriptions.events import on_server_write

OBLIGATION_TYPE = "http://sip-fhir.se/fhir/CodeSystem/sip-obligation-type"
OBLIGATION_PROFILE = "http://sip-fhir.se/fhir/StructureDefinition/sip-obligation"
BUSINESS_STATUS = "http://sip-fhir.se/fhir/CodeSystem/sip-obligation-status"
LATE, OVERDUE = "late", "overdue"
_NAMESPACE = uuid.UUID("6f1d1c3e-2b8a-5d8e-9a51-5e1f0b5a7c11")

FOLLOW_UP_DATE = "Uppföljningsdatum"  # Task.input: the follow-up date an obligation is for


@dataclass(frozen=True, slots=True)
class Obligation:
    """One obligation a rule imposes: what, on whom, about what, from when and by when."""

    code: str
    owner: str  # "Organization/x"
    patient: str  # "Patient/x"
    focus: str  # "Communication/x": the act that started it
    start: datetime
    deadline: datetime
    requester: str | None = None
    encounter: str | None = None  # the stay: the link to the process (Encounter.episodeOfCare)
    key: str = ""  # part of the id when one focus imposes the obligation more than once
    follow_up: str | None = None  # the follow-up date (R-SIP-08, R-SIP-09), as Task.input


def business_status(code: str) -> dict[str, Any]:
    return {"coding": [coding(BUSINESS_STATUS, code)], "text": code}


def task_id(focus: str, code: str, owner: str, key: str = "") -> str:
    name = f"{focus}|{code}|{owner}" + (f"|{key}" if key else "")
    return str(uuid.uuid5(_NAMESPACE, name))


def task_resource(obligation: Obligation, id: str) -> dict[str, Any]:
    o = obligation
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": id,
        "meta": {"profile": [OBLIGATION_PROFILE]},
        "status": "requested",
        "intent": "order",
        "code": {"coding": [coding(OBLIGATION_TYPE, o.code)]},
        "focus": {"reference": o.focus},
        "for": {"reference": o.patient},
        "authoredOn": instant(o.start),
        "owner": {"reference": o.owner},
        "restriction": {"period": {"start": instant(o.start), "end": instant(o.deadline)}},
    }
    if o.encounter:
        task["encounter"] = {"reference": o.encounter}
    if o.requester:
        task["requester"] = {"reference": o.requester}
    if o.follow_up:
        task["input"] = [follow_up_input(o.follow_up)]
    return task


def follow_up_input(date: str) -> dict[str, Any]:
    return {"type": {"text": FOLLOW_UP_DATE}, "valueDate": date}


def follow_up_of(task: dict[str, Any]) -> str | None:
    """The follow-up date a Task is for (its `input`), if any."""
    for item in task.get("input") or []:
        if (item.get("type") or {}).get("text") == FOLLOW_UP_DATE and "valueDate" in item:
            return str(item["valueDate"])
    return None


async def open_task(uow: UnitOfWork, obligation: Obligation) -> dict[str, Any]:
    """The obligation's Task, created unless it exists already (then left as it is)."""
    id = task_id(obligation.focus, obligation.code, obligation.owner, obligation.key)
    current = await uow.current("Task", uow.derive("Task", id, obligation.focus))
    if current is not None and not current.deleted:
        return resource_of(current)
    task = task_resource(obligation, id)
    process = await episodes.process_of(uow, obligation.patient, obligation.encounter)
    if process is not None:  # the process the obligation belongs to (Task?process=…)
        task = episodes.with_process(task, process)
    await put_task(uow, task, current)
    return task


async def put_task(uow: UnitOfWork, task: dict[str, Any], previous: ResourceVersion | None) -> None:
    method = "PUT" if previous is not None else "POST"
    version = stored_version(task, "Task", task["id"], previous, method)
    index = index_entries("Task", task)
    await uow.put(version, index)
    await on_server_write(uow, previous, version, task, index)


def deadline_of(task: dict[str, Any]) -> datetime | None:
    end = ((task.get("restriction") or {}).get("period") or {}).get("end")
    return local_moment(str(end)) if end else None


async def complete(
    uow: UnitOfWork, version: ResourceVersion, done: datetime, output: str, label: str
) -> None:
    """Mark an open Task completed at `done` by the act `output`; `late` past its deadline."""
    task = resource_of(version)
    if task.get("status") != "requested":
        return
    task.pop("meta", None)
    task["status"] = "completed"
    task["executionPeriod"] = {"start": task.get("authoredOn"), "end": instant(done)}
    task["output"] = [{"type": {"text": label}, "valueReference": {"reference": output}}]
    task.pop("businessStatus", None)
    deadline = deadline_of(task)
    if deadline is not None and done > deadline:
        task["businessStatus"] = business_status(LATE)
    await put_task(uow, task, version)


async def move(
    uow: UnitOfWork,
    version: ResourceVersion,
    deadline: datetime,
    owner: str | None = None,
    follow_up: str | None = None,
) -> None:
    """A later act moved an open obligation (R-DIS-07: the stay ended; R-SIP-08: a new
    follow-up date): new deadline, owner, follow-up date. `overdue` is dropped: the sweep
    sets it again if the new deadline has passed too."""
    task = resource_of(version)
    if task.get("status") != "requested":
        return
    before = (deadline_of(task), reference(task.get("owner")), follow_up_of(task))
    after_owner = owner or before[1]
    after_follow_up = follow_up or before[2]
    if before == (deadline, after_owner, after_follow_up):
        return
    task.pop("meta", None)
    task["restriction"] = {"period": {**task["restriction"]["period"], "end": instant(deadline)}}
    if after_owner:
        task["owner"] = {"reference": after_owner}
    if after_follow_up:
        task["input"] = [follow_up_input(after_follow_up)]
    task.pop("businessStatus", None)
    await put_task(uow, task, version)


async def cancel(uow: UnitOfWork, version: ResourceVersion, reason: str) -> None:
    task = resource_of(version)
    if task.get("status") not in ("requested", "accepted", "ready", "in-progress", "on-hold"):
        return
    task.pop("meta", None)
    task["status"] = "cancelled"
    task["statusReason"] = {"text": reason}
    await put_task(uow, task, version)


async def open_tasks(uow: UnitOfWork, **criteria: str) -> list[ResourceVersion]:
    """Requested obligations (of one `code`, if given) matching Task search criteria.

    The code is filtered here, not searched: the rules ask for one patient's or one stay's
    open Tasks code by code, and one search per patient or stay, which the unit of work
    remembers until a Task is written, answers them all."""
    pairs = [("status", "requested")]
    pairs += [(k.replace("_", "-"), v) for k, v in criteria.items() if k != "code"]
    found = await find(uow, "Task", pairs)
    code = criteria.get("code")
    return [v for v in found if code is None or code in obligation_codes(resource_of(v))]


def obligation_codes(task: dict[str, Any]) -> set[str]:
    """The obligation types (sip-obligation-type) of a Task: none for any other Task."""
    return codes(task.get("code"), OBLIGATION_TYPE)

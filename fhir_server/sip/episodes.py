"""The process an act belongs to, as an EpisodeOfCare (profile sip-episodeofcare): the
discharge process of an inpatient stay (Inera plan type SPU) and the SIP process of a person
(SIP). One stored EpisodeOfCare carrying both codes is both.

Why the server keeps them: the obligations, the indicators and the closures (R-DIS-13,
R-SIP-10) need one resource per coordination case to hang on, and the acts (notices,
meetings, plans) already say when a process begins and ends. A client's own EpisodeOfCare is
used when the stay names it (for a SIP: when the act names it or the person has one open);
otherwise the server makes one with a deterministic UUIDv5 id (`discharge|Encounter/<id>`,
`sip|Patient/<id>`), so the same act written twice never makes two processes. Every change
is a new version stored with `uow.put`, beside the writer's own, never through the gates.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.interactions.versions import deleted_version, stored_version
from fhir_server.search.indexer import index_entries
from fhir_server.sip.clock import instant, moment
from fhir_server.sip.resources import (
    CLOSURE_REASON,
    CLOSURE_REASON_URL,
    PARTICIPATING_ORGANIZATION_URL,
    PLAN_TYPE,
    SIP,
    codes,
    coding,
    current,
    local_id,
    reference,
    resource_of,
)
from fhir_server.sip.resources import find_versions as find
from fhir_server.storage.port import ResourceVersion, UnitOfWork
from fhir_server.subscriptions.events import on_server_write

DISCHARGE, SIP_PROCESS = "SPU", "SIP"  # Inera typeofcareplan-cs
KIND_DISPLAY = {
    DISCHARGE: "Samordnad plan vid utskrivning",
    SIP_PROCESS: "Samordnad individuell plan",
}
EPISODE_PROFILE = f"{SIP}/StructureDefinition/sip-episodeofcare"
PROCESS_URL = f"{SIP}/StructureDefinition/sip-process"
OBLIGATION_TYPES = f"{SIP}/ValueSet/sip-obligation-type"
OPEN = ("planned", "waitlist", "active", "onhold")
CLOSED = ("finished", "cancelled")
_NAMESPACE = uuid.UUID("2c0f6a52-8d3e-5b7a-9f41-3e7d0c9b1a64")


@dataclass(frozen=True, slots=True)
class Process:
    """A stored process: its current version and resource."""

    version: ResourceVersion
    episode: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"EpisodeOfCare/{self.version.id}"

    @property
    def kinds(self) -> set[str]:
        return kinds(self.episode)

    @property
    def is_open(self) -> bool:
        return self.episode.get("status") in OPEN


def discharge_id(stay: str) -> str:
    """The id of the server's discharge process of `stay` ("Encounter/x")."""
    return str(uuid.uuid5(_NAMESPACE, f"discharge|{stay}"))


def sip_id(patient: str) -> str:
    """The id of the server's SIP process of `patient` ("Patient/x")."""
    return str(uuid.uuid5(_NAMESPACE, f"sip|{patient}"))


def kinds(episode: dict[str, Any]) -> set[str]:
    return codes(episode.get("type"), PLAN_TYPE) & {DISCHARGE, SIP_PROCESS}


async def stored(uow: UnitOfWork, id: str | None, source: str = "") -> Process | None:
    """The EpisodeOfCare `id`, if stored and not deleted (`source`: the reference the
    server's process id derives from, `UnitOfWork.derive`)."""
    if id is None:
        return None
    if source:
        uow.derive("EpisodeOfCare", id, source)
    version = await uow.current("EpisodeOfCare", id)
    if version is None or version.deleted:
        return None
    return Process(version, resource_of(version))


# -- which process ----------------------------------------------------------------------------


async def named_discharge(uow: UnitOfWork, episodes: Any) -> Process | None:
    """The first stored discharge process (SPU) among a stay's `episodeOfCare` references."""
    for value in episodes or []:
        found = await stored(uow, local_id(value, "EpisodeOfCare"))
        if found is not None and DISCHARGE in found.kinds:
            return found
    return None


async def stay_process(uow: UnitOfWork, stay: str) -> Process | None:
    """The discharge process of `stay`: the one the stay names, else the server's."""
    encounter = await current(uow, "Encounter", stay.partition("/")[2])
    named = await named_discharge(uow, (encounter or {}).get("episodeOfCare"))
    return named or await stored(uow, discharge_id(stay), stay)


async def person_process(uow: UnitOfWork, patient: str, named: Any = ()) -> Process | None:
    """The SIP process of `patient`: an open SIP EpisodeOfCare of theirs that the act names
    (`named`: references), else one they have (the client's before the server's), else the
    server's whatever its status."""
    for value in named or []:
        found = await stored(uow, local_id(value, "EpisodeOfCare"))
        if found and found.is_open and SIP_PROCESS in found.kinds and _of(found, patient):
            return found
    server = sip_id(patient)
    open_ = await open_processes(uow, patient, SIP_PROCESS)
    open_.sort(key=lambda p: (p.version.id == server, p.version.id))
    return open_[0] if open_ else await stored(uow, server, patient)


async def open_processes(uow: UnitOfWork, patient: str, kind: str | None = None) -> list[Process]:
    """The patient's open processes (of `kind`, else of either kind)."""
    criteria = [("patient", patient), ("status", ",".join(OPEN))]
    if kind is not None:
        criteria.append(("type", f"{PLAN_TYPE}|{kind}"))
    found = [Process(v, resource_of(v)) for v in await find(uow, "EpisodeOfCare", criteria)]
    return [p for p in found if p.kinds]


def _of(process: Process, patient: str) -> bool:
    return reference(process.episode.get("patient")) == patient


async def process_of(uow: UnitOfWork, patient: str, encounter: str | None) -> str | None:
    """The process an obligation belongs to ("EpisodeOfCare/<id>"): the stay's discharge
    process when the obligation concerns a stay, else the person's SIP process; None when
    there is none (yet)."""
    if encounter:
        found = await stay_process(uow, encounter)
    else:
        found = await person_process(uow, patient)
    return found.ref if found is not None else None


def with_process(task: dict[str, Any], process: str) -> dict[str, Any]:
    """`task` linked to its process (extension sip-process)."""
    kept = [e for e in task.get("extension") or [] if e.get("url") != PROCESS_URL]
    link = {"url": PROCESS_URL, "valueReference": {"reference": process}}
    return with_extensions(task, [*kept, link])


# -- status ---------------------------------------------------------------------------------


def new_process(
    id: str,
    kind: str,
    patient: str,
    manager: str,
    start: datetime,
    participants: Iterable[str] = (),
) -> dict[str, Any]:
    """A process the server opens at `start`, managed by `manager` (an Organization)."""
    kind_coding = {"system": PLAN_TYPE, "code": kind, "display": KIND_DISPLAY[kind]}
    episode: dict[str, Any] = {
        "resourceType": "EpisodeOfCare",
        "id": id,
        "meta": {"profile": [EPISODE_PROFILE]},
    }
    organizations = list(dict.fromkeys([manager, *participants]))
    if organizations:
        episode["extension"] = [
            {"url": PARTICIPATING_ORGANIZATION_URL, "valueReference": {"reference": o}}
            for o in organizations
        ]
    return episode | {
        "status": "active",
        "statusHistory": [{"status": "active", "period": {"start": instant(start)}}],
        "type": [{"coding": [kind_coding], "text": KIND_DISPLAY[kind]}],
        "patient": {"reference": patient},
        "managingOrganization": {"reference": manager},
        "period": {"start": instant(start)},
    }


def moved(episode: dict[str, Any], status: str, at: datetime) -> dict[str, Any]:
    """`episode` in `status` from `at`: the open statusHistory entry ends there and a new one
    begins; a closed process ends at `at` (sip-episodeofcare-2), a reopened one has no end.
    Never before the process began or its last change (a late act cannot reverse time)."""
    history = [dict(entry) for entry in episode.get("statusHistory") or []]
    starts = [(episode.get("period") or {}).get("start")]
    starts += [(entry.get("period") or {}).get("start") for entry in history]
    floor = [m for m in map(moment, starts) if m]
    when = instant(max([at, *floor]))
    for entry in history:
        period = entry.get("period") or {}
        if "end" not in period:
            entry["period"] = {**period, "end": when}
    history.append({"status": status, "period": {"start": when}})
    period = dict(episode.get("period") or {})
    if status in CLOSED:
        period["end"] = when
    else:
        period.pop("end", None)
    return {**episode, "status": status, "statusHistory": history, "period": period}


def reason(code: str) -> dict[str, Any]:
    """A closure reason (sip-plan-closure-reason) as the CodeableConcept of sip-closure-reason."""
    return {"coding": [coding(CLOSURE_REASON, code)]}


def with_reason(resource: dict[str, Any], concept: dict[str, Any] | None) -> dict[str, Any]:
    """`resource` with its closure reason (extension sip-closure-reason) set, or removed."""
    kept = [e for e in resource.get("extension") or [] if e.get("url") != CLOSURE_REASON_URL]
    if concept is not None:
        kept.append({"url": CLOSURE_REASON_URL, "valueCodeableConcept": concept})
    return with_extensions(resource, kept)


def with_extensions(resource: dict[str, Any], extensions: list[dict[str, Any]]) -> dict[str, Any]:
    """`resource` with `extension` replaced (in its place, or after the narrative); none: no
    element at all (FHIR allows no empty arrays)."""
    head = {k: v for k, v in resource.items() if k in ("resourceType", "id", "meta", "text")}
    rest = {k: v for k, v in resource.items() if k != "extension"}
    if not extensions:
        return rest
    if "extension" in resource:
        return {k: extensions if k == "extension" else v for k, v in resource.items()}
    return {**head, "extension": extensions, **rest}


def closure_reason(resource: dict[str, Any]) -> dict[str, Any] | None:
    for extension in resource.get("extension") or []:
        if extension.get("url") == CLOSURE_REASON_URL:
            concept = extension.get("valueCodeableConcept")
            return concept if isinstance(concept, dict) else None
    return None


async def put(uow: UnitOfWork, resource: dict[str, Any], previous: ResourceVersion | None) -> None:
    """Store the server's own change of a process resource as its next version."""
    type = resource["resourceType"]
    method = "PUT" if previous is not None else "POST"
    version = stored_version(resource, type, resource["id"], previous, method)
    index = index_entries(type, resource)
    await uow.put(version, index)
    await on_server_write(uow, previous, version, resource, index)


async def create(uow: UnitOfWork, episode: dict[str, Any]) -> None:
    """Store a new server process (over a deleted one of the same id, if any)."""
    await put(uow, episode, await uow.current("EpisodeOfCare", episode["id"]))


async def activate(uow: UnitOfWork, process: Process, at: datetime) -> None:
    """A planned or closed process is active (again) from `at`; its old closure reason goes."""
    if process.episode.get("status") == "active":
        return
    episode = with_reason(moved(process.episode, "active", at), None)
    await put(uow, episode, process.version)


async def finish(
    uow: UnitOfWork, process: Process, at: datetime, why: dict[str, Any] | None = None
) -> None:
    """An open process is finished at `at`, with the reason `why` when one is given."""
    if not process.is_open:
        return
    episode = moved(process.episode, "finished", at)
    if why is not None:
        episode = with_reason(episode, why)
    await put(uow, episode, process.version)


async def link_tasks(uow: UnitOfWork, process: str, criteria: list[tuple[str, str]]) -> None:
    """Obligations opened before their process existed (a transaction's order) link it."""
    criteria = [*criteria, ("process:missing", "true"), ("code:in", OBLIGATION_TYPES)]
    for version in await find(uow, "Task", criteria):
        await put(uow, with_process(resource_of(version), process), version)


async def retire(uow: UnitOfWork, duplicate: Process, into: str) -> None:
    """A process the server made before the client's own was stored (a transaction's order):
    its Tasks move to `into`, and it is deleted (its versions stay in the history)."""
    for version in await find(uow, "Task", [("process", duplicate.ref)]):
        await put(uow, with_process(resource_of(version), into), version)
    await uow.put(deleted_version(duplicate.version), ())

"""Process state: one EpisodeOfCare per process, opened and finished by the acts, closed on
death (R-DIS-13) and on a withdrawn consent (R-SIP-10); obligation Tasks link their process.

Both engines, over HTTP. The example case (examples/sip-case) is loaded by a transaction of
PUTs without its Tasks, messages, meetings and plan (and, where the server must make the
process itself, without its EpisodeOfCare); each test then writes the acts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.sip.clock import STOCKHOLM, FixedClock
from fhir_server.sip.episodes import discharge_id, sip_id
from fhir_server.storage.port import Storage
from tests.sip_case import (
    ACTS,
    HEALTH_CENTRE,
    OBLIGATION,
    PATIENT,
    WARD,
    case_client,
    example,
    load_case,
    put,
)

SIP = "http://sip-fhir.se/fhir"
PLAN_TYPE = "https://fhir.inera.se/CodeSystem/typeofcareplan-cs"
CLOSURE = f"{SIP}/StructureDefinition/sip-closure-reason"
PROCESS = f"{SIP}/StructureDefinition/sip-process"
STAY = "Encounter/inpatient-stay"
EXAMPLE_PROCESS = "EpisodeOfCare/discharge-and-sip"


@pytest.fixture
async def http(
    store: Storage, settings: Settings, clock: FixedClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with case_client(store, settings, clock, leave_out=None) as client:
        yield client


@pytest.fixture
async def client(http: httpx.AsyncClient) -> httpx.AsyncClient:
    """The case with its own EpisodeOfCare (discharge and SIP), without the acts."""
    await load_case(http, leave_out=ACTS)
    return http


@pytest.fixture
async def bare(http: httpx.AsyncClient) -> httpx.AsyncClient:
    """The case without its EpisodeOfCare: the server makes the processes."""
    await load_case(http, leave_out=(*ACTS, "EpisodeOfCare"))
    return http


async def read(client: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    response = await client.get(f"/{reference}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def versions(client: httpx.AsyncClient, reference: str) -> int:
    response = await client.get(f"/{reference}/_history")
    assert response.status_code == 200, response.text
    return response.json()["total"]  # type: ignore[no-any-return]


async def search(client: httpx.AsyncClient, type: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(f"/{type}", params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def code_of(task: dict[str, Any]) -> str:
    return next(c["code"] for c in task["code"]["coding"] if c["system"] == OBLIGATION)


def process_link(task: dict[str, Any]) -> str | None:
    links = [e for e in task.get("extension", []) if e["url"] == PROCESS]
    return links[0]["valueReference"]["reference"] if links else None


def closure_code(resource: dict[str, Any]) -> str | None:
    found = [e for e in resource.get("extension", []) if e["url"] == CLOSURE]
    return found[0]["valueCodeableConcept"]["coding"][0]["code"] if found else None


def kinds(episode: dict[str, Any]) -> set[str]:
    return {c["code"] for t in episode["type"] for c in t["coding"] if c["system"] == PLAN_TYPE}


async def put_plan(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    plan = example("CarePlan-sip") | changes
    await put(client, plan)
    return plan


def closed_plan(reason: str) -> dict[str, Any]:
    plan = example("CarePlan-sip")
    plan["status"] = "completed"
    plan["extension"].append(
        {"url": CLOSURE, "valueCodeableConcept": {"coding": [
            {"system": f"{SIP}/CodeSystem/sip-plan-closure-reason", "code": reason}]}}
    )  # fmt: skip
    return plan


# -- the discharge process ------------------------------------------------------------------


async def test_discharge_process_opened_by_the_admission_notice_finished_by_the_discharge(
    bare: httpx.AsyncClient,
) -> None:
    """R-DIS-01, R-DIS-12: the stay names no stored process, so its first admission notice
    opens one (SPU, managed by the ward, from the notice's `sent`, the recipients taking
    part); the discharge notice finishes it at its `sent`, with the status history kept. The
    server's process is valid as stored (it can be written back)."""
    process = f"EpisodeOfCare/{discharge_id(STAY)}"
    await put(bare, example("Communication-admission-notice"))
    await put(bare, example("Communication-admission-notice"))  # once is enough
    episode = await read(bare, process)
    assert episode["meta"]["versionId"] == "1"
    assert kinds(episode) == {"SPU"}
    assert episode["status"] == "active"
    assert episode["patient"] == {"reference": PATIENT}
    assert episode["managingOrganization"] == {"reference": WARD}
    assert episode["period"] == {"start": "2026-11-02T15:05:00+01:00"}
    assert episode["statusHistory"] == [
        {"status": "active", "period": {"start": "2026-11-02T15:05:00+01:00"}}
    ]
    taking_part = {e["valueReference"]["reference"] for e in episode["extension"]}
    assert taking_part == {WARD, HEALTH_CENTRE, "Organization/lulea-municipality"}

    await put(bare, example("Communication-discharge-notice"))
    episode = await read(bare, process)
    assert episode["status"] == "finished"
    assert episode["period"]["end"] == "2026-11-10T13:30:00+01:00"
    assert episode["statusHistory"] == [
        {"status": "active",
         "period": {"start": "2026-11-02T15:05:00+01:00", "end": "2026-11-10T13:30:00+01:00"}},
        {"status": "finished", "period": {"start": "2026-11-10T13:30:00+01:00"}},
    ]  # fmt: skip
    assert await versions(bare, process) == 2
    del episode["meta"]
    await put(bare, episode)


async def test_the_stay_s_own_episode_of_care_is_its_discharge_process(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-01, R-DIS-12: the stay names the example's EpisodeOfCare, so the server makes
    none; a process that is only a discharge process (SPU) finishes with the discharge
    notice."""
    episode = example("EpisodeOfCare-discharge-and-sip")
    episode["type"][0]["coding"] = [c for c in episode["type"][0]["coding"] if c["code"] == "SPU"]
    await put(client, episode)
    await put(client, example("Communication-admission-notice"))
    missing = await client.get(f"/EpisodeOfCare/{discharge_id(STAY)}")
    assert missing.status_code == 404
    assert await versions(client, EXAMPLE_PROCESS) == 2  # the example's, and the SPU-only
    await put(client, example("Communication-discharge-notice"))
    stored = await read(client, EXAMPLE_PROCESS)
    assert stored["status"] == "finished"
    assert stored["period"] == {
        "start": "2026-11-02T14:20:00+01:00",
        "end": "2026-11-10T13:30:00+01:00",
    }
    assert [h["status"] for h in stored["statusHistory"]] == ["active", "finished"]


async def test_a_process_that_is_also_the_sip_goes_on_after_the_discharge(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-14: the example's process is the discharge process followed by the SIP (SPU and
    SIP): the discharge notice leaves it active while the SIP is planned."""
    await put(client, example("Communication-admission-notice"))
    await put(client, example("Communication-discharge-notice"))
    stored = await read(client, EXAMPLE_PROCESS)
    assert stored["status"] == "active"
    assert stored["meta"]["versionId"] == "1"


async def test_tasks_link_their_process_and_are_found_by_it(client: httpx.AsyncClient) -> None:
    """R-IND-01: every obligation Task links its process (extension sip-process), and
    `Task?process=EpisodeOfCare/x` lists a process's obligations."""
    await put(client, example("Communication-admission-notice"))
    await put(client, example("Communication-ready-for-discharge"))
    tasks = await search(client, "Task", patient=PATIENT)
    assert tasks
    assert {process_link(t) for t in tasks} == {EXAMPLE_PROCESS}
    found = await search(client, "Task", process=EXAMPLE_PROCESS)
    assert sorted(t["id"] for t in found) == sorted(t["id"] for t in tasks)
    assert await search(client, "Task", process=f"EpisodeOfCare/{discharge_id(STAY)}") == []
    codes = {code_of(t) for t in found}
    assert {"kvittera-meddelande", "fylla-i-planeringsunderlag"} <= codes


async def test_a_transaction_s_order_makes_no_second_process(http: httpx.AsyncClient) -> None:
    """The whole case in one transaction: its notices and meetings come before the
    EpisodeOfCare their stay names, yet the example's process is the only one and every Task
    links it (what the server made meanwhile merged into it)."""
    await load_case(http, leave_out=("Task",))
    episodes = await search(http, "EpisodeOfCare", patient=PATIENT)
    assert [e["id"] for e in episodes] == ["discharge-and-sip"]
    for made in (discharge_id(STAY), sip_id(PATIENT)):
        assert (await http.get(f"/EpisodeOfCare/{made}")).status_code == 410
    tasks = await search(http, "Task", patient=PATIENT)
    assert tasks
    assert {process_link(t) for t in tasks} == {EXAMPLE_PROCESS}


async def test_tasks_opened_before_their_process_link_it_once_it_exists(
    bare: httpx.AsyncClient,
) -> None:
    """R-IND-01: in a transaction the ready-for-discharge notice may come before the
    admission notice that opens the stay's process; its Tasks link the process all the
    same."""
    notices = [example("Communication-ready-for-discharge"),
               example("Communication-admission-notice")]  # fmt: skip
    entries = [
        {"resource": n, "request": {"method": "PUT", "url": f"Communication/{n['id']}"}}
        for n in notices
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await bare.post("", json=bundle)
    assert response.status_code == 200, response.text
    tasks = await search(bare, "Task", focus="Communication/ready-for-discharge")
    assert tasks
    assert {process_link(t) for t in tasks} == {f"EpisodeOfCare/{discharge_id(STAY)}"}


# -- the SIP process ------------------------------------------------------------------------


async def test_one_sip_process_per_person(bare: httpx.AsyncClient, clock: FixedClock) -> None:
    """R-SIP-03, R-SIP-10: the SIP meeting opens the person's SIP process (managed by the
    first organisation taking part, from the meeting's `created`); the plan and a second
    meeting use the same; the plan's Tasks link it; the coordinator closing the plan
    finishes it, with the plan's closure reason, at the clock's now."""
    process = f"EpisodeOfCare/{sip_id(PATIENT)}"
    await put(bare, example("Appointment-sip-meeting"))
    await put(bare, example("CarePlan-sip"))
    second = example("Appointment-sip-meeting") | {"id": "second-sip-meeting"}
    await put(bare, second)
    [episode] = await search(bare, "EpisodeOfCare", patient=PATIENT)
    assert f"EpisodeOfCare/{episode['id']}" == process
    assert kinds(episode) == {"SIP"}
    assert episode["status"] == "active"
    assert episode["meta"]["versionId"] == "1"
    assert episode["managingOrganization"] == {"reference": HEALTH_CENTRE}
    assert episode["period"] == {"start": "2026-11-10T10:15:00+01:00"}
    documenting = await search(bare, "Task", code=f"{OBLIGATION}|dokumentera-plan")
    assert documenting
    assert {process_link(t) for t in documenting} == {process}

    clock.moment = datetime(2027, 6, 1, 10, 0, tzinfo=STOCKHOLM)
    await put(bare, closed_plan("mal-uppfyllda"))
    episode = await read(bare, process)
    assert episode["status"] == "finished"
    assert episode["period"]["end"] == "2027-06-01T10:00:00+02:00"
    assert closure_code(episode) == "mal-uppfyllda"
    del episode["meta"]
    await put(bare, episode)


# -- R-DIS-13 -------------------------------------------------------------------------------


async def test_r_dis_13_death_closes_the_processes_and_the_plan_and_cancels_the_tasks(
    bare: httpx.AsyncClient,
) -> None:
    """R-DIS-13: the patient dies; the discharge process and the SIP process finish at the
    time of death with the reason `avliden`, the active SIP is revoked with that reason (its
    timeline ends that day), the open obligations are cancelled; each is a new version,
    valid as stored."""
    await put(bare, example("Communication-admission-notice"))
    await put(bare, example("Appointment-sip-meeting"))
    await put(bare, example("CarePlan-sip"))
    assert await search(bare, "Task", patient=PATIENT, status="requested")
    patient = example("Patient-tolvan-tolvansson")
    patient["deceasedDateTime"] = "2026-11-20T03:00:00+01:00"
    await put(bare, patient)

    for made in (discharge_id(STAY), sip_id(PATIENT)):
        episode = await read(bare, f"EpisodeOfCare/{made}")
        assert episode["status"] == "finished"
        assert episode["period"]["end"] == "2026-11-20T03:00:00+01:00"
        assert closure_code(episode) == "avliden"
        assert episode["statusHistory"][-1]["status"] == "finished"
        assert await versions(bare, f"EpisodeOfCare/{made}") == 2

    plan = await read(bare, "CarePlan/sip")
    assert plan["status"] == "revoked"
    assert closure_code(plan) == "avliden"
    assert plan["period"] == {"start": "2026-11-17", "end": "2026-11-20"}
    assert await versions(bare, "CarePlan/sip") == 2

    tasks = await search(bare, "Task", patient=PATIENT)
    assert tasks
    assert not [t for t in tasks if t["status"] == "requested"]
    cancelled = [t for t in tasks if t["status"] == "cancelled"]
    assert cancelled
    assert all(t["statusReason"] == {"text": "Avliden"} for t in cancelled)
    assert all(int(t["meta"]["versionId"]) >= 2 for t in cancelled)

    del plan["meta"]
    await put(bare, plan)  # the server's closure is a valid SIP CarePlan
    await put(bare, patient)  # recorded again: nothing more to close
    assert await versions(bare, "CarePlan/sip") == 3


async def test_r_dis_13_death_without_a_time_closes_at_the_clock_s_now(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """R-DIS-13: `deceasedBoolean` records no time: the example's process (discharge and
    SIP) and the plan close at the clock's now."""
    await put(client, example("CarePlan-sip"))
    clock.moment = datetime(2026, 11, 25, 8, 0, tzinfo=STOCKHOLM)
    patient = example("Patient-tolvan-tolvansson") | {"deceasedBoolean": True}
    await put(client, patient)
    episode = await read(client, EXAMPLE_PROCESS)
    assert episode["status"] == "finished"
    assert episode["period"]["end"] == "2026-11-25T08:00:00+01:00"
    assert closure_code(episode) == "avliden"
    assert (await read(client, "CarePlan/sip"))["status"] == "revoked"


# -- R-SIP-10 -------------------------------------------------------------------------------


async def test_r_sip_10_withdrawn_consent_closes_the_plan(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """R-SIP-10: the person withdraws consent to the SIP: the active plan is revoked with the
    reason `samtycke-aterkallat`, the SIP process (here also the discharge process, whose
    stay has gone home) finishes, and the SIP's open obligations are cancelled; the
    discharge process's own obligations (acknowledgements) go on."""
    await put(client, example("Communication-admission-notice"))
    await put(client, example("Communication-discharge-notice"))
    await put(client, example("Appointment-sip-meeting"))
    await put(client, example("CarePlan-sip"))
    documenting = await search(client, "Task", code=f"{OBLIGATION}|dokumentera-plan")
    assert [t for t in documenting if t["status"] == "requested"]
    clock.moment = datetime(2026, 11, 24, 14, 0, tzinfo=STOCKHOLM)
    consent = example("Consent-sip") | {"status": "inactive"}
    await put(client, consent)

    plan = await read(client, "CarePlan/sip")
    assert plan["status"] == "revoked"
    assert closure_code(plan) == "samtycke-aterkallat"
    episode = await read(client, EXAMPLE_PROCESS)
    assert episode["status"] == "finished"
    assert episode["period"]["end"] == "2026-11-24T14:00:00+01:00"
    assert closure_code(episode) == "samtycke-aterkallat"

    documenting = await search(client, "Task", code=f"{OBLIGATION}|dokumentera-plan")
    assert not [t for t in documenting if t["status"] == "requested"]
    cancelled = [t for t in documenting if t["status"] == "cancelled"]
    assert cancelled
    assert all(t["statusReason"] == {"text": "Samtycke återkallat"} for t in cancelled)
    acknowledging = await search(client, "Task", code=f"{OBLIGATION}|kvittera-meddelande")
    assert {t["status"] for t in acknowledging} == {"requested"}


async def test_r_sip_10_withdrawal_during_the_stay_leaves_the_discharge_process_open(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-10: consent withdrawn before the discharge: the plan is revoked, but the
    process that is also the stay's discharge process stays active until the discharge."""
    await put(client, example("Communication-admission-notice"))
    await put(client, example("CarePlan-sip"))
    await put(client, example("Consent-sip") | {"status": "rejected"})
    assert (await read(client, "CarePlan/sip"))["status"] == "revoked"
    assert (await read(client, EXAMPLE_PROCESS))["status"] == "active"
    await put(client, example("Communication-discharge-notice"))
    episode = await read(client, EXAMPLE_PROCESS)
    assert episode["status"] == "finished"
    assert episode["period"]["end"] == "2026-11-10T13:30:00+01:00"


@pytest.mark.parametrize("consent_first", [True, False])
async def test_r_sip_10_withdrawal_in_a_transaction_wins_over_the_plan(
    client: httpx.AsyncClient, consent_first: bool
) -> None:
    """R-SIP-10 over R-SIP-01: a transaction that withdraws the consent and writes the active
    plan is not refused, whatever the entries' order: the plan ends revoked."""
    await put(client, example("CarePlan-sip"))
    plan = example("CarePlan-sip") | {"description": "Reviderad."}
    consent = example("Consent-sip") | {"status": "inactive"}
    resources = [consent, plan] if consent_first else [plan, consent]
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text
    stored = await read(client, "CarePlan/sip")
    assert stored["status"] == "revoked"
    assert closure_code(stored) == "samtycke-aterkallat"
    assert stored["description"] == "Reviderad."

"""`Encounter/[id]/$payment-liability` (R-DIS-09), on both engines, over HTTP.

The example discharge case (examples/sip-case) is loaded, then its ready-for-discharge notice
and stay are changed per case. Liability starts a number of calendar days after the day the
notice was sent, in Stockholm time: 3 before 12:00, 4 at or after (Norrbotten, the default).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.config import Settings
from fhir_server.sip.clock import STOCKHOLM, FixedClock
from tests.conftest import app_client
from tests.engines import make_storage
from tests.sip_case import example, load_case

STAY = "/Encounter/inpatient-stay"
DAILY = 9300  # SEK, the default agreement's figure from 2022


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 20, 9, 0, tzinfo=STOCKHOLM))


@pytest.fixture
async def client(
    engine: str, tmp_path: Path, settings: Settings, clock: FixedClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, make_storage(engine, tmp_path), clock) as http:
        await load_case(http)
        yield http


async def put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    url = f"/{resource['resourceType']}/{resource['id']}"
    response = await client.put(url, json=resource)
    assert response.status_code == 200, response.text


async def ready_sent_at(client: httpx.AsyncClient, sent: str) -> None:
    """The ready-for-discharge notice sent at `sent`; the patient still in hospital."""
    notice = example("Communication-ready-for-discharge")
    notice["sent"] = notice["received"] = sent
    await put(client, notice)
    stay = example("Encounter-inpatient-stay")
    stay["status"] = "in-progress"
    del stay["period"]["end"]
    await put(client, stay)


async def liability(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(f"{STAY}/$payment-liability")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Parameters"
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in
            body["parameter"]}  # fmt: skip


@pytest.mark.parametrize(
    ("sent", "start"),
    [
        ("2026-11-16T11:30:00+01:00", "2026-11-19"),  # before 12:00: 3 days after
        ("2026-11-16T13:00:00+01:00", "2026-11-20"),  # after 12:00: 4 days after
        ("2026-11-16T12:00:00+01:00", "2026-11-20"),  # at 12:00: as after, by default
        ("2026-11-13T11:00:00+01:00", "2026-11-16"),  # a Friday: the weekend counts
        ("2026-11-16T10:30:00Z", "2026-11-19"),  # 11:30 in Stockholm, sent as UTC
    ],
)
async def test_r_dis_09_liability_starts_3_or_4_days_after_the_notice(
    client: httpx.AsyncClient, sent: str, start: str
) -> None:
    """R-DIS-09: the day the notice was sent counts as day 1; before 12:00 liability starts
    3 days after it, at or after 12:00 4 days after. Runs to the clock's today (20 Nov)."""
    await ready_sent_at(client, sent)
    found = await liability(client)
    assert found["liable"] is True
    assert found["liabilityStart"] == start
    days = 20 - int(start[-2:]) + 1
    assert found["liableDays"] == days
    assert found["dailyAmount"] == {"value": DAILY, "currency": "SEK"}
    assert found["amount"] == {"value": days * DAILY, "currency": "SEK"}
    assert found["agreement"] == "norrbotten"


@pytest.mark.parametrize(
    ("sent", "start"),
    [
        ("2027-03-28T10:30:00Z", "2027-04-01"),  # summer time began that night: 12:30 local
        ("2027-03-27T10:30:00Z", "2027-03-30"),  # the day before: 11:30 local
        ("2026-10-25T10:30:00Z", "2026-10-28"),  # winter time began that night: 11:30 local
        ("2026-10-24T10:30:00Z", "2026-10-28"),  # the day before: 12:30 local
    ],
)
async def test_r_dis_09_the_cut_off_is_stockholm_time_across_dst(
    client: httpx.AsyncClient, clock: FixedClock, sent: str, start: str
) -> None:
    """R-DIS-09 across the DST changes in March and October: 10:30 UTC is before or after
    12:00 depending on the day's offset."""
    clock.moment = datetime(2027, 4, 10, 9, 0, tzinfo=STOCKHOLM)
    await ready_sent_at(client, sent)
    assert (await liability(client))["liabilityStart"] == start


async def test_r_dis_09_exactly_12_00_per_agreement(
    engine: str, tmp_path: Path, settings: Settings, clock: FixedClock
) -> None:
    """R-DIS-09: whether a notice sent at 12:00 sharp counts as before the cut-off is the
    agreement's ("senast klockan 12.00" in Norrbotten's text)."""
    inclusive = settings.model_copy(update={"payment_agreement": "norrbotten-noon-inclusive"})
    async with app_client(inclusive, make_storage(engine, tmp_path), clock) as http:
        await load_case(http)
        await ready_sent_at(http, "2026-11-16T12:00:00+01:00")
        found = await liability(http)
    assert found["liabilityStart"] == "2026-11-19"
    assert found["agreement"] == "norrbotten-noon-inclusive"


async def test_r_dis_09_runs_to_the_discharge_date(client: httpx.AsyncClient) -> None:
    """R-DIS-09: liability ends with the stay (`Encounter.period.end`), both days counted."""
    await ready_sent_at(client, "2026-11-09T10:30:00+01:00")  # liable from 12 Nov
    stay = example("Encounter-inpatient-stay")
    stay["period"]["end"] = "2026-11-14T09:00:00+01:00"
    await put(client, stay)
    found = await liability(client)
    assert (found["liabilityStart"], found["liableDays"]) == ("2026-11-12", 3)
    assert found["amount"] == {"value": 3 * DAILY, "currency": "SEK"}


async def test_r_dis_09_no_liability_when_discharged_before_it_began(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-09: the example case: ready 9 Nov 10:30, home 10 Nov, liability would begin 12 Nov."""
    found = await liability(client)
    assert found["liable"] is False
    assert found["liabilityStart"] == "2026-11-12"
    assert "discharged before liability began" in found["reason"]


async def test_r_dis_09_no_liability_when_the_municipality_never_got_the_admission_notice(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-09: liability requires that the municipality was notified of the admission."""
    await ready_sent_at(client, "2026-11-09T10:30:00+01:00")
    notice = example("Communication-admission-notice")
    notice["recipient"] = [{"reference": "Organization/ornaset-health-centre"}]
    await put(client, notice)
    found = await liability(client)
    assert found["liable"] is False
    assert "never notified of the admission" in found["reason"]
    assert "liableDays" not in found and "amount" not in found


async def test_r_dis_09_no_liability_without_a_ready_for_discharge_notice_to_it(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-09: nor without the ready-for-discharge notice reaching the municipality."""
    await ready_sent_at(client, "2026-11-09T10:30:00+01:00")
    # R-DIS-08 refuses a ready-for-discharge notice that skips a recipient of the admission
    # notice, so the municipality goes without it only when no notice was sent at all.
    deleted = await client.delete("/Communication/ready-for-discharge")
    assert deleted.status_code in (200, 204), deleted.text
    found = await liability(client)
    assert found["liable"] is False
    assert "ready for discharge" in found["reason"]


async def only_social_services(client: httpx.AsyncClient) -> None:
    """The planning basis, rewritten: home care (hemtjänst) only, no health care, no SIP."""
    basis = example("QuestionnaireResponse-planning-basis")
    for group in basis["item"]:
        for item in group.get("item", []):
            if item["linkId"].endswith(".answer"):
                yes = item["linkId"] == "home-care.answer"
                item["answer"] = [{"valueBoolean": yes}]
    basis["authored"] = "2026-11-08T09:00:00+01:00"
    await put(client, basis)


@pytest.mark.parametrize("sent", ["2026-11-16T11:30:00+01:00", "2026-11-16T13:00:00+01:00"])
async def test_r_dis_09_only_social_services_starts_3_days_after_the_notice(
    client: httpx.AsyncClient, sent: str
) -> None:
    """R-DIS-09: for a patient who needs only social services no SIP invitation is sent and
    liability starts 3 days after the notice, before or after 12:00 alike."""
    await only_social_services(client)
    await ready_sent_at(client, sent)
    found = await liability(client)
    assert (found["liable"], found["liabilityStart"], found["liableDays"]) == (
        True, "2026-11-19", 2,
    )  # fmt: skip


async def awaiting_outpatient_care(client: httpx.AsyncClient, period: dict[str, str]) -> None:
    """The stay, still in hospital, waiting for region-financed outpatient interventions."""
    stay = example("Encounter-inpatient-stay")
    stay["status"] = "in-progress"
    del stay["period"]["end"]
    stay["extension"].append(
        {
            "url": "http://sip-fhir.se/fhir/StructureDefinition/sip-awaiting-outpatient-care",
            "valuePeriod": period,
        }
    )
    await put(client, stay)


async def test_r_dis_09_no_liability_while_outpatient_interventions_are_missing(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-09: liability does not arise while the patient cannot leave because the
    interventions region-financed outpatient care answers for are not available."""
    await ready_sent_at(client, "2026-11-16T11:30:00+01:00")  # liable from 19 Nov
    await awaiting_outpatient_care(client, {"start": "2026-11-17"})
    found = await liability(client)
    assert found["liable"] is False
    assert "outpatient interventions" in found["reason"]
    assert found["liabilityStart"] == "2026-11-19"


async def test_r_dis_09_the_days_waiting_for_outpatient_care_are_not_counted(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-09: only the days outside the waiting period are the municipality's."""
    await ready_sent_at(client, "2026-11-16T11:30:00+01:00")  # 19 and 20 Nov
    await awaiting_outpatient_care(
        client, {"start": "2026-11-19", "end": "2026-11-19T18:00:00+01:00"}
    )
    found = await liability(client)
    assert (found["liable"], found["liableDays"]) == (True, 1)
    assert found["amount"] == {"value": DAILY, "currency": "SEK"}


async def test_payment_liability_of_an_unknown_stay_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/Encounter/nowhere/$payment-liability")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_payment_liability_is_in_the_capability_statement(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    encounter = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Encounter")
    assert "payment-liability" in [o["name"] for o in encounter.get("operation", [])]

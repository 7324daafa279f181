"""history at instance, type and system level: _count, _since, stable paging."""

from __future__ import annotations

import asyncio

import httpx

from tests.resources import care_plan, patient, stored_data


async def _create(client: httpx.AsyncClient, resource: dict) -> dict:
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return response.json()


async def test_instance_history_newest_first(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    url = f"/Patient/{created['id']}"
    await client.put(url, json={**created, "gender": "female"})
    history = (await client.get(f"{url}/_history")).json()
    assert history["type"] == "history"
    assert history["total"] == 2
    versions = [e["resource"]["meta"]["versionId"] for e in history["entry"]]
    assert versions == ["2", "1"]
    first = history["entry"][0]
    assert first["fullUrl"] == f"http://testserver/fhir/Patient/{created['id']}"
    assert first["request"] == {"method": "PUT", "url": f"Patient/{created['id']}"}
    assert first["response"]["etag"] == 'W/"2"'
    assert history["entry"][1]["request"] == {"method": "POST", "url": "Patient"}


async def test_type_and_system_history(client: httpx.AsyncClient) -> None:
    p = await _create(client, patient())
    await _create(client, care_plan(f"Patient/{p['id']}"))
    type_history = (await client.get("/Patient/_history")).json()
    assert type_history["total"] == 1
    system_history = await stored_data(client)
    assert len(system_history) == 2
    assert {e["resource"]["resourceType"] for e in system_history} == {
        "Patient",
        "CarePlan",
    }


async def test_since_is_inclusive_and_filters(client: httpx.AsyncClient) -> None:
    first = await _create(client, patient())
    await asyncio.sleep(0.01)
    second = await _create(client, patient(pnr="191010101010"))
    since = second["meta"]["lastUpdated"]
    history = (await client.get("/Patient/_history", params={"_since": since})).json()
    assert [e["resource"]["id"] for e in history["entry"]] == [second["id"]]
    everything = await client.get("/Patient/_history", params={"_since": "2000-01-01T00:00:00Z"})
    assert everything.json()["total"] == 2
    assert first["id"] in {e["resource"]["id"] for e in everything.json()["entry"]}


async def test_bad_history_parameters_are_400(client: httpx.AsyncClient) -> None:
    assert (await client.get("/_history", params={"_since": "yesterday"})).status_code == 400
    assert (await client.get("/_history", params={"_count": "-1"})).status_code == 400
    assert (await client.get("/_history", params={"_cursor": "garbage"})).status_code == 400
    assert (await client.get("/_history", params={"foo": "1"})).status_code == 400


async def test_paging_is_stable_while_data_changes(client: httpx.AsyncClient) -> None:
    for n in range(7):
        await _create(client, patient(pnr=f"19121212{n:04d}"))
    seen: list[str] = []
    url: str | None = "/Patient/_history?_count=3"
    while url:
        page = (await client.get(url)).json()
        assert page["total"] >= 7
        seen += [e["resource"]["id"] for e in page["entry"]]
        # New versions between page fetches never appear in or disturb later pages.
        await _create(client, patient(pnr="200001010000"))
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) == 7
    assert len(set(seen)) == 7


async def test_count_zero_gives_total_only(client: httpx.AsyncClient) -> None:
    await _create(client, patient())
    page = (await client.get("/Patient/_history", params={"_count": "0"})).json()
    assert page["total"] == 1
    assert "entry" not in page

"""Conditional create, update and delete, and their race safety, on every engine."""

from __future__ import annotations

import asyncio

import httpx

from tests.resources import PERSONNUMMER, patient

PNR = f"{PERSONNUMMER}|191212121212"


async def test_conditional_create_if_none_exist(client: httpx.AsyncClient) -> None:
    first = await client.post(
        "/Patient", json=patient(), headers={"If-None-Exist": f"identifier={PNR}"}
    )
    assert first.status_code == 201
    second = await client.post(
        "/Patient", json=patient(), headers={"If-None-Exist": f"identifier={PNR}"}
    )
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert (await client.get("/Patient", params={"identifier": PNR})).json()["total"] == 1


async def test_conditional_create_in_query_string_as_fhirpy_sends(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/Patient", params={"identifier": PNR}, json=patient())
    second = await client.post("/Patient", params={"identifier": PNR}, json=patient())
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


async def test_conditional_create_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json=patient())
    await client.post("/Patient", json=patient())
    response = await client.post(
        "/Patient", json=patient(), headers={"If-None-Exist": f"identifier={PNR}"}
    )
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "multiple-matches"


async def test_conditional_create_with_unknown_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json=patient(), headers={"If-None-Exist": "nope=1"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["nope"]
    assert (await client.get("/Patient")).json()["total"] == 0


async def test_concurrent_conditional_creates_make_one_resource(client: httpx.AsyncClient) -> None:
    headers = {"If-None-Exist": f"identifier={PNR}"}
    responses = await asyncio.gather(
        *(client.post("/Patient", json=patient(), headers=headers) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert (await client.get("/Patient", params={"identifier": PNR})).json()["total"] == 1


async def test_concurrent_if_match_updates_one_wins(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient())).json()
    url = f"/Patient/{created['id']}"
    responses = await asyncio.gather(
        *(
            client.put(url, json={**created, "gender": g}, headers={"If-Match": 'W/"1"'})
            for g in ["female", "male", "other", "unknown"] * 5
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 19
    assert (await client.get(f"{url}/_history")).json()["total"] == 2


async def test_conditional_update_creates_then_updates(client: httpx.AsyncClient) -> None:
    created = await client.put(f"/Patient?identifier={PNR}", json=patient())
    assert created.status_code == 201
    updated = await client.put(f"/Patient?identifier={PNR}", json=patient(gender="female"))
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"


async def test_conditional_update_id_conflict_and_multiple(client: httpx.AsyncClient) -> None:
    await client.put(f"/Patient?identifier={PNR}", json=patient())
    wrong_id = await client.put(f"/Patient?identifier={PNR}", json=patient(id="other"))
    assert wrong_id.status_code == 400
    await client.post("/Patient", json=patient())
    several = await client.put(f"/Patient?identifier={PNR}", json=patient())
    assert several.status_code == 412


async def test_conditional_update_honours_if_match(client: httpx.AsyncClient) -> None:
    await client.put(f"/Patient?identifier={PNR}", json=patient())
    stale = await client.put(
        f"/Patient?identifier={PNR}", json=patient(), headers={"If-Match": 'W/"5"'}
    )
    assert stale.status_code == 412


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient())).json()
    response = await client.delete(f"/Patient?identifier={PNR}")
    assert response.status_code == 200
    assert (await client.get(f"/Patient/{created['id']}")).status_code == 410
    nothing = await client.delete(f"/Patient?identifier={PNR}")
    assert nothing.status_code == 200
    assert nothing.json()["issue"][0]["code"] == "not-found"


async def test_conditional_delete_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json=patient())
    await client.post("/Patient", json=patient())
    assert (await client.delete(f"/Patient?identifier={PNR}")).status_code == 412
    assert (await client.get("/Patient", params={"identifier": PNR})).json()["total"] == 2


async def test_conditional_delete_without_criteria_is_400(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json=patient())
    assert (await client.delete("/Patient")).status_code == 400
    assert (await client.get("/Patient")).json()["total"] == 1

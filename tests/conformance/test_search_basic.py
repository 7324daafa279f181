"""The search this stage serves (_id, identifier): strict parameters, paging, bundle shape."""

from __future__ import annotations

import httpx

from tests.resources import PERSONNUMMER, patient


async def test_search_by_id_and_identifier(client: httpx.AsyncClient) -> None:
    a = (await client.post("/Patient", json=patient("191212121212"))).json()
    b = (await client.post("/Patient", json=patient("191010101010"))).json()
    by_id = (await client.get("/Patient", params={"_id": f"{a['id']},{b['id']}"})).json()
    assert by_id["type"] == "searchset"
    assert by_id["total"] == 2
    assert by_id["entry"][0]["search"]["mode"] == "match"
    by_identifier = await client.get("/Patient", params={"identifier": "191010101010"})
    assert [e["resource"]["id"] for e in by_identifier.json()["entry"]] == [b["id"]]
    by_system = await client.get("/Patient", params={"identifier": f"{PERSONNUMMER}|"})
    assert by_system.json()["total"] == 2
    wrong_system = await client.get("/Patient", params={"identifier": "urn:x|191010101010"})
    assert wrong_system.json()["total"] == 0
    no_system = await client.get("/Patient", params={"identifier": "|191010101010"})
    assert no_system.json()["total"] == 0


async def test_deleted_resources_are_not_found(client: httpx.AsyncClient) -> None:
    a = (await client.post("/Patient", json=patient())).json()
    await client.delete(f"/Patient/{a['id']}")
    assert (await client.get("/Patient", params={"_id": a["id"]})).json()["total"] == 0


async def test_unknown_parameter_is_400_unless_lenient(client: httpx.AsyncClient) -> None:
    strict = await client.get("/Patient", params={"favourite": "x"})
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["expression"] == ["favourite"]
    lenient = await client.get(
        "/Patient", params={"favourite": "x"}, headers={"Prefer": "handling=lenient"}
    )
    assert lenient.status_code == 200
    outcome = lenient.json()["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert outcome["resource"]["issue"][0]["severity"] == "warning"


async def test_paging_visits_each_resource_once(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await client.post("/Patient", json=patient(f"19121212{n:04d}"))
    seen: list[str] = []
    url: str | None = "/Patient?_count=2"
    while url:
        page = (await client.get(url)).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((x["url"] for x in page["link"] if x["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) == 5


async def test_post_search_with_form_body(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient())).json()
    response = await client.post("/Patient/_search", data={"_id": created["id"]})
    assert response.status_code == 200
    assert response.json()["total"] == 1


async def test_hostile_values_are_plain_values(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json=patient())
    for value in ['{"$where": "1"}', "'; DROP TABLE history; --", "$gt", ".*", "a|b|c"]:
        response = await client.get("/Patient", params={"identifier": value})
        assert response.status_code in (200, 400)
        if response.status_code == 200:
            assert response.json()["total"] == 0
    assert (await client.get("/Patient")).json()["total"] == 1

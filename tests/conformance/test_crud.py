"""read, vread, create, update, delete over HTTP on every engine (FHIR R4 http.html)."""

from __future__ import annotations

import httpx

from tests.resources import care_plan, patient


async def test_create_assigns_id_version_and_headers(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json=patient())
    assert response.status_code == 201
    body = response.json()
    assert body["resourceType"] == "Patient"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == (
        f"http://testserver/fhir/Patient/{body['id']}/_history/1"
    )
    assert response.headers["last-modified"].endswith("GMT")
    assert response.headers["content-type"].startswith("application/fhir+json")


async def test_create_ignores_client_id_and_server_meta(client: httpx.AsyncClient) -> None:
    sent = patient(id="client-chosen", meta={"versionId": "99", "profile": ["http://x/p"]})
    body = (await client.post("/Patient", json=sent)).json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["profile"] == ["http://x/p"]


async def test_read_returns_what_create_returned(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=patient())
    read = await client.get(f"/Patient/{created.json()['id']}")
    assert read.status_code == 200
    assert read.content == created.content
    assert read.headers["etag"] == 'W/"1"'


async def test_decimal_precision_is_kept(client: httpx.AsyncClient) -> None:
    observation = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"vikt"},'
        b'"valueQuantity":{"value":72.50,"unit":"kg"}}'
    )
    created = await client.post(
        "/Observation", content=observation, headers={"Content-Type": "application/fhir+json"}
    )
    assert created.status_code == 201
    read = await client.get(f"/Observation/{created.json()['id']}")
    assert b'"value":72.50' in read.content


async def test_read_unknown_is_404_operation_outcome(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient/does-not-exist")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == "not-found"


async def test_unknown_resource_type_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patientt/1")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_invalid_id_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put("/Patient/bad_id!", json=patient(id="bad_id!"))
    assert response.status_code == 400
    assert (await client.get("/Patient/" + "a" * 65)).status_code == 400


async def test_update_increments_version(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient())).json()
    changed = {**created, "gender": "female"}
    response = await client.put(f"/Patient/{created['id']}", json=changed)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.json()["gender"] == "female"
    assert response.headers["etag"] == 'W/"2"'
    assert response.json()["meta"]["lastUpdated"] > created["meta"]["lastUpdated"]


async def test_update_as_create_with_client_id(client: httpx.AsyncClient) -> None:
    response = await client.put("/Patient/tolvan-1", json=patient(id="tolvan-1"))
    assert response.status_code == 201
    assert response.json()["id"] == "tolvan-1"
    assert response.headers["location"].endswith("/Patient/tolvan-1/_history/1")
    assert (await client.get("/Patient/tolvan-1")).status_code == 200


async def test_update_id_mismatch_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put("/Patient/a", json=patient(id="b"))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Patient.id"]
    missing = await client.put("/Patient/a", json=patient())
    assert missing.status_code == 400
    assert (await client.get("/Patient/a")).status_code == 404


async def test_resource_type_mismatch_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json=care_plan("Patient/1"))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["resourceType"]


async def test_if_match_mismatch_is_412(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient())).json()
    url = f"/Patient/{created['id']}"
    stale = await client.put(url, json=created, headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    fresh = await client.put(url, json=created, headers={"If-Match": 'W/"1"'})
    assert fresh.status_code == 200
    assert fresh.json()["meta"]["versionId"] == "2"


async def test_vread_each_version(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient())).json()
    url = f"/Patient/{created['id']}"
    await client.put(url, json={**created, "gender": "female"})
    first = await client.get(f"{url}/_history/1")
    second = await client.get(f"{url}/_history/2")
    assert first.json()["gender"] == "male"
    assert second.json()["gender"] == "female"
    assert second.headers["etag"] == 'W/"2"'
    assert (await client.get(f"{url}/_history/3")).status_code == 404
    assert (await client.get(f"{url}/_history/x")).status_code == 404


async def test_delete_then_read_is_410_and_history_keeps_it(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient())).json()
    url = f"/Patient/{created['id']}"
    deleted = await client.delete(url)
    assert deleted.status_code == 200
    assert deleted.json()["resourceType"] == "OperationOutcome"
    assert deleted.headers["etag"] == 'W/"2"'
    gone = await client.get(url)
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert (await client.get(f"{url}/_history/1")).status_code == 200
    assert (await client.get(f"{url}/_history/2")).status_code == 410
    history = (await client.get(f"{url}/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]


async def test_delete_twice_and_unknown_change_nothing(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient())).json()
    url = f"/Patient/{created['id']}"
    await client.delete(url)
    again = await client.delete(url)
    assert again.status_code == 200
    assert (await client.get(f"{url}/_history")).json()["total"] == 2
    assert (await client.delete("/Patient/never-was")).status_code == 200
    assert (await client.get("/Patient/never-was/_history")).json()["total"] == 0


async def test_update_after_delete_revives(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/p1", json=patient(id="p1"))
    await client.delete("/Patient/p1")
    revived = await client.put("/Patient/p1", json=patient(id="p1"))
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"
    assert (await client.get("/Patient/p1")).status_code == 200


async def test_prefer_return_minimal_and_outcome(client: httpx.AsyncClient) -> None:
    minimal = await client.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"]
    outcome = await client.post(
        "/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"}
    )
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    assert outcome.json()["issue"][0]["severity"] == "information"


async def test_conditional_read_not_modified(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=patient())
    url = f"/Patient/{created.json()['id']}"
    cached = await client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert cached.status_code == 304
    modified = await client.get(url, headers={"If-None-Match": 'W/"0"'})
    assert modified.status_code == 200
    since = await client.get(url, headers={"If-Modified-Since": created.headers["last-modified"]})
    assert since.status_code == 304


async def test_pretty_output_is_same_resource(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=patient())
    pretty = await client.get(f"/Patient/{created.json()['id']}", params={"_pretty": "true"})
    assert b"\n  " in pretty.content
    assert pretty.json() == created.json()


async def test_every_r4_resource_type_is_routed(client: httpx.AsyncClient) -> None:
    """An R4-only type (not in R4B) is accepted and typed by the R4 definitions."""
    product = {"resourceType": "MedicinalProduct", "name": [{"productName": "Alvedon"}]}
    created = await client.post("/MedicinalProduct", json=product)
    assert created.status_code == 201, created.text
    wrong = {"resourceType": "MedicinalProduct", "name": [{"productName": 5}]}
    rejected = await client.post("/MedicinalProduct", json=wrong)
    assert rejected.status_code in (400, 422)

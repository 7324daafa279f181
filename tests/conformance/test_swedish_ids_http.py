"""Every write path stores personnummer and samordningsnummer as 12 digits, and `$validate`
judges them as a write would store them (SIP Patient profile: sip-patient-2..5)."""

from __future__ import annotations

from typing import Any

import httpx

PNR = "http://electronichealth.se/identifier/personnummer"
SIP_PATIENT = "http://sip-fhir.se/fhir/StructureDefinition/sip-patient"


def sip_patient(value: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "meta": {"profile": [SIP_PATIENT]},
        "identifier": [{"system": PNR, "value": value}],
        "name": [{"family": "Tolvansson", "given": ["Tolvan"]}],
        "telecom": [{"system": "phone", "value": "070-1234567"}],
    }


async def test_create_update_and_transaction_store_twelve_digits(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post("/Patient", json=sip_patient("19121212-1212"))
    assert created.status_code == 201, created.text
    assert created.json()["identifier"][0]["value"] == "191212121212"
    updated = await client.put(
        f"/Patient/{created.json()['id']}",
        json={**sip_patient("121212+1212"), "id": created.json()["id"]},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["identifier"][0]["value"] == "191212121212"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": sip_patient("500101-1237"),
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"].rsplit("/_history", 1)[0]
    stored = (await client.get(f"/{location}")).json()
    assert stored["identifier"][0]["value"] == "195001011237"
    found = await client.get("/Patient", params={"identifier": f"{PNR}|191212121212"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [created.json()["id"]]


async def test_validate_judges_the_normalised_form(client: httpx.AsyncClient) -> None:
    ok = await client.post("/Patient/$validate", json=sip_patient("121212+1212"))
    assert [i for i in ok.json()["issue"] if i["severity"] == "error"] == []
    bad = await client.post("/Patient/$validate", json=sip_patient("121212+1213"))
    errors = [i for i in bad.json()["issue"] if i["severity"] == "error"]
    assert errors and errors[0]["expression"] == ["Patient.identifier[0]"]
    assert "sip-patient-3" in errors[0]["diagnostics"]

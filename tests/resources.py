"""Small realistic resources for tests (Swedish identifiers as HL7 Sweden's base profiles use)."""

from __future__ import annotations

from typing import Any

from fhir_server.validation.conformance import KINDS

PERSONNUMMER = "http://electronichealth.se/identifier/personnummer"
HSA_ID = "urn:oid:1.2.752.29.4.19"


def patient(pnr: str = "191212121212", family: str = "Tolvansson", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": PERSONNUMMER, "value": pnr}],
        "name": [{"family": family, "given": ["Tolvan"]}],
        "gender": "male",
        "birthDate": "1912-12-12",
        **extra,
    }


def care_plan(patient_ref: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "title": "Samordnad individuell plan",
        "subject": {"reference": patient_ref},
        **extra,
    }


CONFORMANCE_TYPES = set(KINDS)  # what the server publishes from profiles/ and mappings/


async def stored_data(client: Any) -> list[dict[str, Any]]:
    """System history less the conformance resources the server publishes from profiles/."""
    history = (await client.get("/_history", params={"_count": 1000})).json()
    return [
        e
        for e in history.get("entry", [])
        if e.get("resource", {}).get("resourceType") not in CONFORMANCE_TYPES
        and e["request"]["url"].split("/")[0] not in CONFORMANCE_TYPES
    ]


async def same_verdict_from_validate(
    client: Any, resource: dict[str, Any], write_issues: list[dict[str, Any]]
) -> None:
    """`$validate` finds exactly the errors the refused write reported (same code, location and
    message), so a profile rule holds on both paths."""
    response = await client.post(f"/{resource['resourceType']}/$validate", json=resource)
    assert response.status_code == 200, response.text

    def errors(issues: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        found = [i for i in issues if i["severity"] in ("error", "fatal")]
        return sorted((i["code"], tuple(i.get("expression", ())), i["diagnostics"]) for i in found)

    assert errors(response.json()["issue"]) == errors(write_issues)

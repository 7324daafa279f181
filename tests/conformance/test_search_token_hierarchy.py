"""Token `:below`/`:above`: subsumption by a code system's is-a hierarchy, on both engines.

A core R4 system (v3 ActCode, on `Encounter.class`) and a local one from `tests/profiles`
(test-care-level: nested concepts plus the `parent`/`child` properties) each get a small
population; every row is a query and the exact set of resources (by a stable tag in
`identifier`) it must return.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhir_server.validation.definitions import CodeHierarchy

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CARE = "http://sip-fhir.se/fhir/CodeSystem/test-care-level"
FORM = "http://sip-fhir.se/fhir/CodeSystem/test-meeting-form"
GENDER = "http://hl7.org/fhir/administrative-gender"
RACE = "http://terminology.hl7.org/CodeSystem/v3-Race"
ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
TAG = "urn:test:tag"

# ActCode: _ActCareProvisionCode > _ActEncounterCode > {AMB, IMP > {ACUTE, NONAC}, ...}
ENCOUNTERS = {
    "e-group": (ACT, "_ActEncounterCode"),
    "e-amb": (ACT, "AMB"),
    "e-imp": (ACT, "IMP"),
    "e-acute": (ACT, "ACUTE"),
    "e-nonac": (ACT, "NONAC"),
    "e-other": ("urn:other", "IMP"),  # the same code in another system
}
# test-care-level: oppenvard > {primarvard, hemsjukvard > asih}; palliativ > asih (property
# `parent`); slutenvard > iva (property `child`); egenvard alone.
OBSERVATIONS = {
    "o-egen": (CARE, "egenvard"),
    "o-oppen": (CARE, "oppenvard"),
    "o-primar": (CARE, "primarvard"),
    "o-hem": (CARE, "hemsjukvard"),
    "o-asih": (CARE, "asih"),
    "o-pall": (CARE, "palliativ"),
    "o-sluten": (CARE, "slutenvard"),
    "o-iva": (CARE, "iva"),
    "o-digital": (FORM, "digitalt"),
    "o-phone": (FORM, "telefon"),
}
PATIENTS = {"p-female": "female", "p-male": "male", "p-other": "other"}


def _tagged(tag: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"identifier": [{"system": TAG, "value": tag}], **resource}


def _resources() -> list[dict[str, Any]]:
    encounters = [
        _tagged(tag, {
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": system, "code": code},
        })
        for tag, (system, code) in ENCOUNTERS.items()
    ]  # fmt: skip
    observations = [
        _tagged(tag, {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": system, "code": code}]},
        })
        for tag, (system, code) in OBSERVATIONS.items()
    ]  # fmt: skip
    patients = [
        _tagged(tag, {"resourceType": "Patient", "gender": gender})
        for tag, gender in PATIENTS.items()
    ]
    return [*encounters, *observations, *patients]


@pytest.fixture
async def population(client: httpx.AsyncClient) -> None:
    for resource in _resources():
        created = await client.post(f"/{resource['resourceType']}", json=resource)
        assert created.status_code == 201, created.text


async def _tags(
    client: httpx.AsyncClient, url: str, params: Any, headers: dict[str, str] | None = None
) -> list[str]:
    response = await client.get(url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    entries = response.json().get("entry", [])
    return sorted(
        e["resource"]["identifier"][0]["value"] for e in entries if e["search"]["mode"] == "match"
    )


CASES = [  # (id, type, query, expected tags)
    # core hierarchy: self and descendants (grandchildren too), not siblings or parents
    ("below-self-and-children", "Encounter", {"class:below": f"{ACT}|IMP"},
     ["e-acute", "e-imp", "e-nonac"]),
    ("below-grandchildren", "Encounter", {"class:below": f"{ACT}|_ActEncounterCode"},
     ["e-acute", "e-amb", "e-group", "e-imp", "e-nonac"]),
    ("below-leaf", "Encounter", {"class:below": f"{ACT}|ACUTE"}, ["e-acute"]),
    ("below-unknown-code", "Encounter", {"class:below": f"{ACT}|NOPE"}, []),
    # core hierarchy: self and ancestors, not children or siblings
    ("above-self-and-ancestors", "Encounter", {"class:above": f"{ACT}|ACUTE"},
     ["e-acute", "e-group", "e-imp"]),
    ("above-not-children", "Encounter", {"class:above": f"{ACT}|IMP"}, ["e-group", "e-imp"]),
    # local hierarchy: nesting, the `parent` and `child` properties (asih has two parents)
    ("local-below-nested", "Observation", {"code:below": f"{CARE}|oppenvard"},
     ["o-asih", "o-hem", "o-oppen", "o-primar"]),
    ("local-below-parent-property", "Observation", {"code:below": f"{CARE}|palliativ"},
     ["o-asih", "o-pall"]),
    ("local-below-child-property", "Observation", {"code:below": f"{CARE}|slutenvard"},
     ["o-iva", "o-sluten"]),
    ("local-above-two-parents", "Observation", {"code:above": f"{CARE}|asih"},
     ["o-asih", "o-hem", "o-oppen", "o-pall"]),
    ("local-above-not-children", "Observation", {"code:above": f"{CARE}|hemsjukvard"},
     ["o-hem", "o-oppen"]),
    # flat systems: the code itself
    ("local-flat", "Observation", {"code:below": f"{FORM}|digitalt"}, ["o-digital"]),
    ("core-flat-below", "Patient", {"gender:below": f"{GENDER}|male"}, ["p-male"]),
    ("core-flat-above", "Patient", {"gender:above": f"{GENDER}|other"}, ["p-other"]),
    # OR within a parameter (also across systems), AND across repeated parameters
    ("or", "Encounter", {"class:below": f"{ACT}|IMP,{ACT}|AMB"},
     ["e-acute", "e-amb", "e-imp", "e-nonac"]),
    ("or-across-systems", "Observation",
     {"code:below": f"{CARE}|slutenvard,{FORM}|telefon"}, ["o-iva", "o-phone", "o-sluten"]),
    ("or-above", "Observation", {"code:above": f"{CARE}|primarvard,{CARE}|iva"},
     ["o-iva", "o-oppen", "o-primar", "o-sluten"]),
    ("and", "Observation",
     {"code:below": [f"{CARE}|oppenvard", f"{CARE}|palliativ"]}, ["o-asih"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("type", "query", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_subsumption_matches_exactly(
    client: httpx.AsyncClient,
    population: None,
    type: str,
    query: dict[str, Any],
    expected: list[str],
) -> None:
    assert await _tags(client, f"/{type}", query) == expected


async def _refused(client: httpx.AsyncClient, params: Any, code: str, name: str) -> None:
    response = await client.get("/Observation", params=params)
    assert response.status_code == 400, response.text
    [issue] = response.json()["issue"]
    assert (issue["severity"], issue["code"], issue["expression"]) == ("error", code, [name])


async def test_unknown_system_is_not_supported(client: httpx.AsyncClient, population: None) -> None:
    for system in ("http://loinc.org", "urn:unknown", "http://snomed.info/sct"):
        await _refused(client, {"code:below": f"{system}|1234-5"}, "not-supported", "code:below")
    await _refused(client, {"code:above": "urn:unknown|x"}, "not-supported", "code:above")
    mixed = {"code:below": f"{CARE}|iva,urn:unknown|x"}  # one unknown alternative is enough
    await _refused(client, mixed, "not-supported", "code:below")


async def test_unknown_system_is_dropped_when_lenient(
    client: httpx.AsyncClient, population: None
) -> None:
    lenient = {"Prefer": "handling=lenient"}
    params = {"code:below": "urn:unknown|x"}
    response = await client.get("/Observation", params=params, headers=lenient)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert len([e for e in bundle["entry"] if e["search"]["mode"] == "match"]) == len(OBSERVATIONS)
    [outcome] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    [issue] = outcome["issue"]
    assert (issue["severity"], issue["code"]) == ("warning", "not-supported")
    assert issue["expression"] == ["code:below"]
    [self_link] = [link["url"] for link in bundle["link"] if link["relation"] == "self"]
    assert "below" not in self_link
    kept = {"code:below": [f"{CARE}|slutenvard", "urn:unknown|x"]}
    assert await _tags(client, "/Observation", kept, lenient) == ["o-iva", "o-sluten"]


async def test_value_without_system_is_invalid(client: httpx.AsyncClient) -> None:
    for value in ("asih", "|asih", f"{CARE}|"):
        await _refused(client, {"code:below": value}, "invalid", "code:below")
    lenient = await client.get(
        "/Observation", params={"code:above": "asih"}, headers={"Prefer": "handling=lenient"}
    )
    assert lenient.status_code == 400  # a malformed value is never dropped


async def test_too_many_codes_are_too_costly(client: httpx.AsyncClient) -> None:
    # v3-Race 1002-5 has 828 codes at or below it: allowed; with 353 more it is too many.
    allowed = await client.get("/Encounter", params={"class:below": f"{RACE}|1002-5"})
    assert allowed.status_code == 200, allowed.text
    both = {"class:below": f"{RACE}|1002-5,{ROUTE}|_RouteBySite"}
    response = await client.get("/Encounter", params=both)
    assert response.status_code == 400
    [issue] = response.json()["issue"]
    assert (issue["code"], issue["expression"]) == ("too-costly", ["class:below"])


def test_cycles_in_the_data_end_the_walk() -> None:
    hierarchy = CodeHierarchy.of("urn:cycle", {"a": ["c"], "b": ["a"], "c": ["b"], "d": ["a"]})
    assert hierarchy.closure("a", below=True) == ["a", "b", "c", "d"]
    assert hierarchy.closure("d", below=False) == ["a", "b", "c", "d"]
    assert hierarchy.closure("x", below=True) == ["x"]

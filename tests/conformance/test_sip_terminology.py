"""The SIP terminology in `profiles/`: CodeSystems and their whole-system ValueSets.

Each one is published at its canonical URL with exactly the codes below (other artefacts, e.g.
ConceptMaps, target these codes), Swedish displays and English definitions, and is usable in
token searches (`:in`, `:not-in`, `:below`).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

BASE = "http://sip-fhir.se/fhir"
TAG = "urn:test:tag"
RULE_ID = re.compile(r"\bR-(?:SIP|DIS|MTG|ACC|IND)-\d\d\b")
ENGLISH = re.compile(r"\b(?:the|a|an|of|to|in|by|or|and)\b")

TERMINOLOGY: dict[str, dict[str, str]] = {  # id -> code -> Swedish display
    "sip-meeting-purpose": {
        "sip": "SIP-möte",
        "uppfoljning": "Uppföljning av SIP",
        "planering": "Planering (förplanering)",
        "aktors-och-planeringsmote": "Aktörs- och planeringsmöte",
        "kort-planeringstraff": "Kort planeringsträff",
    },
    "sip-meeting-form": {
        "fysiskt": "Fysiskt möte",
        "digitalt": "Digitalt möte",
        "telefon": "Telefonmöte",
    },
    "sip-principal-type": {"region": "Region", "kommun": "Kommun", "annan": "Annan huvudman"},
    "sip-unit-type": {
        "narsjukvard": "Närsjukvård",
        "slutenvard": "Slutenvård",
        "specialiserad-oppenvard": "Specialiserad öppenvård",
        "psykiatrisk-oppenvard": "Psykiatrisk öppenvård",
        "psykiatrisk-slutenvard": "Psykiatrisk slutenvård",
        "kommun": "Kommun",
        "socialtjanst": "Socialtjänst",
        "kommunal-halso-och-sjukvard": "Kommunal hälso- och sjukvård",
        "sarskilt-boende": "Särskilt boende",
        "annan": "Annan",
    },
    "sip-message-type": {
        "inskrivningsmeddelande": "Inskrivningsmeddelande",
        "planeringsunderlag": "Planeringsunderlag",
        "utskrivningsklar": "Utskrivningsklar",
        "utskrivningsmeddelande": "Utskrivningsmeddelande",
        "kallelse": "Kallelse",
        "generellt-meddelande": "Generellt meddelande",
        "kvittens": "Kvittens",
        "sip-behov": "Behov av SIP",
    },
    "sip-goal-level": {"huvudmal": "Huvudmål", "delmal": "Delmål"},
    "sip-plan-closure-reason": {
        "mal-uppfyllda": "Mål uppfyllda",
        "samtycke-aterkallat": "Samtycke återkallat",
        "avliden": "Avliden",
        "annan": "Annan orsak",
    },
    "sip-consent-kind": {
        "sip": "Samtycke till SIP",
        "informationsoverforing": "Samtycke till informationsöverföring",
    },
    "sip-obligation-type": {
        "skicka-inskrivningsmeddelande": "Skicka inskrivningsmeddelande",
        "kvittera-meddelande": "Kvittera meddelande",
        "fylla-i-planeringsunderlag": "Fylla i planeringsunderlag",
        "utse-fast-vardkontakt": "Utse fast vårdkontakt",
        "skicka-utskrivningsklar": "Skicka meddelande om utskrivningsklar",
        "skicka-sip-kallelse": "Skicka kallelse till SIP-möte",
        "skicka-utskrivningsmeddelande": "Skicka utskrivningsmeddelande",
        "uppratta-sip": "Upprätta SIP",
        "dokumentera-plan": "Dokumentera planen",
        "folja-upp-plan": "Följa upp planen",
        "skicka-uppfoljningskallelse": "Skicka kallelse till uppföljning",
    },
    "sip-care-track": {"rott-spar": "Rött spår"},
}

# Task.code of a legal obligation: the definition names the rule whose deadline it tracks.
OBLIGATION_RULES = {
    "skicka-inskrivningsmeddelande": ["R-DIS-01"],
    "kvittera-meddelande": ["R-DIS-05"],
    "fylla-i-planeringsunderlag": ["R-DIS-06"],
    "utse-fast-vardkontakt": ["R-DIS-07"],
    "skicka-utskrivningsklar": ["R-DIS-08"],
    "skicka-sip-kallelse": ["R-DIS-10", "R-SIP-02"],
    "skicka-utskrivningsmeddelande": ["R-DIS-12"],
    "uppratta-sip": ["R-DIS-14"],
    "dokumentera-plan": ["R-SIP-06"],
    "folja-upp-plan": ["R-SIP-08"],
    "skicka-uppfoljningskallelse": ["R-SIP-09"],
}


async def _published(client: httpx.AsyncClient, kind: str, cid: str) -> dict[str, Any]:
    url = f"{BASE}/{kind}/{cid}"
    response = await client.get(f"/{kind}", params={"url": url})
    assert response.status_code == 200, response.text
    [entry] = response.json()["entry"]
    resource = entry["resource"]
    assert (resource["id"], resource["url"]) == (cid, url)
    return resource


def _metadata_ok(resource: dict[str, Any]) -> None:
    assert resource["version"] == "0.1.0"
    assert resource["status"] == "active"
    assert resource["publisher"] == "sip-fhir"
    assert resource["language"] == "sv"
    assert resource["title"].strip()
    assert RULE_ID.search(resource["description"]), resource["description"]


@pytest.mark.parametrize("cid", TERMINOLOGY)
async def test_code_system_is_published_with_exact_codes(
    client: httpx.AsyncClient, cid: str
) -> None:
    system = await _published(client, "CodeSystem", cid)
    _metadata_ok(system)
    assert system["content"] == "complete"
    assert system["caseSensitive"] is True
    assert [c["code"] for c in system["concept"]] == list(TERMINOLOGY[cid])
    assert all("concept" not in c for c in system["concept"])  # flat lists


@pytest.mark.parametrize("cid", TERMINOLOGY)
async def test_value_set_includes_the_whole_code_system(
    client: httpx.AsyncClient, cid: str
) -> None:
    value_set = await _published(client, "ValueSet", cid)
    _metadata_ok(value_set)
    [include] = value_set["compose"]["include"]
    assert include == {"system": f"{BASE}/CodeSystem/{cid}"}


@pytest.mark.parametrize("cid", TERMINOLOGY)
async def test_concepts_have_swedish_display_and_english_definition(
    client: httpx.AsyncClient, cid: str
) -> None:
    system = await _published(client, "CodeSystem", cid)
    displays = {c["code"]: c["display"] for c in system["concept"]}
    assert displays == TERMINOLOGY[cid]
    for concept in system["concept"]:
        definition = concept["definition"]
        assert definition.strip() and definition != concept["display"]
        assert ENGLISH.search(definition), (cid, concept["code"], definition)


async def test_obligation_definitions_name_their_rule(client: httpx.AsyncClient) -> None:
    """Each obligation names the rule with its deadline: R-DIS-01, R-DIS-05..08, R-DIS-10,
    R-DIS-12, R-DIS-14, R-SIP-02, R-SIP-06, R-SIP-08, R-SIP-09."""
    system = await _published(client, "CodeSystem", "sip-obligation-type")
    for concept in system["concept"]:
        named = set(RULE_ID.findall(concept["definition"]))
        assert set(OBLIGATION_RULES[concept["code"]]) <= named, concept


def _appointment(tag: str, system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "identifier": [{"system": TAG, "value": tag}],
        "status": "proposed",
        "serviceType": [{"coding": [{"system": system, "code": code}]}],
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "needs-action"}],
    }


async def _tags(client: httpx.AsyncClient, url: str, params: dict[str, str]) -> list[str]:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    entries = response.json().get("entry", [])
    return sorted(e["resource"]["identifier"][0]["value"] for e in entries)


async def test_meeting_purpose_value_set_in_token_search(client: httpx.AsyncClient) -> None:
    """What a meeting is for, as an invitation states it (R-SIP-04), is searchable by value set:
    the same code in another system does not match."""
    purpose = f"{BASE}/CodeSystem/sip-meeting-purpose"
    for resource in (
        _appointment("sip", purpose, "sip"),
        _appointment("other", "urn:other:purpose", "sip"),
    ):
        created = await client.post("/Appointment", json=resource)
        assert created.status_code == 201, created.text
    value_set = f"{BASE}/ValueSet/sip-meeting-purpose"
    assert await _tags(client, "/Appointment", {"service-type:in": value_set}) == ["sip"]
    assert await _tags(client, "/Appointment", {"service-type:not-in": value_set}) == ["other"]


async def test_below_on_flat_unit_type_is_the_code_itself(client: httpx.AsyncClient) -> None:
    """Unit types are a flat list: `slutenvard` subsumes neither `psykiatrisk-slutenvard` nor
    anything else (who receives notices depends on the exact unit type, R-DIS-02)."""
    units = f"{BASE}/CodeSystem/sip-unit-type"
    for code in ("slutenvard", "psykiatrisk-slutenvard", "narsjukvard"):
        organization = {
            "resourceType": "Organization",
            "identifier": [{"system": TAG, "value": code}],
            "type": [{"coding": [{"system": units, "code": code}]}],
            "name": code,
        }
        created = await client.post("/Organization", json=organization)
        assert created.status_code == 201, created.text
    below = {"type:below": f"{units}|slutenvard"}
    assert await _tags(client, "/Organization", below) == ["slutenvard"]
    assert await _tags(client, "/Organization", {"type:below": f"{units}|annan"}) == []

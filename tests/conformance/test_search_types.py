"""Search by parameter type, modifier and prefix: table-driven, on both engines.

One small population is stored through the API; each row is a query and the exact set of
resources (by a stable tag in `identifier`) it must return.  Running the same table on SQLite
and MongoDB proves both engines give identical result sets.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
INERA = "https://fhir.inera.se/CodeSystem/typeofcareplan-cs"
TAG = "urn:test:tag"


def _tagged(tag: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"identifier": [{"system": TAG, "value": tag}], **resource}


PATIENTS = [
    _tagged("p1", {
        "resourceType": "Patient", "gender": "female", "birthDate": "1950-03-15",
        "name": [{"family": "Öberg", "given": ["Åsa"]}], "active": True,
        "address": [{"city": "Luleå", "postalCode": "97231"}],
        "telecom": [{"system": "phone", "value": "+46701234567"}],
    }),
    _tagged("p2", {
        "resourceType": "Patient", "gender": "male", "birthDate": "1950-03",
        "name": [{"family": "Berg", "given": ["Bengt"]}], "active": False,
    }),
    _tagged("p3", {
        "resourceType": "Patient", "birthDate": "1962-12-31",
        "name": [{"family": "Lind", "given": ["Asa"]}],
    }),
]  # fmt: skip


def _observations(ids: dict[str, str]) -> list[dict[str, Any]]:
    return [
        _tagged("o1", {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
            "subject": {"reference": f"Patient/{ids['p1']}"},
            "effectiveDateTime": "2026-03-05T10:00:00+01:00",
            "valueQuantity": {"value": 72.5, "unit": "kg", "system": UCUM, "code": "kg"},
        }),
        _tagged("o2", {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8302-2", "display": "Body height"}]},
            "subject": {"reference": f"Patient/{ids['p2']}"},
            "effectivePeriod": {"start": "2026-03-01", "end": "2026-03-10"},
            "valueQuantity": {"value": 180, "unit": "cm", "system": UCUM, "code": "cm"},
        }),
        _tagged("o3", {
            "resourceType": "Observation", "status": "preliminary",
            "code": {"text": "Gångförmåga"},
            "subject": {"reference": f"Patient/{ids['p3']}"},
            "valueString": "Går med rollator",
        }),
        _tagged("o4", {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
            "subject": {"reference": f"Patient/{ids['p1']}"},
            "effectiveDateTime": "2026-03-06T08:00:00+01:00",
            "component": [
                {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                 "valueQuantity": {"value": 150, "system": UCUM, "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                 "valueQuantity": {"value": 90, "system": UCUM, "code": "mm[Hg]"}},
            ],
        }),
    ]  # fmt: skip


@pytest.fixture
async def population(client: httpx.AsyncClient) -> dict[str, str]:
    """Tag -> server id of every stored resource."""
    ids: dict[str, str] = {}
    for resource in PATIENTS:
        created = await client.post("/Patient", json=resource)
        assert created.status_code == 201, created.text
        ids[resource["identifier"][0]["value"]] = created.json()["id"]
    for resource in _observations(ids):
        created = await client.post("/Observation", json=resource)
        assert created.status_code == 201, created.text
        ids[resource["identifier"][0]["value"]] = created.json()["id"]
    return ids


async def _tags(client: httpx.AsyncClient, url: str, params: Any) -> list[str]:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    tags = []
    for entry in response.json().get("entry", []):
        if entry["search"]["mode"] == "match":
            tags.append(entry["resource"]["identifier"][0]["value"])
    return tags


CASES = [  # (id, type, query, expected tags; sorted unless the query sorts)
    # string: prefix, case and accent folding; :exact; :contains
    ("string-folded", "Patient", {"name": "asa"}, ["p1", "p3"]),
    ("string-accented-query", "Patient", {"name": "ÅSA"}, ["p1", "p3"]),
    ("string-prefix-family", "Patient", {"family": "ob"}, ["p1"]),
    ("string-exact", "Patient", {"name:exact": "Åsa"}, ["p1"]),
    ("string-exact-case", "Patient", {"name:exact": "åsa"}, []),
    ("string-contains", "Patient", {"name:contains": "ber"}, ["p1", "p2"]),
    ("string-address-city", "Patient", {"address-city": "lulea"}, ["p1"]),
    ("string-or", "Patient", {"family": "berg,lind"}, ["p2", "p3"]),
    ("string-and", "Patient", {"name": ["asa", "lind"]}, ["p3"]),
    # token: code, system|code, |code, :not (absent values match), :missing, :text, boolean
    ("token-code", "Patient", {"gender": "female"}, ["p1"]),
    (
        "token-system-code",
        "Patient",
        {"gender": "http://hl7.org/fhir/administrative-gender|male"},
        ["p2"],
    ),
    ("token-wrong-system", "Patient", {"gender": "urn:other|male"}, []),
    ("token-not", "Patient", {"gender:not": "female"}, ["p2", "p3"]),
    ("token-missing", "Patient", {"gender:missing": "true"}, ["p3"]),
    ("token-present", "Patient", {"gender:missing": "false"}, ["p1", "p2"]),
    ("token-boolean", "Patient", {"active": "true"}, ["p1"]),
    ("token-identifier", "Patient", {"identifier": f"{TAG}|p2"}, ["p2"]),
    ("token-phone", "Patient", {"phone": "+46701234567"}, ["p1"]),
    ("token-text", "Observation", {"code:text": "body"}, ["o1", "o2"]),
    ("token-text-folded", "Observation", {"code:text": "gangformaga"}, ["o3"]),
    ("token-loinc", "Observation", {"code": f"{LOINC}|29463-7"}, ["o1"]),
    # date: precision, prefixes, periods, time zones
    ("date-year", "Patient", {"birthdate": "1950"}, ["p1", "p2"]),
    ("date-month", "Patient", {"birthdate": "1950-03"}, ["p1", "p2"]),
    ("date-day-excludes-month-precision", "Patient", {"birthdate": "1950-03-15"}, ["p1"]),
    ("date-lt", "Patient", {"birthdate": "lt1951"}, ["p1", "p2"]),
    ("date-ge", "Patient", {"birthdate": "ge1962-12-31"}, ["p3"]),
    ("date-sa", "Patient", {"birthdate": "sa1950-12-31"}, ["p3"]),
    ("date-eb", "Patient", {"birthdate": "eb1950-04"}, ["p1", "p2"]),
    ("date-ne", "Patient", {"birthdate": "ne1950-03"}, ["p3"]),
    ("date-timezone", "Observation", {"date": "2026-03-05T09:00:00Z"}, ["o1"]),
    ("date-day-of-instant", "Observation", {"date": "2026-03-05"}, ["o1"]),
    ("date-period-within-month", "Observation", {"date": "2026-03"}, ["o1", "o2", "o4"]),
    ("date-period-ge", "Observation", {"date": "ge2026-03-08"}, ["o2"]),
    ("date-period-sa", "Observation", {"date": "sa2026-02-28"}, ["o1", "o2", "o4"]),
    (
        "date-range-overlaps",
        "Observation",
        {"date": ["ge2026-03-05", "le2026-03-06"]},
        ["o1", "o2", "o4"],
    ),
    # quantity: value precision, system|code, unit, prefixes
    ("quantity-value", "Observation", {"value-quantity": "72.5"}, ["o1"]),
    ("quantity-precision", "Observation", {"value-quantity": "72"}, []),
    ("quantity-system-code", "Observation", {"value-quantity": f"72.5|{UCUM}|kg"}, ["o1"]),
    ("quantity-unit", "Observation", {"value-quantity": "72.5||kg"}, ["o1"]),
    ("quantity-gt", "Observation", {"value-quantity": "gt100"}, ["o2"]),
    ("quantity-wrong-unit", "Observation", {"value-quantity": f"lt100|{UCUM}|cm"}, []),
    ("quantity-ap", "Observation", {"value-quantity": "ap70"}, ["o1"]),
    # composite: the parts of one element match together
    (
        "composite-systolic-high",
        "Observation",
        {"component-code-value-quantity": f"{LOINC}|8480-6$gt140"},
        ["o4"],
    ),
    (
        "composite-diastolic-not-high",
        "Observation",
        {"component-code-value-quantity": f"{LOINC}|8462-4$gt140"},
        [],
    ),
    (
        "composite-code-value",
        "Observation",
        {"code-value-quantity": f"{LOINC}|29463-7$72.5"},
        ["o1"],
    ),
    (
        "composite-or",
        "Observation",
        {"combo-code-value-quantity": f"{LOINC}|8462-4$lt100,{LOINC}|8302-2$180"},
        ["o2", "o4"],
    ),
    (
        "composite-missing",
        "Observation",
        {"component-code-value-quantity:missing": "false"},
        ["o4"],
    ),
    # string on an Observation value
    ("value-string", "Observation", {"value-string": "gar med"}, ["o3"]),
]


@pytest.mark.parametrize(
    ("type", "query", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_search_matches_exactly(
    client: httpx.AsyncClient,
    population: dict[str, str],
    type: str,
    query: dict[str, Any],
    expected: list[str],
) -> None:
    assert sorted(await _tags(client, f"/{type}", query)) == sorted(expected)


async def test_reference_forms(client: httpx.AsyncClient, population: dict[str, str]) -> None:
    p1, p2 = population["p1"], population["p2"]
    assert sorted(await _tags(client, "/Observation", {"subject": f"Patient/{p1}"})) == ["o1", "o4"]
    assert await _tags(client, "/Observation", {"subject:Patient": p2}) == ["o2"]
    assert sorted(await _tags(client, "/Observation", {"patient": p1})) == ["o1", "o4"]
    absolute = f"http://testserver/fhir/Patient/{p2}"
    assert await _tags(client, "/Observation", {"subject": absolute}) == ["o2"]
    assert await _tags(client, "/Observation", {"subject:missing": "true"}) == []


async def test_chained_and_reverse_chained(
    client: httpx.AsyncClient, population: dict[str, str]
) -> None:
    chained = await _tags(client, "/Observation", {"subject:Patient.name": "asa"})
    assert sorted(chained) == ["o1", "o3", "o4"]
    assert await _tags(client, "/Observation", {"patient.gender": "male"}) == ["o2"]
    has = {"_has:Observation:subject:code": f"{LOINC}|29463-7"}
    assert await _tags(client, "/Patient", has) == ["p1"]
    chain_then_has = {"patient._has:Observation:patient:status": "preliminary"}
    assert await _tags(client, "/Observation", chain_then_has) == ["o3"]


async def test_sort_by_several_keys(client: httpx.AsyncClient, population: dict[str, str]) -> None:
    assert await _tags(client, "/Patient", {"_sort": "birthdate"}) == ["p2", "p1", "p3"]
    assert await _tags(client, "/Patient", {"_sort": "-birthdate"}) == ["p3", "p2", "p1"]
    by_gender = await _tags(client, "/Patient", {"_sort": "gender,-birthdate"})
    assert by_gender == ["p3", "p1", "p2"]  # missing sorts lowest on both engines


async def test_sorted_paging_visits_each_once(
    client: httpx.AsyncClient, population: dict[str, str]
) -> None:
    seen: list[str] = []
    url, params = "/Patient", {"_sort": "family", "_count": "1"}
    while url:
        page = (await client.get(url, params=params)).json()
        seen += [e["resource"]["identifier"][0]["value"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url, params = (nxt[0].removeprefix("http://testserver/fhir"), None) if nxt else ("", None)
    assert seen == ["p2", "p3", "p1"]  # Berg, Lind, Öberg (folded: oberg)


async def test_last_updated(client: httpx.AsyncClient, population: dict[str, str]) -> None:
    assert len(await _tags(client, "/Patient", {"_lastUpdated": "gt2000-01-01"})) == 3
    assert await _tags(client, "/Patient", {"_lastUpdated": "lt2000-01-01"}) == []


HOSTILE = [
    {"name": '{"$where": "sleep(1000)"}'},
    {"name": "'; DROP TABLE resources; --"},
    {"gender": "$gt"},
    {"name:contains": ".*"},
    {"name:contains": "%"},
    {"family": "_"},
    {"identifier": "$ne|x"},
    {"birthdate": "ge$gt"},
    {"subject": "Patient/$where"},
]


@pytest.mark.parametrize("query", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
async def test_hostile_values_are_400_or_empty_never_500(
    client: httpx.AsyncClient, population: dict[str, str], query: dict[str, str]
) -> None:
    type = "Observation" if "subject" in query else "Patient"
    response = await client.get(f"/{type}", params=query)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert "entry" not in response.json()
    assert (await client.get("/Patient")).json()["total"] == 3


async def test_ten_thousand_alternatives_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient", params={"name": ",".join(["a"] * 10_000)})
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "too-costly"


async def test_unknown_parameter_and_modifier_are_400_unless_lenient(
    client: httpx.AsyncClient,
) -> None:
    for query in ({"nonsense": "1"}, {"gender:exact": "male"}, {"birthdate:text": "x"}):
        response = await client.get("/Patient", params=query)
        assert response.status_code == 400, query
    lenient = await client.get(
        "/Patient", params={"nonsense": "1"}, headers={"Prefer": "handling=lenient"}
    )
    assert lenient.status_code == 200
    [outcome] = [e for e in lenient.json()["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["resource"]["issue"][0]["severity"] == "warning"


async def test_malformed_values_are_400(client: httpx.AsyncClient) -> None:
    for query in (
        {"birthdate": "1950-13"},
        {"birthdate": "yesterday"},
        {"value-quantity": "heavy"},
        {"gender:missing": "maybe"},
    ):
        type = "Observation" if "value-quantity" in query else "Patient"
        response = await client.get(f"/{type}", params=query)
        assert response.status_code == 400, query


async def test_compartment_search(client: httpx.AsyncClient, population: dict[str, str]) -> None:
    p1 = population["p1"]
    observations = await _tags(client, f"/Patient/{p1}/Observation", {})
    assert sorted(observations) == ["o1", "o4"]
    coded = await _tags(client, f"/Patient/{p1}/Observation", {"code": f"{LOINC}|29463-7"})
    assert coded == ["o1"]
    assert await _tags(client, f"/Patient/{p1}/Patient", {}) == ["p1"]
    assert (await client.get(f"/Patient/{p1}/Nonsense")).status_code == 404
    assert (await client.get(f"/Patient/{p1}/Organization")).status_code == 400


async def test_system_search_over_several_types(
    client: httpx.AsyncClient, population: dict[str, str]
) -> None:
    both = await _tags(
        client, "/", {"_type": "Patient,Observation", "identifier": f"{TAG}|p2,{TAG}|o3"}
    )
    assert sorted(both) == ["o3", "p2"]
    seen: list[str] = []
    url, params = "/", {"_type": "Patient,Observation", "_count": "2"}
    while url:
        page = (await client.get(url, params=params)).json()
        seen += [e["resource"]["identifier"][0]["value"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url, params = (nxt[0].removeprefix("http://testserver/fhir"), None) if nxt else ("", None)
    assert sorted(seen) == ["o1", "o2", "o3", "o4", "p1", "p2", "p3"]
    assert len(seen) == len(set(seen))
    bad = await client.get("/", params={"_type": "Nonsense"})
    assert bad.status_code == 400


async def test_token_in_and_not_in_value_sets(
    client: httpx.AsyncClient, population: dict[str, str]
) -> None:
    genders = "http://hl7.org/fhir/ValueSet/administrative-gender"
    assert sorted(await _tags(client, "/Patient", {"gender:in": genders})) == ["p1", "p2"]
    assert await _tags(client, "/Patient", {"gender:not-in": genders}) == ["p3"]
    unknown = await client.get("/Patient", params={"gender:in": "http://example.org/vs"})
    assert unknown.status_code == 400


async def test_previous_links_walk_back(client: httpx.AsyncClient, population: dict[str, str]):
    async def page(url: str, params: Any = None) -> dict[str, Any]:
        return (await client.get(url.removeprefix("http://testserver/fhir"), params=params)).json()

    def rel(bundle: dict[str, Any], relation: str) -> str | None:
        found = [x["url"] for x in bundle["link"] if x["relation"] == relation]
        return found[0] if found else None

    first = await page("/Patient", {"_count": "1"})
    assert rel(first, "previous") is None
    second = await page(rel(first, "next") or "")
    third = await page(rel(second, "next") or "")
    assert rel(third, "next") is None
    back = await page(rel(third, "previous") or "")
    assert [e["resource"]["id"] for e in back["entry"]] == [
        e["resource"]["id"] for e in second["entry"]
    ]
    start = await page(rel(back, "previous") or "")
    assert [e["resource"]["id"] for e in start["entry"]] == [
        e["resource"]["id"] for e in first["entry"]
    ]


async def test_number_parameters_by_precision_and_prefix(client: httpx.AsyncClient) -> None:
    ids = {}
    for tag, probability in (("r1", 0.25), ("r2", 0.8)):
        risk = _tagged(tag, {
            "resourceType": "RiskAssessment", "status": "final",
            "subject": {"reference": "Patient/x"},
            "prediction": [{"probabilityDecimal": probability}],
        })  # fmt: skip
        created = await client.post("/RiskAssessment", json=risk)
        assert created.status_code == 201, created.text
        ids[tag] = created.json()["id"]
    cases = {"0.25": ["r1"], "0.3": [], "gt0.5": ["r2"], "le0.25": ["r1"], "ne0.8": ["r1"]}
    for value, expected in cases.items():
        found = await _tags(client, "/RiskAssessment", {"probability": value})
        assert sorted(found) == expected, value


async def test_uri_exact_above_and_below(client: httpx.AsyncClient) -> None:
    base = "http://sip-fhir.se/fhir/StructureDefinition/"

    async def urls(params: dict[str, str]) -> list[str]:
        bundle = (await client.get("/StructureDefinition", params=params)).json()
        return sorted(e["resource"]["url"] for e in bundle.get("entry", []))

    assert await urls({"url": base + "sip-careplan"}) == [base + "sip-careplan"]
    below = await urls({"url:below": base})
    assert base + "sip-careplan" in below and base + "profile-trigger" in below
    assert await urls({"url:below": "http://example.org/"}) == []
    assert await urls({"url:above": base + "sip-careplan/part"}) == [base + "sip-careplan"]

"""ConceptMaps from Lifecare SP / SAMSA vocabulary (`mappings/`) and `$translate` on them.

The maps are loaded at start-up, published (found by url) and translate GET and POST, at type
and instance level, forward and reversed.  A code a map does not translate is `result = false`
(200); a request without a code or system is 400; a map url that names no map is 404.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fhir_server.config import MAPPINGS_DIR, PROFILES_DIR
from fhir_server.validation.conformance import load_conformance
from fhir_server.validation.definitions import core_valueset
from fhir_server.validation.validator import Validator

BASE = "http://sip-fhir.se/fhir"
LIFECARE = f"{BASE}/CodeSystem/lifecare-sp-terms"
SAMSA = f"{BASE}/CodeSystem/samsa-terms"
LIFECARE_MAP = f"{BASE}/ConceptMap/lifecare-sp-to-sip"
SAMSA_MAP = f"{BASE}/ConceptMap/samsa-to-sip"
PURPOSE = f"{BASE}/CodeSystem/sip-meeting-purpose"
FORM = f"{BASE}/CodeSystem/sip-meeting-form"
MESSAGE = f"{BASE}/CodeSystem/sip-message-type"
OBLIGATION = f"{BASE}/CodeSystem/sip-obligation-type"
UNIT = f"{BASE}/CodeSystem/sip-unit-type"
PRINCIPAL = f"{BASE}/CodeSystem/sip-principal-type"
CORE_STATUS_SETS = {
    "http://hl7.org/fhir/appointmentstatus": "http://hl7.org/fhir/ValueSet/appointmentstatus",
    "http://hl7.org/fhir/episode-of-care-status": (
        "http://hl7.org/fhir/ValueSet/episode-of-care-status"
    ),
}
TRANSLATE = "/ConceptMap/$translate"


def mapping_files() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in MAPPINGS_DIR.glob("*.json")}


def matches(parameters: dict[str, Any]) -> list[tuple[str, str | None, str | None, str]]:
    """(equivalence, system, code, source map url) of each `match`."""
    assert parameters["resourceType"] == "Parameters"
    out = []
    for parameter in parameters["parameter"]:
        if parameter["name"] != "match":
            continue
        parts = {p["name"]: p for p in parameter["part"]}
        concept = parts.get("concept", {}).get("valueCoding", {})
        out.append(
            (
                parts["equivalence"]["valueCode"],
                concept.get("system"),
                concept.get("code"),
                parts["source"]["valueUri"],
            )
        )
    return out


def value(parameters: dict[str, Any], name: str) -> Any:
    [found] = [p for p in parameters["parameter"] if p["name"] == name]
    return next(v for k, v in found.items() if k.startswith("value"))


def body(*parameters: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parameters)}


async def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def rejected(response: httpx.Response, status: int, code: str, expression: str) -> str:
    assert response.status_code == status, response.text
    [issue] = response.json()["issue"]
    assert issue["code"] == code
    assert issue["expression"] == [expression]
    return issue["diagnostics"]


# --- the artefacts -----------------------------------------------------------------------------


def test_mapping_files_are_valid_r4() -> None:
    """Full R4 validation (structure, bindings such as the equivalence codes, invariants such
    as cmd-1 'narrower or inexact needs a comment'), beyond the start-up structure check."""
    validator = Validator.from_directories([PROFILES_DIR])
    for name, resource in mapping_files().items():
        errors = [i for i in validator.validate(resource) if i.severity in ("error", "fatal")]
        assert errors == [], name


def test_concept_maps_name_only_real_codes_and_cover_every_term() -> None:
    """Every source term is mapped (to a code, or `unmatched` with a comment saying why);
    element displays equal the source CodeSystem's; every target code exists."""
    loaded = load_conformance([PROFILES_DIR, MAPPINGS_DIR])
    for url, system in [(LIFECARE_MAP, LIFECARE), (SAMSA_MAP, SAMSA)]:
        concept_map = loaded.by_url[url]
        terms = {c["code"]: c["display"] for c in loaded.by_url[system]["concept"]}
        mapped: set[str] = set()
        for group in concept_map["group"]:
            assert group["source"] == system
            target = group.get("target")
            if target in CORE_STATUS_SETS:
                known = core_valueset(CORE_STATUS_SETS[target])
            elif target is not None:
                known = loaded.valueset(target)
            for element in group["element"]:
                assert element["display"] == terms[element["code"]]
                mapped.add(element["code"])
                for t in element["target"]:
                    if target is None:
                        assert t["equivalence"] == "unmatched" and t["comment"]
                    else:
                        assert known is not None and (target, t["code"]) in known.codes
        assert mapped == set(terms), url


# --- published ---------------------------------------------------------------------------------


async def test_concept_maps_and_source_vocabularies_are_published(
    client: httpx.AsyncClient,
) -> None:
    for kind, url in [
        ("ConceptMap", LIFECARE_MAP),
        ("ConceptMap", SAMSA_MAP),
        ("CodeSystem", LIFECARE),
        ("CodeSystem", SAMSA),
        ("ValueSet", f"{BASE}/ValueSet/lifecare-sp-terms"),
    ]:
        found = await ok(await client.get(f"/{kind}", params={"url": url}))
        assert [e["resource"]["url"] for e in found["entry"]] == [url]
    read = await ok(await client.get("/ConceptMap/lifecare-sp-to-sip"))
    assert read["version"] == "0.1.0" and read["status"] == "active"
    by_source = await ok(await client.get("/ConceptMap", params={"source-system": SAMSA}))
    assert [e["resource"]["id"] for e in by_source["entry"]] == ["samsa-to-sip"]


async def test_capability_statement_lists_translate_on_concept_map_only(
    client: httpx.AsyncClient,
) -> None:
    resources = {
        r["type"]: r for r in (await client.get("/metadata")).json()["rest"][0]["resource"]
    }
    translate = {
        "name": "translate",
        "definition": "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate",
    }
    assert translate in resources["ConceptMap"]["operation"]
    assert translate not in resources["Patient"]["operation"]
    assert {o["name"] for o in resources["Patient"]["operation"]} == {"validate", "export"}


# --- $translate --------------------------------------------------------------------------------


async def test_translate_get_lifecare_meeting_purpose(client: httpx.AsyncClient) -> None:
    """R-MTG-02: Lifecare SP 'Mötet avser: Planering' is our meeting purpose `planering`."""
    params = {"system": LIFECARE, "code": "motet-avser-planering"}
    result = await ok(await client.get(TRANSLATE, params=params))
    assert value(result, "result") is True
    assert matches(result) == [("equivalent", PURPOSE, "planering", LIFECARE_MAP)]
    [match] = [p for p in result["parameter"] if p["name"] == "match"]
    concept = next(p["valueCoding"] for p in match["part"] if p["name"] == "concept")
    assert concept == {
        "system": PURPOSE,
        "code": "planering",
        "display": "Planering (förplanering)",
    }


async def test_translate_post_samsa_meeting_form(client: httpx.AsyncClient) -> None:
    """R-MTG-03: SAMSA's 'Videolänk' for a planeringsträff is the meeting form `digitalt`."""
    coding = {"system": SAMSA, "code": "videolank", "display": "Videolänk"}
    response = await client.post(TRANSLATE, json=body({"name": "coding", "valueCoding": coding}))
    result = await ok(response)
    assert value(result, "result") is True
    assert matches(result) == [("equivalent", FORM, "digitalt", SAMSA_MAP)]
    code_and_system = body(
        {"name": "code", "valueCode": "kort-planeringstraff"},
        {"name": "system", "valueUri": SAMSA},
        {"name": "url", "valueUri": SAMSA_MAP},
    )
    result = await ok(await client.post(TRANSLATE, json=code_and_system))
    assert matches(result) == [("equivalent", PURPOSE, "kort-planeringstraff", SAMSA_MAP)]


async def test_translate_screen_action_to_obligation_and_message(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-10, R-DIS-05: screen actions map to the obligation that names the same act and
    are related to the message they send."""
    params = {"system": LIFECARE, "code": "kallelse-till-sip"}
    result = await ok(await client.get(TRANSLATE, params=params))
    assert matches(result) == [
        ("relatedto", PURPOSE, "sip", LIFECARE_MAP),
        ("wider", MESSAGE, "kallelse", LIFECARE_MAP),
        ("equivalent", OBLIGATION, "skicka-sip-kallelse", LIFECARE_MAP),
    ]
    params = {"system": LIFECARE, "code": "kvittera"}
    result = await ok(await client.get(TRANSLATE, params=params))
    assert matches(result) == [
        ("relatedto", MESSAGE, "kvittens", LIFECARE_MAP),
        ("equivalent", OBLIGATION, "kvittera-meddelande", LIFECARE_MAP),
    ]


async def test_translate_on_an_instance(client: httpx.AsyncClient) -> None:
    params = {"system": LIFECARE, "code": "enhetstyp-psykiatrisk-oppenvard"}
    url = "/ConceptMap/lifecare-sp-to-sip/$translate"
    result = await ok(await client.get(url, params=params))
    assert matches(result) == [
        ("equivalent", UNIT, "psykiatrisk-oppenvard", LIFECARE_MAP),
        ("wider", PRINCIPAL, "region", LIFECARE_MAP),
    ]
    posted = body(
        {"name": "code", "valueCode": params["code"]}, {"name": "system", "valueUri": LIFECARE}
    )
    assert matches(await ok(await client.post(url, json=posted))) == matches(result)
    # the SAMSA map does not translate Lifecare terms: a successful call with result false
    other = await ok(await client.get("/ConceptMap/samsa-to-sip/$translate", params=params))
    assert value(other, "result") is False and matches(other) == []
    assert "samsa-terms" not in value(other, "message")
    missing = await client.get("/ConceptMap/nothing-here/$translate", params=params)
    assert missing.status_code == 404
    wrong_url = await client.get(url, params={**params, "url": SAMSA_MAP})
    rejected(wrong_url, 400, "invalid", "url")


async def test_targetsystem_keeps_only_that_system(client: httpx.AsyncClient) -> None:
    params = {"system": LIFECARE, "code": "skicka-kallelse", "targetsystem": OBLIGATION}
    result = await ok(await client.get(TRANSLATE, params=params))
    assert matches(result) == [
        ("narrower", OBLIGATION, "skicka-sip-kallelse", LIFECARE_MAP),
        ("narrower", OBLIGATION, "skicka-uppfoljningskallelse", LIFECARE_MAP),
    ]
    params["targetsystem"] = PRINCIPAL
    result = await ok(await client.get(TRANSLATE, params=params))
    assert value(result, "result") is False and matches(result) == []


async def test_target_value_set_keeps_only_its_codes(client: httpx.AsyncClient) -> None:
    params = {
        "system": LIFECARE,
        "code": "kallelse-till-sip",
        "target": f"{BASE}/ValueSet/sip-message-type",
    }
    result = await ok(await client.get(TRANSLATE, params=params))
    assert matches(result) == [("wider", MESSAGE, "kallelse", LIFECARE_MAP)]


async def test_source_value_set_selects_the_map(client: httpx.AsyncClient) -> None:
    params = {"system": SAMSA, "code": "telefon", "source": f"{BASE}/ValueSet/samsa-terms"}
    result = await ok(await client.get(TRANSLATE, params=params))
    assert matches(result) == [("equivalent", FORM, "telefon", SAMSA_MAP)]
    params["source"] = f"{BASE}/ValueSet/lifecare-sp-terms"
    result = await ok(await client.get(TRANSLATE, params=params))
    assert value(result, "result") is False


async def test_reverse_finds_the_screen_terms_of_our_code(client: httpx.AsyncClient) -> None:
    """reverse=true: our code back to the Lifecare SP and SAMSA terms; wider becomes
    narrower because the direction swapped."""
    params = {"system": FORM, "code": "telefon", "reverse": "true"}
    result = await ok(await client.get(TRANSLATE, params=params))
    assert matches(result) == [
        ("equivalent", LIFECARE, "motesform-telefonkonferens", LIFECARE_MAP),
        ("equivalent", SAMSA, "telefon", SAMSA_MAP),
    ]
    posted = body(
        {"name": "coding", "valueCoding": {"system": PRINCIPAL, "code": "kommun"}},
        {"name": "reverse", "valueBoolean": True},
        {"name": "targetsystem", "valueUri": SAMSA},
    )
    result = await ok(await client.post(TRANSLATE, json=posted))
    assert matches(result) == [
        ("narrower", SAMSA, "socialtjanst", SAMSA_MAP),
        ("narrower", SAMSA, "kommunal-halso-och-sjukvard", SAMSA_MAP),
    ]


async def test_codeable_concept_translates_each_coding(client: httpx.AsyncClient) -> None:
    concept = {
        "coding": [
            {"system": LIFECARE, "code": "motesform-digitalt-mote"},
            {"system": SAMSA, "code": "videolank"},
        ],
        "text": "Digitalt möte",
    }
    response = await client.post(
        TRANSLATE, json=body({"name": "codeableConcept", "valueCodeableConcept": concept})
    )
    assert matches(await ok(response)) == [
        ("equivalent", FORM, "digitalt", LIFECARE_MAP),
        ("equivalent", FORM, "digitalt", SAMSA_MAP),
    ]


async def test_no_match_is_result_false_not_an_error(client: httpx.AsyncClient) -> None:
    unknown_code = await ok(await client.get(TRANSLATE, params={"system": LIFECARE, "code": "x"}))
    assert value(unknown_code, "result") is False
    assert matches(unknown_code) == []
    assert LIFECARE_MAP in value(unknown_code, "message")
    unknown_system = {"system": "urn:example:nothing", "code": "x"}
    result = await ok(await client.get(TRANSLATE, params=unknown_system))
    assert value(result, "result") is False
    assert value(result, "message").startswith("No ConceptMap translates from")


async def test_a_term_without_a_code_is_unmatched_with_the_reason(
    client: httpx.AsyncClient,
) -> None:
    """R-ACC-02: 'Öppna process' has no code; the answer says where its meaning lives."""
    params = {"system": LIFECARE, "code": "oppna-process"}
    result = await ok(await client.get(TRANSLATE, params=params))
    assert value(result, "result") is False
    assert matches(result) == [("unmatched", None, None, LIFECARE_MAP)]
    assert "R-ACC-02" in value(result, "message")


@pytest.mark.parametrize(
    ("params", "code", "expression"),
    [
        ({}, "required", "code"),
        ({"system": LIFECARE}, "required", "code"),
        ({"code": "kvittera"}, "required", "system"),
        ({"system": LIFECARE, "code": "kvittera", "reverse": "yes"}, "invalid", "reverse"),
        ({"system": LIFECARE, "code": "kvittera", "bogus": "1"}, "invalid", "bogus"),
        ({"system": LIFECARE, "code": "kvittera", "coding": "a|b"}, "invalid", "coding"),
        ({"system": LIFECARE, "code": "a", "dependency": "x"}, "not-supported", "dependency"),
    ],
)
async def test_unusable_get_requests_are_400(
    client: httpx.AsyncClient, params: dict[str, str], code: str, expression: str
) -> None:
    rejected(await client.get(TRANSLATE, params=params), 400, code, expression)


async def test_unusable_post_requests_are_400(client: httpx.AsyncClient) -> None:
    no_system = body({"name": "coding", "valueCoding": {"code": "kvittera"}})
    rejected(
        await client.post(TRANSLATE, json=no_system), 400, "required", "Parameters.parameter[0]"
    )
    both = body(
        {"name": "coding", "valueCoding": {"system": LIFECARE, "code": "kvittera"}},
        {"name": "code", "valueCode": "kvittera"},
    )
    rejected(await client.post(TRANSLATE, json=both), 400, "invalid", "Parameters.parameter[1]")
    wrong_type = body({"name": "reverse", "valueString": "true"})
    rejected(
        await client.post(TRANSLATE, json=wrong_type), 400, "invalid", "Parameters.parameter[0]"
    )
    not_parameters = {"resourceType": "Patient"}
    rejected(await client.post(TRANSLATE, json=not_parameters), 400, "invalid", "resourceType")


async def test_unknown_concept_map_url_is_404(client: httpx.AsyncClient) -> None:
    """A url that names no ConceptMap is a missing resource (404), as for an unknown id;
    result=false is kept for a map that exists but has no match."""
    params = {"system": LIFECARE, "code": "kvittera", "url": f"{BASE}/ConceptMap/nothing"}
    rejected(await client.get(TRANSLATE, params=params), 404, "not-found", "url")
    versioned = {**params, "url": LIFECARE_MAP, "conceptMapVersion": "9.9.9"}
    rejected(await client.get(TRANSLATE, params=versioned), 404, "not-found", "url")
    versioned["conceptMapVersion"] = "0.1.0"
    assert value(await ok(await client.get(TRANSLATE, params=versioned)), "result") is True
    in_url = {**params, "url": f"{LIFECARE_MAP}|0.1.0"}
    assert value(await ok(await client.get(TRANSLATE, params=in_url)), "result") is True
    in_url["url"] = f"{LIFECARE_MAP}|0.0.1"
    rejected(await client.get(TRANSLATE, params=in_url), 404, "not-found", "url")


def local_map(url: str) -> dict[str, Any]:
    return {
        "resourceType": "ConceptMap",
        "url": url,
        "status": "draft",
        "group": [
            {
                "source": "urn:example:ward-system",
                "target": MESSAGE,
                "element": [
                    {
                        "code": "UTSKRKLAR",
                        "target": [{"code": "utskrivningsklar", "equivalence": "equivalent"}],
                    }
                ],
            }
        ],
    }


async def test_a_concept_map_stored_over_rest_translates(client: httpx.AsyncClient) -> None:
    url = "urn:example:conceptmap:ward"
    created = await client.post("/ConceptMap", json=local_map(url))
    assert created.status_code == 201, created.text
    params = {"system": "urn:example:ward-system", "code": "UTSKRKLAR"}
    result = await ok(await client.get(TRANSLATE, params=params))
    assert matches(result) == [("equivalent", MESSAGE, "utskrivningsklar", url)]
    await client.delete(f"/ConceptMap/{created.json()['id']}")
    rejected(await client.get(TRANSLATE, params={**params, "url": url}), 404, "not-found", "url")
    gone = await ok(await client.get(TRANSLATE, params=params))
    assert value(gone, "result") is False


async def test_a_concept_map_given_in_the_request_translates(client: httpx.AsyncClient) -> None:
    given = body(
        {"name": "conceptMap", "resource": local_map("urn:example:conceptmap:inline")},
        {"name": "code", "valueCode": "UTSKRKLAR"},
        {"name": "system", "valueUri": "urn:example:ward-system"},
    )
    result = await ok(await client.post(TRANSLATE, json=given))
    assert matches(result) == [
        ("equivalent", MESSAGE, "utskrivningsklar", "urn:example:conceptmap:inline")
    ]
    invalid = local_map("urn:example:conceptmap:inline")
    invalid["group"][0]["element"][0]["target"][0]["equivalence"] = "same-ish"
    bad = body({"name": "conceptMap", "resource": invalid}, *given["parameter"][1:])
    response = await client.post(TRANSLATE, json=bad)
    assert response.status_code == 422, response.text
    assert "equivalence" in response.json()["issue"][0]["expression"][0]
    assert (await client.get("/ConceptMap", params={"url": invalid["url"]})).json()["total"] == 0


async def test_translate_routes_leave_read_and_search_alone(client: httpx.AsyncClient) -> None:
    """`$translate` is not taken for an id or a compartment type, and vice versa."""
    read = await ok(await client.get("/ConceptMap/samsa-to-sip"))
    assert read["resourceType"] == "ConceptMap"
    other_type = await client.get("/Patient/$translate", params={"system": "a", "code": "b"})
    assert other_type.status_code in (400, 404)
    assert other_type.json()["resourceType"] == "OperationOutcome"

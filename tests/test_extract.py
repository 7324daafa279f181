"""Search index extraction: compiled expressions agree with fhirpathpy; entries follow the spec."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from benchmarks.dataset import mixed_resources
from fhir_server.fhirjson import Decimal, loads_resource
from fhir_server.search.extract import (
    SKIPPED_TYPES,
    applies,
    compile_expression,
    fallbacks,
    fhirpath_values,
    index_entries,
)
from fhir_server.search.normalise import (
    MAX_INSTANT,
    MIN_INSTANT,
    date_range,
    fold,
    number_range,
    period_range,
)
from fhir_server.storage.port import (
    DateIndex,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    StringIndex,
    TextIndex,
    TokenIndex,
    UriIndex,
)
from fhir_server.validation.definitions import search_parameters

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "sip-case"
UCUM = "http://unitsofmeasure.org"
GENDER = "http://hl7.org/fhir/administrative-gender"


def _load(text: str) -> dict[str, Any]:
    return loads_resource(text.encode())


HAND_MADE: list[dict[str, Any]] = [
    {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {
            "lastUpdated": "2026-03-05T10:00:00.123456Z",
            "profile": ["http://example.org/StructureDefinition/obs"],
            "tag": [{"system": "http://example.org/tags", "code": "t1"}],
        },
        "contained": [{"resourceType": "Practitioner", "id": "pr"}],
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/observation-geneticsGene",
                "valueCodeableConcept": {"text": "BRCA1"},
            }
        ],
        "status": "final",
        "category": [{"coding": [{"system": "http://x.org/cat", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}], "text": "BP"},
        "subject": {"reference": "Patient/p1"},
        "performer": [
            {"reference": "#pr"},
            {"reference": "https://other.example/fhir/Practitioner/x9/_history/2"},
            {"reference": "urn:uuid:6f1b5c2e-52a3-4c8f-9f36-3a1ab4c0c0c1"},
            {"type": "Organization", "identifier": {"system": "urn:oid:1.2", "value": "HSA1"}},
        ],
        "effectivePeriod": {"start": "2026-03-05T10:00:00+01:00"},
        "valueQuantity": {"value": 1.50, "unit": "kg", "system": UCUM, "code": "kg"},
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
            },
            {
                "code": {"text": "mood"},
                "valueCodeableConcept": {"coding": [{"code": "happy", "display": "Glad"}]},
            },
        ],
    },
    {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "note"},
        "subject": {"reference": "Group/g1"},
        "valueString": "Mycket bra",
        "effectiveDateTime": "2026",
    },
    {
        "resourceType": "Condition",
        "subject": {"reference": "Group/g1"},
        "onsetAge": {"value": 52, "unit": "a", "system": UCUM, "code": "a"},
        "abatementString": "around spring",
        "recordedDate": "2026-02-01",
    },
    {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},
        "onsetDateTime": "2025-12-24T18:00:00.5-05:00",
        "abatementPeriod": {"end": "2026-01"},
    },
    {
        "resourceType": "Patient",
        "id": "p2",
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": "Åström",
            }
        ],
        "active": False,
        "name": [{"family": "Öberg", "given": ["Åsa", "Märta"], "prefix": ["Dr"]}],
        "gender": "female",
        "_gender": {"extension": [{"url": "http://example.org/x", "valueString": "x"}]},
        "deceasedDateTime": "2026-01-01",
        "telecom": [
            {"system": "email", "value": "asa@example.se"},
            {"system": "phone", "value": "+46701234567"},
        ],
        "generalPractitioner": [{"reference": "PractitionerRole/r1"}],
        "link": [{"other": {"reference": "RelatedPerson/rp"}, "type": "seealso"}],
    },
    {"resourceType": "Patient", "deceasedBoolean": True, "birthDate": "1950-06"},
    {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": "http://example.org/Questionnaire/q|2.0",
        "item": [
            {
                "linkId": "1",
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/"
                        "questionnaireresponse-isSubject",
                        "valueBoolean": True,
                    }
                ],
                "answer": [{"valueReference": {"reference": "Patient/p1"}}, {"valueString": "x"}],
            },
            {"linkId": "2", "answer": [{"valueReference": {"reference": "Patient/p3"}}]},
        ],
    },
    {
        "resourceType": "Bundle",
        "type": "document",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1"},
        "entry": [
            {"resource": {"resourceType": "Composition", "id": "c1", "status": "final"}},
            {"resource": {"resourceType": "Patient", "id": "p1"}},
        ],
    },
    {
        "resourceType": "Medication",
        "code": {"text": "Alvedon"},
        "ingredient": [
            {
                "itemCodeableConcept": {
                    "coding": [{"system": "http://snomed.info/sct", "code": "1"}]
                }
            },
            {"itemReference": {"reference": "Substance/s1"}},
        ],
    },
    {
        "resourceType": "ActivityDefinition",
        "status": "active",
        "url": "http://example.org/ActivityDefinition/a",
        "name": "Walk",
        "useContext": [
            {
                "code": {
                    "system": "http://terminology.hl7.org/CodeSystem/usage-context-type",
                    "code": "age",
                },
                "valueRange": {"low": {"value": 18}, "high": {"value": 65}},
            },
            {
                "code": {
                    "system": "http://terminology.hl7.org/CodeSystem/usage-context-type",
                    "code": "focus",
                },
                "valueCodeableConcept": {"text": "COPD"},
            },
            {"code": {"code": "x"}, "valueQuantity": {"value": 3.0, "code": "kg"}},
        ],
        "relatedArtifact": [
            {"type": "composed-of", "resource": "http://example.org/Library/a|1.0"},
            {"type": "depends-on", "resource": "http://example.org/Library/b"},
        ],
        "library": ["http://example.org/Library/c"],
    },
    {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "participant": [
            {"individual": {"type": "Practitioner", "display": "Dr X"}},
            {"individual": {"reference": "RelatedPerson/rp"}},
        ],
        "length": {"value": 3, "unit": "d", "system": UCUM, "code": "d"},
    },
    {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "quantity": 3,
        "characteristic": [
            {"code": {"text": "smoker"}, "valueBoolean": True, "exclude": False},
            {"code": {"text": "sex"}, "valueCodeableConcept": {"text": "female"}, "exclude": True},
        ],
    },
    {
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2027-01-19T13:00:00+01:00",
        "participant": [
            {"actor": {"reference": "Location/l1"}, "status": "accepted"},
            {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
        ],
    },
    {
        "resourceType": "Invoice",
        "status": "issued",
        "subject": {"reference": "Patient/p1"},
        "totalGross": {"value": 100.00, "currency": "SEK"},
    },
    {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [{"probabilityDecimal": 0.25}, {"probabilityRange": {"low": {"value": 1}}}],
    },
    {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"text": "Ipren"},
        "dosageInstruction": [{"timing": {"event": ["2026-03-05T08:00:00Z"]}}],
    },
]


@cache
def corpus() -> list[dict[str, Any]]:
    """The sip-case examples, 300 benchmark resources and the hand-made ones above."""
    examples = [loads_resource(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    hand_made = [_load(json.dumps(r)) for r in HAND_MADE]  # decimals as fhirjson.Decimal
    return examples + mixed_resources(300) + hand_made


def _canon(value: Any) -> str:
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, bool | int | str) or v is None:
            return v
        return float(v)  # fhirjson.Decimal, float, fhirpathpy's decimal.Decimal

    return json.dumps(plain(value), sort_keys=True, ensure_ascii=False)


def test_r4_expressions_are_compiled_natively() -> None:
    assert fallbacks() == []


def test_compiled_expressions_reach_what_fhirpathpy_reaches() -> None:
    compared = nonempty = 0
    failures: list[str] = []
    for resource in corpus():
        rtype = resource["resourceType"]
        for param in search_parameters():
            expression = param.get("expression")
            if param["type"] in SKIPPED_TYPES or expression is None or not applies(param, rtype):
                continue
            try:
                expected = {_canon(v) for v in fhirpath_values(expression, rtype, resource)}
            except Exception:
                continue  # fhirpathpy cannot evaluate it: nothing to compare against
            compiled = compile_expression(expression, rtype, param["type"])
            got = {_canon(v) for v, _ in compiled(resource)}
            compared += 1
            nonempty += bool(expected)
            if got != expected:
                failures.append(f"{rtype} {param['url']}: {sorted(got)} != {sorted(expected)}")
    assert not failures, "\n".join(failures[:20])
    assert compared > 9_000
    assert nonempty > 3_000


# -- normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Åsa", "asa"),
        ("Müller", "muller"),
        ("Straße", "strasse"),
        ("ÖBERG", "oberg"),
        ("Ǆemal", "dzemal"),
        ("ﬁne", "fine"),
        ("plain ascii", "plain ascii"),
        ("", ""),
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2026", "2026-01-01T00:00:00.000000Z", "2026-12-31T23:59:59.999999Z"),
        ("2026-03", "2026-03-01T00:00:00.000000Z", "2026-03-31T23:59:59.999999Z"),
        ("2024-02", "2024-02-01T00:00:00.000000Z", "2024-02-29T23:59:59.999999Z"),
        ("2026-03-05", "2026-03-05T00:00:00.000000Z", "2026-03-05T23:59:59.999999Z"),
        ("2026-03-05T10:00:00Z", "2026-03-05T10:00:00.000000Z", "2026-03-05T10:00:00.999999Z"),
        (
            "2026-03-05T10:00:00+01:00",
            "2026-03-05T09:00:00.000000Z",
            "2026-03-05T09:00:00.999999Z",
        ),
        (
            "2026-01-01T00:30:00+02:00",
            "2025-12-31T22:30:00.000000Z",
            "2025-12-31T22:30:00.999999Z",
        ),
        (
            "2026-03-05T23:00:00-05:00",
            "2026-03-06T04:00:00.000000Z",
            "2026-03-06T04:00:00.999999Z",
        ),
        (
            "2026-03-05T10:00:00.5+01:00",
            "2026-03-05T09:00:00.500000Z",
            "2026-03-05T09:00:00.599999Z",
        ),
        ("2026-03-05T10:00:00.123Z", "2026-03-05T10:00:00.123000Z", "2026-03-05T10:00:00.123999Z"),
        (
            "2026-03-05T10:00:00.123456789Z",
            "2026-03-05T10:00:00.123456Z",
            "2026-03-05T10:00:00.123456Z",
        ),
        ("2026-03-05T10:00:00", "2026-03-05T10:00:00.000000Z", "2026-03-05T10:00:00.999999Z"),
        ("0001-01-01T00:30:00+01:00", "0001-01-01T00:00:00.000000Z", "0001-01-01T00:00:00.999999Z"),
        ("2024-02-29T23:30:00-01:00", "2024-03-01T00:30:00.000000Z", "2024-03-01T00:30:00.999999Z"),
    ],
)
def test_date_range(value: str, low: str, high: str) -> None:
    assert date_range(value) == (low, high)


@pytest.mark.parametrize("value", ["", "26", "2026-13", "2026-02-30", "2026-03-05T25:00:00Z", "x"])
def test_date_range_rejects(value: str) -> None:
    assert date_range(value) is None


def test_period_range() -> None:
    assert period_range({"start": "2026-03", "end": "2026-04-02"}) == (
        "2026-03-01T00:00:00.000000Z",
        "2026-04-02T23:59:59.999999Z",
    )
    assert period_range({"start": "2026"}) == ("2026-01-01T00:00:00.000000Z", MAX_INSTANT)
    assert period_range({"end": "2026"}) == (MIN_INSTANT, "2026-12-31T23:59:59.999999Z")
    assert period_range({}) is None


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("100", 99.5, 100.5),
        ("100.00", 99.995, 100.005),
        ("1e2", 50, 150),
        ("0.25", 0.245, 0.255),
        ("-3.1", -3.15, -3.05),
        ("1.5E-3", 0.00145, 0.00155),
    ],
)
def test_number_range_of_json_numbers(text: str, low: float, high: float) -> None:
    value = json.loads(text, parse_float=Decimal)
    got = number_range(value)
    assert got == pytest.approx((low, high), rel=1e-12)


def test_number_range_of_plain_float() -> None:
    assert number_range(36.6) == pytest.approx((36.55, 36.65))


# -- entries -------------------------------------------------------------------------------


def _entries(resource: dict[str, Any]) -> list[Any]:
    resource = _load(json.dumps(resource))
    return index_entries(resource["resourceType"], resource)


def test_patient_name_is_folded_and_gender_has_its_system() -> None:
    entries = _entries(HAND_MADE[4])
    assert StringIndex("name", "asa", "Åsa") in entries
    assert StringIndex("name", "oberg", "Öberg") in entries
    assert StringIndex("family", "oberg", "Öberg") in entries
    assert StringIndex("given", "marta", "Märta") in entries
    assert TokenIndex("gender", GENDER, "female") in entries
    assert TokenIndex("email", None, "asa@example.se") in entries
    assert TokenIndex("phone", None, "+46701234567") in entries
    assert TokenIndex("active", None, "false") in entries
    assert TokenIndex("deceased", None, "true") in entries
    assert DateIndex(
        "death-date", "2026-01-01T00:00:00.000000Z", "2026-01-01T23:59:59.999999Z"
    ) in (entries)
    assert ReferenceIndex("general-practitioner", "PractitionerRole", "r1", None, None) in entries
    assert len(entries) == len(set(entries))


def test_careplan_subject_is_a_patient_reference() -> None:
    careplan = loads_resource((EXAMPLES / "CarePlan-sip.json").read_bytes())
    entries = index_entries("CarePlan", careplan)
    assert ReferenceIndex("subject", "Patient", "tolvan-tolvansson", None, None) in entries
    assert ReferenceIndex("patient", "Patient", "tolvan-tolvansson", None, None) in entries


def test_observation_entries() -> None:
    observation = _load(json.dumps(HAND_MADE[0]))
    observation["valueQuantity"]["value"] = Decimal("1.50")  # as `loads_resource` keeps it
    entries = index_entries("Observation", observation)
    assert QuantityIndex("value-quantity", 1.495, 1.505, UCUM, "kg", "kg") in entries
    assert QuantityIndex("component-value-quantity", 119.5, 120.5, UCUM, "mm[Hg]", "mmHg") in (
        entries
    )
    assert QuantityIndex("combo-value-quantity", 1.495, 1.505, UCUM, "kg", "kg") in entries
    assert TokenIndex("code", "http://loinc.org", "85354-9") in entries
    assert TextIndex("code", "bp") in entries
    assert TokenIndex("component-value-concept", None, "happy") in entries
    assert TextIndex("component-value-concept", "glad") in entries
    assert TokenIndex("status", "http://hl7.org/fhir/observation-status", "final") in entries
    assert ReferenceIndex("patient", "Patient", "p1", None, None) in entries
    assert TokenIndex("_id", None, "o1") in entries
    assert TokenIndex("_tag", "http://example.org/tags", "t1") in entries
    assert UriIndex("_profile", "http://example.org/StructureDefinition/obs") in entries
    assert DateIndex(
        "_lastUpdated", "2026-03-05T10:00:00.123456Z", "2026-03-05T10:00:00.123456Z"
    ) in (entries)
    assert DateIndex("date", "2026-03-05T09:00:00.000000Z", "9999-12-31T23:59:59.999999Z") in (
        entries
    )
    assert TextIndex("gene-identifier", "brca1") in entries  # the extension's value
    performers = [e for e in entries if e.param.startswith("performer")]
    absolute = "https://other.example/fhir/Practitioner/x9/_history/2"
    uuid = "urn:uuid:6f1b5c2e-52a3-4c8f-9f36-3a1ab4c0c0c1"
    assert performers == [
        ReferenceIndex("performer", "Practitioner", "x9", None, absolute),
        ReferenceIndex("performer", None, None, None, uuid),
        TokenIndex("performer:identifier", "urn:oid:1.2", "HSA1"),
    ]
    # the contained "#pr" reference is not indexed


def test_resolve_filter_drops_other_target_types() -> None:
    entries = _entries(HAND_MADE[1])  # subject is a Group
    assert not [e for e in entries if e.param == "patient"]
    assert ReferenceIndex("subject", "Group", "g1", None, None) in entries
    assert StringIndex("value-string", "mycket bra", "Mycket bra") in entries


def test_reference_identifier_gives_the_identifier_token() -> None:
    entries = _entries(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {
                "type": "Patient",
                "identifier": {"system": "http://electronichealth.se/identifier/personnummer",
                               "value": "191212121212"},
            },
        }
    )  # fmt: skip
    pnr = "http://electronichealth.se/identifier/personnummer"
    assert TokenIndex("subject:identifier", pnr, "191212121212") in entries
    assert TokenIndex("patient:identifier", pnr, "191212121212") in entries  # type: Patient
    assert not [e for e in entries if isinstance(e, ReferenceIndex)]


def test_choice_types_money_canonicals_and_numbers() -> None:
    condition = _entries(HAND_MADE[2])
    assert QuantityIndex("onset-age", 51.5, 52.5, UCUM, "a", "a") in condition
    assert StringIndex("abatement-string", "around spring", "around spring") in condition
    invoice = _entries(HAND_MADE[13])
    sek = ("urn:iso:std:iso:4217", "SEK", "SEK")
    assert QuantityIndex("totalgross", 99.95, 100.05, *sek) in invoice  # json.dumps: "100.0"
    qr = _entries(HAND_MADE[6])
    assert ReferenceIndex(
        "questionnaire", None, None, "2.0", "http://example.org/Questionnaire/q"
    ) in (qr)
    assert ReferenceIndex("item-subject", "Patient", "p1", None, None) in qr  # hasExtension(...)
    assert ReferenceIndex("item-subject", "Patient", "p3", None, None) not in qr
    risk = _entries(HAND_MADE[14])
    assert NumberIndex("probability", 0.245, 0.255) in risk
    ad = _entries(HAND_MADE[9])
    assert ReferenceIndex("composed-of", None, None, "1.0", "http://example.org/Library/a") in ad
    assert ReferenceIndex("depends-on", None, None, None, "http://example.org/Library/c") in ad
    assert QuantityIndex("context-quantity", 2.95, 3.05, None, "kg", None) in ad
    bundle = _entries(HAND_MADE[7])
    assert ReferenceIndex("composition", "Composition", "c1", None, None) in bundle
    request = _entries(HAND_MADE[15])
    assert TextIndex("code", "ipren") in request


def test_custom_parameters_are_compiled_too() -> None:
    custom = {
        "url": "http://example.org/SearchParameter/mothers-maiden-name",
        "code": "mothers-maiden-name",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.extension("
        "'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName')",
    }
    resource = _load(json.dumps(HAND_MADE[4]))
    entries = index_entries("Patient", resource, [custom])
    assert entries == [StringIndex("mothers-maiden-name", "astrom", "Åström")]

"""Structural validation against the official R4 definitions (fhir_server.validation)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_server.validation.definitions import element, resource_types
from fhir_server.validation.r4b_models import r4b_difference, r4b_model
from fhir_server.validation.structure import check_structure

SCT = "http://snomed.info/sct"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
SD = "http://hl7.org/fhir/StructureDefinition/"
PAT = {"reference": "Patient/p1", "display": "Anna Andersson"}
DOC = {"reference": "Practitioner/dr1"}
ORG = {"reference": "Organization/kommun-1"}


def errors(resource: dict[str, Any]) -> list[Any]:
    return [i for i in check_structure(resource) if i.severity == "error"]


def cc(text: str, system: str | None = None, code: str | None = None) -> dict[str, Any]:
    """A CodeableConcept with optional coding."""
    concept: dict[str, Any] = {"text": text}
    if system and code:
        concept["coding"] = [{"system": system, "code": code}]
    return concept


def ext(url: str, **value: Any) -> dict[str, Any]:
    return {"extension": [{"url": url, **value}]}


# fmt: off
PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p1",
    "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00.000+02:00"},
    "text": {"status": "generated",
             "div": '<div xmlns="http://www.w3.org/1999/xhtml">Anna Andersson</div>'},
    "identifier": [{"use": "official", "value": "191212121212",
                    "system": "http://electronichealth.se/identifier/personnummer"}],
    "active": True,
    "name": [{"use": "official", "family": "Andersson", "given": ["Anna", "Maria"],
              "_given": [None, ext("http://example.org/name-use", valueCode="call")]}],
    "telecom": [{"system": "phone", "value": "+46701234567", "use": "mobile", "rank": 1}],
    "gender": "female",
    "birthDate": "1912-12-12",
    "_birthDate": ext(SD + "patient-birthTime", valueDateTime="1912-12-12T08:30:00+01:00"),
    "deceasedBoolean": False,
    "address": [{"line": ["Storgatan 1"], "city": "Uppsala", "postalCode": "75320",
                 "country": "SE", "period": {"start": "2001-01-01"}}],
    "maritalStatus": cc("Änka", TERMINOLOGY + "v3-MaritalStatus", "W"),
    "contact": [{"relationship": [cc("Son", TERMINOLOGY + "v2-0131", "N")],
                 "name": {"family": "Andersson", "given": ["Erik"]},
                 "telecom": [{"system": "phone", "value": "+46707654321"}]}],
    "communication": [{"language": cc("svenska", "urn:ietf:bcp:47", "sv"), "preferred": True}],
    "generalPractitioner": [DOC],
    "managingOrganization": ORG,
}
CAREPLAN = {
    "resourceType": "CarePlan", "id": "sip-1", "status": "active", "intent": "plan",
    "category": [cc("SIP", SCT, "736353004")], "title": "Samordnad individuell plan",
    "subject": PAT, "period": {"start": "2024-05-01", "end": "2024-11-01"},
    "created": "2024-05-01T09:00:00+02:00", "author": DOC,
    "careTeam": [{"reference": "CareTeam/team-1"}], "goal": [{"reference": "Goal/goal-1"}],
    "activity": [
        {"outcomeReference": [{"reference": "Encounter/e1"}],
         "detail": {"kind": "Appointment", "status": "scheduled", "code": cc("Hembesök"),
                    "scheduledPeriod": {"start": "2024-05-10T10:00:00+02:00"},
                    "performer": [ORG], "description": "Besök av hemtjänst"}},
        {"reference": {"reference": "Task/t1"}},
    ],
    "note": [{"authorString": "Sjuksköterska", "time": "2024-05-01T09:05:00+02:00",
              "text": "Planen *upprättad* vid SIP-möte."}],
}
ENCOUNTER = {
    "resourceType": "Encounter", "id": "e1", "status": "finished",
    "class": {"system": TERMINOLOGY + "v3-ActCode", "code": "IMP"},
    "type": [cc("Slutenvård")], "subject": PAT,
    "participant": [{"individual": DOC, "period": {"start": "2024-04-20"}}],
    "period": {"start": "2024-04-20T08:00:00+02:00", "end": "2024-04-30T12:00:00+02:00"},
    "length": {"value": 10, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"},
    "hospitalization": {"dischargeDisposition": cc("Hem med hemtjänst")},
    "location": [{"location": {"reference": "Location/avd-12"}, "status": "completed"}],
    "serviceProvider": {"reference": "Organization/region-1"},
}
APPOINTMENT = {
    "resourceType": "Appointment", "id": "a1", "status": "booked",
    "serviceType": [cc("SIP-möte")], "description": "Samordningsmöte inför utskrivning",
    "start": "2024-04-29T13:00:00+02:00", "end": "2024-04-29T14:00:00+02:00",
    "minutesDuration": 60,
    "participant": [
        {"actor": PAT, "required": "required", "status": "accepted"},
        {"actor": DOC, "status": "tentative",
         "type": [cc("Utförare", TERMINOLOGY + "v3-ParticipationType", "PPRF")]},
    ],
}
COMMUNICATION = {
    "resourceType": "Communication", "id": "c1", "status": "completed",
    "category": [cc("Inskrivningsmeddelande")], "subject": PAT,
    "sent": "2024-04-20T09:00:00+02:00", "recipient": [ORG],
    "sender": {"reference": "Organization/region-1"},
    "payload": [{"contentString": "Patienten är inskriven på avdelning 12."},
                {"contentAttachment": {"contentType": "text/plain", "data": "SGVqIQ==",
                                       "title": "hej.txt"}}],
}
CONSENT = {
    "resourceType": "Consent", "id": "consent-1", "status": "active",
    "scope": cc("Integritet", TERMINOLOGY + "consentscope", "patient-privacy"),
    "category": [cc("Samtycke", "http://loinc.org", "59284-0")], "patient": PAT,
    "dateTime": "2024-05-01T09:00:00+02:00",
    "policyRule": cc("Opt-in", TERMINOLOGY + "v3-ActCode", "OPTIN"),
    "provision": {"type": "permit", "period": {"start": "2024-05-01"},
                  "actor": [{"role": cc("Mottagare"), "reference": ORG}]},
}
TASK = {
    "resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
    "priority": "routine", "code": cc("Ordna hemtjänst"), "for": PAT,
    "authoredOn": "2024-04-29T14:00:00+02:00", "owner": ORG,
    "restriction": {"period": {"end": "2024-05-02"}},
    "input": [{"type": cc("timmar per vecka"), "valueDecimal": 7.5},
              {"type": cc("akut"), "valueBoolean": False}],
}
GOAL = {
    "resourceType": "Goal", "id": "goal-1", "lifecycleStatus": "active",
    "achievementStatus": cc("Pågår", TERMINOLOGY + "goal-achievement", "in-progress"),
    "description": cc("Klara vardagen hemma med stöd"), "subject": PAT,
    "startDate": "2024-05-01",
    "target": [{"measure": cc("ADL"), "detailInteger": 5, "dueDate": "2024-08-01"}],
}
# fmt: on
REALISTIC = [PATIENT, CAREPLAN, ENCOUNTER, APPOINTMENT, COMMUNICATION, CONSENT, TASK, GOAL]


@pytest.mark.parametrize("resource", REALISTIC, ids=lambda r: r["resourceType"])
def test_realistic_resources_have_no_errors(resource: dict[str, Any]) -> None:
    assert errors(resource) == []


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of base with keys set (or removed when the value is None)."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


OBS = {"resourceType": "Observation", "status": "final", "code": cc("Vikt")}
PT = "Patient"
DAR = ext(SD + "data-absent-reason", valueCode="unknown")

# fmt: off
NEGATIVE = [  # (id, resource, issue code, expression)
    ("unknown-element", {"resourceType": PT, "foo": 1}, "structure", "Patient.foo"),
    ("primitive-json-type", {"resourceType": PT, "active": "yes"}, "value", "Patient.active"),
    ("regex", {"resourceType": PT, "birthDate": "2020-13-45"}, "value", "Patient.birthDate"),
    ("array-for-max-1", {"resourceType": PT, "gender": ["female"]}, "structure",
     "Patient.gender"),
    ("object-for-max-star", {"resourceType": PT, "name": {"family": "A"}}, "structure",
     "Patient.name"),
    ("missing-status", _with(OBS, status=None), "required", "Observation.status"),
    ("missing-code", _with(OBS, code=None), "required", "Observation.code"),
    ("two-choices", _with(OBS, valueString="72 kg", valueBoolean=True), "structure",
     "Observation.valueBoolean"),
    ("choice-not-allowed", _with(OBS, valueUri="urn:x"), "structure", "Observation.valueUri"),
    ("nested-index", {"resourceType": PT, "name": [{"given": ["A", 5]}]}, "value",
     "Patient.name[0].given[1]"),
    ("decimal-as-string", _with(OBS, valueQuantity={"value": "72"}), "value",
     "Observation.valueQuantity.value"),
    ("integer-as-float", {"resourceType": "Appointment", "status": "booked",
                          "participant": [{"status": "accepted"}], "minutesDuration": 1.5},
     "value", "Appointment.minutesDuration"),
    ("empty-string", {"resourceType": PT, "name": [{"family": ""}]}, "value",
     "Patient.name[0].family"),
    ("empty-object", {"resourceType": PT, "meta": {}}, "structure", "Patient.meta"),
    ("empty-array", {"resourceType": PT, "telecom": []}, "structure", "Patient.telecom"),
    ("null-value", {"resourceType": PT, "gender": None}, "structure", "Patient.gender"),
    ("bad-id", {"resourceType": PT, "id": "a b"}, "value", "Patient.id"),
    ("primitive-ext-unknown", {"resourceType": PT, "_active": {"value": True}}, "structure",
     "Patient.active.value"),
    ("primitive-ext-for-complex", {"resourceType": PT, "_name": [{}]}, "structure",
     "Patient._name"),
    ("null-without-extension", {"resourceType": PT, "name": [{"given": ["A", None]}]},
     "structure", "Patient.name[0].given[1]"),
    ("extension-without-url", {"resourceType": PT, "extension": [{"valueString": "x"}]},
     "required", "Patient.extension[0].url"),
    ("contained-checked", {"resourceType": PT, "contained": [_with(OBS, status=None)]},
     "required", "Patient.contained[0].status"),
    ("bundle-entry-checked",
     {"resourceType": "Bundle", "type": "collection",
      "entry": [{"resource": {"resourceType": PT}},
                {"resource": {"resourceType": PT, "bad": True}}]},
     "structure", "Bundle.entry[1].resource.bad"),
    ("parameters-resource-type",
     {"resourceType": "Parameters",
      "parameter": [{"name": "r", "resource": {"resourceType": "X"}}]},
     "structure", "Parameters.parameter[0].resource"),
    ("content-reference",
     {"resourceType": "Questionnaire", "status": "draft",
      "item": [{"linkId": "1", "type": "group", "item": [{"type": "string"}]}]},
     "required", "Questionnaire.item[0].item[0].linkId"),
    ("r4-only-type-empty", {"resourceType": "MedicinalProduct", "name": [{}]}, "structure",
     "MedicinalProduct.name[0]"),
    ("r4-only-type-required", {"resourceType": "MedicinalProduct", "name": [{"type": {}}]},
     "required", "MedicinalProduct.name[0].productName"),
    ("missing-resource-type", {"id": "x"}, "required", "Resource"),
    ("r4b-only-resource-type", {"resourceType": "MedicinalProductDefinition"}, "structure",
     "Resource"),
]
POSITIVE = [
    ("birthdate-extension-only", {"resourceType": PT, "_birthDate": DAR}),
    ("required-primitive-by-extension", _with(OBS, status=None, _status=DAR)),
    ("aligned-null", {"resourceType": PT, "name": [{"given": [None, "B"],
                                                    "_given": [{"id": "g0", **DAR}, None]}]}),
    ("one-choice", _with(OBS, valueQuantity={"value": 72.5, "unit": "kg"})),
    ("r4-only-type-valid", {"resourceType": "MedicinalProduct",
                            "name": [{"productName": "Alvedon 500 mg"}]}),
    ("nbsp-in-string", {"resourceType": PT, "name": [{"family": "Nilsson\u00a0Berg"}]}),
    ("nested-bundle", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:8e1c5c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b", "resource": PATIENT,
         "request": {"method": "POST", "url": "Patient"}}]}),
    ("parameters-part", {"resourceType": "Parameters", "parameter": [
        {"name": "a", "part": [{"name": "b", "valueInteger": 1}]}]}),
]
# fmt: on


@pytest.mark.parametrize(
    ("resource", "code", "expression"),
    [case[1:] for case in NEGATIVE],
    ids=[case[0] for case in NEGATIVE],
)
def test_negative_cases(resource: dict[str, Any], code: str, expression: str) -> None:
    issues = check_structure(resource)
    assert (code, expression) in [(i.code, i.expression) for i in issues], issues
    assert all(i.severity in ("error", "warning") and i.message for i in issues)


@pytest.mark.parametrize("resource", [c[1] for c in POSITIVE], ids=[c[0] for c in POSITIVE])
def test_positive_cases(resource: dict[str, Any]) -> None:
    assert errors(resource) == []


def test_exact_messages() -> None:
    [issue] = errors(_with(OBS, valueString="a", valueBoolean=True))
    assert issue.message == (
        "Only one of the Observation.value[x] choices may be present, "
        "found 'valueString' and 'valueBoolean'"
    )
    [issue] = errors({"resourceType": PT, "foo": 1})
    assert issue.message == "Unknown element 'foo' in Patient"
    [issue] = errors({"resourceType": PT, "active": "yes"})
    assert issue.message == "'active' must be a JSON boolean, not string"


def test_resource_types_and_elements() -> None:
    types = resource_types()
    assert len(types) == 146
    assert {"MedicinalProduct", "EffectEvidenceSynthesis", "Patient", "CarePlan"} <= types
    assert "Resource" not in types and "DomainResource" not in types
    ref = element("Questionnaire.item.item")
    assert ref is not None and ref.ref == "Questionnaire.item"
    value = element("Observation.value[x]")
    assert value is not None and value.max == 1 and "Quantity" in value.types


def test_r4b_models() -> None:
    assert r4b_model("MedicinalProduct") is None
    assert r4b_difference("MedicinalProduct") == "no R4B model class"
    model = r4b_model("Patient")
    assert model is not None and model.__name__ == "Patient"
    for resource in REALISTIC:  # R4-valid resources also parse with the R4B-equal models
        r4b = r4b_model(resource["resourceType"])
        if r4b is not None:
            r4b.model_validate(resource)

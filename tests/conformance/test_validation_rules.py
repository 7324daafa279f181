"""The R4 rules every write is checked against, over HTTP (POST /Type) on every engine.

Each rule class has a negative case (status, the one error's code and FHIRPath expression, the
invariant key in diagnostics) and a positive case (the same resource, fixed, is created):
required and extensible bindings, FHIRPath invariants, reference targets, calendar dates.
A rejected write stores nothing.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.resources import care_plan, patient

XHTML = "http://www.w3.org/1999/xhtml"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
PATIENT_REF = {"reference": "Patient/p1"}


async def rejected(
    client: httpx.AsyncClient,
    resource: dict[str, Any],
    status: int,
    code: str,
    expression: str,
    key: str | None = None,
) -> dict[str, Any]:
    """POST `resource`; it must be refused with exactly one error issue, as given."""
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    errors = [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]
    assert [(i["code"], i["expression"]) for i in errors] == [(code, [expression])], errors
    if key is not None:
        assert errors[0]["diagnostics"].startswith(f"{key}: "), errors[0]["diagnostics"]
    return errors[0]


async def accepted(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    """POST `resource`; it must be created (warnings never block a write)."""
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def observation(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "vikt"}, **extra}


def condition(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": PATIENT_REF, **extra}


def appointment(status: str = "booked", **extra: Any) -> dict[str, Any]:
    participant = {"actor": PATIENT_REF, "status": "accepted"}
    return {"resourceType": "Appointment", "status": status, "participant": [participant], **extra}


def narrative(inner: str) -> dict[str, str]:
    return {"status": "generated", "div": f'<div xmlns="{XHTML}">{inner}</div>'}


def organization(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": "org1", "name": "Luleå kommun", **extra}


# --- required bindings on code ---------------------------------------------------------------


async def test_careplan_status_outside_required_value_set_is_422(client: httpx.AsyncClient):
    issue = await rejected(
        client, care_plan("Patient/p1", status="bogus"), 422, "code-invalid", "CarePlan.status"
    )
    assert "'bogus'" in issue["diagnostics"]
    assert "http://hl7.org/fhir/ValueSet/request-status" in issue["diagnostics"]


async def test_careplan_status_in_required_value_set_is_accepted(client: httpx.AsyncClient):
    assert (await accepted(client, care_plan("Patient/p1", status="draft")))["status"] == "draft"


async def test_patient_gender_outside_required_value_set_is_422(client: httpx.AsyncClient):
    await rejected(client, patient(gender="x"), 422, "code-invalid", "Patient.gender")


async def test_patient_gender_in_required_value_set_is_accepted(client: httpx.AsyncClient):
    await accepted(client, patient(gender="unknown"))


async def test_required_code_inside_datatype_is_located_by_index(client: httpx.AsyncClient):
    telecom = [{"system": "phone", "value": "+46701234567"}, {"system": "fax2", "value": "1"}]
    await rejected(
        client, patient(telecom=telecom), 422, "code-invalid", "Patient.telecom[1].system"
    )
    first = patient(telecom=[{"system": "fax2", "value": "+4692012345"}])
    await rejected(client, first, 422, "code-invalid", "Patient.telecom[0].system")


async def test_required_code_inside_datatype_valid_is_accepted(client: httpx.AsyncClient):
    await accepted(client, patient(telecom=[{"system": "fax", "value": "+4692012345"}]))


async def test_name_use_outside_required_value_set_is_422(client: httpx.AsyncClient):
    name = [{"family": "Tolvansson", "use": "nickname2"}]
    await rejected(client, patient(name=name), 422, "code-invalid", "Patient.name[0].use")


async def test_quantity_comparator_outside_required_value_set_is_422(client: httpx.AsyncClient):
    obs = observation(valueQuantity={"value": 7, "comparator": "~"})
    await rejected(client, obs, 422, "code-invalid", "Observation.valueQuantity.comparator")


async def test_quantity_comparator_in_required_value_set_is_accepted(client: httpx.AsyncClient):
    await accepted(client, observation(valueQuantity={"value": 7, "comparator": "<"}))


async def test_required_code_with_only_an_extension_is_accepted(client: httpx.AsyncClient):
    absent = {"extension": [{"url": "http://example.org/why", "valueString": "okänt"}]}
    body = patient(_gender=absent)
    del body["gender"]
    assert (await accepted(client, body))["_gender"] == absent


# --- required binding on CodeableConcept (Condition.clinicalStatus) -------------------------


async def test_condition_clinical_status_unknown_code_is_422(client: httpx.AsyncClient):
    status = {"coding": [{"system": CLINICAL, "code": "bogus"}]}
    await rejected(
        client, condition(clinicalStatus=status), 422, "code-invalid", "Condition.clinicalStatus"
    )


async def test_condition_clinical_status_code_from_other_system_is_422(client: httpx.AsyncClient):
    status = {"coding": [{"system": "http://example.org/status", "code": "active"}]}
    await rejected(
        client, condition(clinicalStatus=status), 422, "code-invalid", "Condition.clinicalStatus"
    )


async def test_condition_clinical_status_text_only_is_422(client: httpx.AsyncClient):
    status = {"text": "aktiv"}
    await rejected(
        client, condition(clinicalStatus=status), 422, "code-invalid", "Condition.clinicalStatus"
    )


async def test_condition_clinical_status_valid_coding_is_accepted(client: httpx.AsyncClient):
    local = {"system": "http://example.org/status", "code": "pågående"}
    status = {"coding": [local, {"system": CLINICAL, "code": "active"}], "text": "Aktiv"}
    await accepted(client, condition(clinicalStatus=status))


# --- extensible bindings: a warning, never a block ------------------------------------------


async def test_extensible_codeable_concept_with_other_coding_is_accepted(
    client: httpx.AsyncClient,
):
    marital = {"coding": [{"system": "http://example.org/civilstand", "code": "sambo"}]}
    created = await accepted(client, patient(maritalStatus=marital))
    assert created["maritalStatus"] == marital


async def test_extensible_coding_with_other_code_is_accepted(client: httpx.AsyncClient):
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://example.org/vardform", "code": "hemsjukvard"},
    }
    await accepted(client, encounter)


# --- invariants -------------------------------------------------------------------------------


async def test_obs6_value_and_data_absent_reason_is_422(client: httpx.AsyncClient):
    obs = observation(valueString="72 kg", dataAbsentReason={"text": "ej mätt"})
    await rejected(client, obs, 422, "invariant", "Observation", "obs-6")


async def test_obs6_data_absent_reason_alone_is_accepted(client: httpx.AsyncClient):
    await accepted(client, observation(dataAbsentReason={"text": "ej mätt"}))


async def test_cpl3_activity_with_reference_and_detail_is_422(client: httpx.AsyncClient):
    activity = [
        {"detail": {"status": "scheduled"}},
        {"reference": {"reference": "ServiceRequest/s1"}, "detail": {"status": "scheduled"}},
    ]
    plan = care_plan("Patient/p1", activity=activity[1:])
    await rejected(client, plan, 422, "invariant", "CarePlan.activity[0]", "cpl-3")
    plan = care_plan("Patient/p1", activity=activity)
    await rejected(client, plan, 422, "invariant", "CarePlan.activity[1]", "cpl-3")


async def test_cpl3_activity_with_reference_only_is_accepted(client: httpx.AsyncClient):
    activity = [
        {"reference": {"reference": "ServiceRequest/s1"}},
        {"detail": {"status": "completed"}},
    ]
    await accepted(client, care_plan("Patient/p1", activity=activity))


async def test_app3_booked_appointment_without_start_end_is_422(client: httpx.AsyncClient):
    await rejected(client, appointment("booked"), 422, "invariant", "Appointment", "app-3")


async def test_app3_booked_with_times_or_proposed_without_is_accepted(client: httpx.AsyncClient):
    times = {"start": "2025-03-04T10:00:00+01:00", "end": "2025-03-04T11:00:00+01:00"}
    await accepted(client, appointment("booked", **times))
    await accepted(client, appointment("proposed"))


async def test_app2_start_without_end_is_422(client: httpx.AsyncClient):
    response = await client.post(
        "/Appointment", json=appointment("proposed", start="2025-03-04T10:00:00+01:00")
    )
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert (issue["code"], issue["expression"]) == ("invariant", ["Appointment"])
    assert issue["diagnostics"].startswith("app-2: ")


async def test_per1_period_start_after_end_is_422(client: httpx.AsyncClient):
    plan = care_plan("Patient/p1", period={"start": "2025-05-01", "end": "2025-01-01"})
    await rejected(client, plan, 422, "invariant", "CarePlan.period", "per-1")
    period = {"start": "2025-05-01", "end": "2025-01-01"}
    telecom = [{"system": "phone", "value": "+46701234567", "period": period}]
    await rejected(client, patient(telecom=telecom), 422, "invariant", "Patient.telecom[0].period")


async def test_per1_period_in_order_or_equal_is_accepted(client: httpx.AsyncClient):
    await accepted(
        client, care_plan("Patient/p1", period={"start": "2025-01-01", "end": "2025-05-01"})
    )
    await accepted(
        client, care_plan("Patient/p1", period={"start": "2025-01-01", "end": "2025-01-01"})
    )


async def test_per1_compares_instants_across_time_zones_valid(client: httpx.AsyncClient):
    period = {"start": "2025-05-01T10:00:00+02:00", "end": "2025-05-01T09:00:00Z"}
    await accepted(client, care_plan("Patient/p1", period=period))


async def test_per1_compares_instants_across_time_zones_invalid(client: httpx.AsyncClient):
    period = {"start": "2025-05-01T10:00:00Z", "end": "2025-05-01T11:00:00+02:00"}
    plan = care_plan("Patient/p1", period=period)
    await rejected(client, plan, 422, "invariant", "CarePlan.period", "per-1")


async def test_cpt2_contact_point_value_without_system_is_422(client: httpx.AsyncClient):
    telecom = [{"value": "+46701234567", "use": "mobile"}]
    await rejected(
        client, patient(telecom=telecom), 422, "invariant", "Patient.telecom[0]", "cpt-2"
    )


async def test_cpt2_contact_point_with_system_is_accepted(client: httpx.AsyncClient):
    telecom = [{"system": "phone", "value": "+46701234567", "use": "mobile"}]
    await accepted(client, patient(telecom=telecom))


async def test_ext1_extension_with_value_and_extensions_is_422(client: httpx.AsyncClient):
    both = {
        "url": "http://example.org/sip-role",
        "valueString": "samordnare",
        "extension": [{"url": "since", "valueDate": "2024-01-01"}],
    }
    await rejected(
        client, patient(extension=[both]), 422, "invariant", "Patient.extension[0]", "ext-1"
    )
    name = [{"family": "Tolvansson", "extension": [both]}]
    await rejected(client, patient(name=name), 422, "invariant", "Patient.name[0].extension[0]")
    birth = {"extension": [both]}
    await rejected(
        client, patient(_birthDate=birth), 422, "invariant", "Patient.birthDate.extension[0]"
    )


async def test_ext1_extension_with_neither_value_nor_extensions_is_422(client: httpx.AsyncClient):
    empty = {"url": "http://example.org/sip-role"}
    await rejected(
        client, patient(extension=[empty]), 422, "invariant", "Patient.extension[0]", "ext-1"
    )


async def test_ext1_simple_and_complex_extensions_are_accepted(client: httpx.AsyncClient):
    simple = {"url": "http://example.org/sip-role", "valueString": "samordnare"}
    complex_ = {
        "url": "http://example.org/sip-role",
        "extension": [{"url": "since", "valueDate": "2024-01-01"}],
    }
    await accepted(client, patient(extension=[simple, complex_]))


async def test_dom4_contained_resource_with_version_id_is_422(client: httpx.AsyncClient):
    body = patient(
        contained=[organization(meta={"versionId": "3"})],
        managingOrganization={"reference": "#org1"},
    )
    await rejected(client, body, 422, "invariant", "Patient", "dom-4")


async def test_dom2_contained_resource_with_contained_is_422(client: httpx.AsyncClient):
    inner = organization(contained=[organization(id="org2")], partOf={"reference": "#org2"})
    body = patient(contained=[inner], managingOrganization={"reference": "#org1"})
    response = await client.post("/Patient", json=body)
    assert response.status_code == 422
    issues = [(i["expression"], i["diagnostics"][:6]) for i in response.json()["issue"]]
    # the nested resource is also not resolvable from the root (ref-1), as dom-2 implies
    assert issues == [(["Patient.contained[0].partOf"], "ref-1:"), (["Patient"], "dom-2:")]


async def test_dom_rules_contained_resource_without_meta_is_accepted(client: httpx.AsyncClient):
    body = patient(contained=[organization()], managingOrganization={"reference": "#org1"})
    created = await accepted(client, body)
    assert created["contained"][0]["id"] == "org1"


async def test_dom3_unreferenced_contained_resource_is_422(client: httpx.AsyncClient):
    body = patient(contained=[organization()])
    await rejected(client, body, 422, "invariant", "Patient", "dom-3")


async def test_invariants_inside_contained_resource_are_located_there(client: httpx.AsyncClient):
    obs = observation(id="o1", valueString="72 kg", dataAbsentReason={"text": "ej mätt"})
    plan = care_plan("Patient/p1", contained=[obs], supportingInfo=[{"reference": "#o1"}])
    await rejected(client, plan, 422, "invariant", "CarePlan.contained[0]", "obs-6")


async def test_ref1_reference_to_missing_contained_resource_is_422(client: httpx.AsyncClient):
    body = patient(managingOrganization={"reference": "#nope"})
    await rejected(client, body, 422, "invariant", "Patient.managingOrganization", "ref-1")
    body = patient(
        contained=[organization()],
        managingOrganization={"reference": "#nope"},
        generalPractitioner=[{"reference": "#org1"}],  # org1 is used, so dom-3 holds
    )
    await rejected(client, body, 422, "invariant", "Patient.managingOrganization", "ref-1")


async def test_ref1_reference_to_present_contained_resource_is_accepted(
    client: httpx.AsyncClient,
):
    body = patient(contained=[organization()], managingOrganization={"reference": "#org1"})
    await accepted(client, body)


async def test_txt1_script_in_narrative_is_422(client: httpx.AsyncClient):
    text = narrative("<p>Tolvan</p><script>alert(1)</script>")
    await rejected(client, patient(text=text), 422, "invariant", "Patient.text.div", "txt-1")


async def test_txt1_event_attribute_and_javascript_link_are_422(client: httpx.AsyncClient):
    onclick = narrative('<p onclick="steal()">Tolvan</p>')
    await rejected(client, patient(text=onclick), 422, "invariant", "Patient.text.div", "txt-1")
    link = narrative('<a href="javascript:steal()">Tolvan</a>')
    await rejected(client, patient(text=link), 422, "invariant", "Patient.text.div", "txt-1")


async def test_txt1_tab_obfuscated_javascript_link_is_422(client: httpx.AsyncClient):
    link = narrative('<a href="java&#x09;script:steal()">Tolvan</a>')
    await rejected(client, patient(text=link), 422, "invariant", "Patient.text.div", "txt-1")


async def test_txt1_basic_xhtml_narrative_is_accepted(client: httpx.AsyncClient):
    text = narrative('<p><b>Tolvan Tolvansson</b>, <a href="https://1177.se">1177</a></p>')
    assert (await accepted(client, patient(text=text)))["text"] == text


async def test_ele1_element_with_only_an_id_is_422(client: httpx.AsyncClient):
    body = patient(name=[{"id": "n1"}])
    await rejected(client, body, 422, "invariant", "Patient.name[0]", "ele-1")
    telecom = [{"system": "phone", "value": "+46701234567", "period": {"id": "p1"}}]
    await rejected(client, patient(telecom=telecom), 422, "invariant", "Patient.telecom[0].period")
    await rejected(client, patient(_birthDate={"id": "b1"}), 422, "invariant", "Patient.birthDate")


async def test_ele1_element_with_an_id_and_content_is_accepted(client: httpx.AsyncClient):
    await accepted(client, patient(name=[{"id": "n1", "family": "Tolvansson"}]))


# --- references -------------------------------------------------------------------------------


async def test_reference_to_disallowed_target_type_is_422(client: httpx.AsyncClient):
    issue = await rejected(client, care_plan("Organization/x"), 422, "invalid", "CarePlan.subject")
    assert "Organization" in issue["diagnostics"]
    absolute = care_plan("https://other.example/fhir/Organization/x")
    await rejected(client, absolute, 422, "invalid", "CarePlan.subject")


async def test_reference_to_allowed_target_type_is_accepted(client: httpx.AsyncClient):
    await accepted(client, care_plan("Patient/x"))
    await accepted(client, care_plan("Group/g1"))
    await accepted(client, care_plan("Patient/x/_history/2"))


async def test_contained_reference_to_disallowed_target_type_is_422(client: httpx.AsyncClient):
    plan = care_plan("#org1", contained=[organization()])
    await rejected(client, plan, 422, "invalid", "CarePlan.subject")


async def test_malformed_urn_uuid_reference_is_422(client: httpx.AsyncClient):
    issue = await rejected(
        client, care_plan("urn:uuid:not-a-uuid"), 422, "invalid", "CarePlan.subject"
    )
    assert "urn:uuid:not-a-uuid" in issue["diagnostics"]


async def test_well_formed_urn_uuid_reference_is_accepted(client: httpx.AsyncClient):
    await accepted(client, care_plan("urn:uuid:3f2a9c1e-6b4d-4e8f-9a2b-1c3d5e7f9a0b"))


async def test_absolute_url_reference_is_accepted(client: httpx.AsyncClient):
    await accepted(client, care_plan("https://fhir.region.example/fhir/Patient/123"))
    await accepted(client, care_plan("https://mpi.example/people/123"))


async def test_reference_type_disagreeing_with_reference_is_422(client: httpx.AsyncClient):
    subject = {"reference": "Patient/x", "type": "Group"}
    plan = care_plan("Patient/x") | {"subject": subject}
    issue = await rejected(client, plan, 422, "invalid", "CarePlan.subject")
    assert "Group" in issue["diagnostics"]


async def test_reference_type_not_an_allowed_target_is_422(client: httpx.AsyncClient):
    subject = {"type": "Organization", "identifier": {"value": "2321000230"}}
    plan = care_plan("Patient/x") | {"subject": subject}
    await rejected(client, plan, 422, "invalid", "CarePlan.subject")


async def test_reference_type_agreeing_with_reference_is_accepted(client: httpx.AsyncClient):
    plan = care_plan("Patient/x") | {"subject": {"reference": "Patient/x", "type": "Patient"}}
    await accepted(client, plan)


# --- calendar dates ---------------------------------------------------------------------------


async def test_birth_date_not_on_the_calendar_is_400(client: httpx.AsyncClient):
    issue = await rejected(
        client, patient(birthDate="2023-02-30"), 400, "value", "Patient.birthDate"
    )
    assert "2023-02-30" in issue["diagnostics"]
    await rejected(client, patient(birthDate="1900-02-29"), 400, "value", "Patient.birthDate")


async def test_date_times_not_on_the_calendar_are_400(client: httpx.AsyncClient):
    obs = observation(effectiveDateTime="2023-02-29T10:00:00+01:00")
    await rejected(client, obs, 400, "value", "Observation.effectiveDateTime")
    obs = observation(issued="2023-04-31T10:00:00Z")
    await rejected(client, obs, 400, "value", "Observation.issued")
    plan = care_plan("Patient/p1", period={"start": "2023-06-31"})
    await rejected(client, plan, 400, "value", "CarePlan.period.start")


async def test_leap_day_and_partial_dates_are_accepted(client: httpx.AsyncClient):
    assert (await accepted(client, patient(birthDate="2024-02-29")))["birthDate"] == "2024-02-29"
    await accepted(client, patient(birthDate="2000-02-29"))
    await accepted(client, patient(birthDate="1912-02"))


# --- a rejected write stores nothing ----------------------------------------------------------


async def test_rejected_create_stores_nothing(client: httpx.AsyncClient):
    # Compared with before, not with 0: the server may seed conformance resources at start-up.
    history_before = (await client.get("/_history")).json()["total"]
    response = await client.post("/CarePlan", json=care_plan("Patient/p1", status="bogus"))
    assert response.status_code == 422
    assert "location" not in response.headers
    assert (await client.get("/CarePlan")).json()["total"] == 0
    assert (await client.get("/_history")).json()["total"] == history_before


async def test_rejected_update_leaves_the_stored_version(client: httpx.AsyncClient):
    created = await accepted(client, care_plan("Patient/p1"))
    url = f"/CarePlan/{created['id']}"
    bad = created | {"period": {"start": "2025-05-01", "end": "2025-01-01"}}
    response = await client.put(url, json=bad)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["diagnostics"].startswith("per-1: ")
    read = await client.get(url)
    assert read.headers["etag"] == 'W/"1"'
    assert read.json() == created
    assert (await client.get(f"{url}/_history")).json()["total"] == 1


async def test_rejected_update_as_create_stores_nothing(client: httpx.AsyncClient):
    bad = patient(id="ny-patient", gender="x")
    response = await client.put("/Patient/ny-patient", json=bad)
    assert response.status_code == 422, response.text
    assert (await client.get("/Patient/ny-patient")).status_code == 404
    assert (await client.get("/Patient")).json()["total"] == 0


BLOOD_PRESSURE = {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}
SYSTOLIC = {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}
MM_HG = {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}


async def test_obs7_value_with_a_component_of_the_same_code_is_422(client: httpx.AsyncClient):
    body = observation(
        code=BLOOD_PRESSURE,
        valueQuantity=MM_HG,
        component=[{"code": BLOOD_PRESSURE, "valueQuantity": MM_HG}],
    )
    await rejected(client, body, 422, "invariant", "Observation", "obs-7")


async def test_obs7_components_with_their_own_codes_are_accepted(client: httpx.AsyncClient):
    body = observation(
        code=BLOOD_PRESSURE,
        valueQuantity=MM_HG,
        component=[{"code": SYSTOLIC, "valueQuantity": MM_HG}],
    )
    await accepted(client, body)

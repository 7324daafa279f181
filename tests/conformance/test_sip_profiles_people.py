"""SIP profiles of people and organisations: Patient, Organization, Practitioner,
PractitionerRole (and the fast vårdkontakt), CareTeam.

The shipped examples in `examples/sip-case/` are the valid resources (201); each negative case
changes one thing and asserts the 422 at the exact element and the rule (constraint key or
profile element) in the message.  Rule ids of SIP-PROCESS.md are in the test names/docstrings.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.resources import same_verdict_from_validate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sip-case"
BASE = "http://sip-fhir.se/fhir"
PNR = "http://electronichealth.se/identifier/personnummer"
SNR = "http://electronichealth.se/identifier/samordningsnummer"
PNR_OID = "urn:oid:1.2.752.129.2.1.3.1"
HSA = "urn:oid:1.2.752.29.4.19"
HSA_INERA = "urn:oid:1.2.752.129.2.1.4.1"
UNIT = f"{BASE}/CodeSystem/sip-unit-type"
PRINCIPAL = f"{BASE}/CodeSystem/sip-principal-type"

Change = Callable[[dict[str, Any]], Any]


def example(name: str) -> dict[str, Any]:
    resource = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    resource.pop("id")
    return resource


def changed(name: str, change: Change) -> dict[str, Any]:
    resource = example(name)
    change(resource)
    return resource


def luhn_digit(first11: str) -> str:
    """The check digit making a 12-digit personnummer valid (reference implementation)."""
    total = 0
    for k, ch in enumerate(first11[2:]):
        x = int(ch) * (2 if k % 2 == 0 else 1)
        total += x // 10 + x % 10
    return str((10 - total % 10) % 10)


def with_check_digit(first11: str) -> str:
    return first11 + luhn_digit(first11)


async def post(client: httpx.AsyncClient, resource: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/{resource['resourceType']}", json=resource)


async def rejected(client: httpx.AsyncClient, resource: dict[str, Any]) -> list[dict[str, Any]]:
    response = await post(client, resource)
    assert response.status_code == 422, response.text
    await same_verdict_from_validate(client, resource, response.json()["issue"])
    return response.json()["issue"]


def hit(issues: list[dict[str, Any]], expression: str, named: str) -> None:
    found = [i for i in issues if i["expression"] == [expression] and named in i["diagnostics"]]
    assert found, issues
    assert all(i["severity"] == "error" for i in found)


def set_identifier(system: str, value: str) -> Change:
    def change(r: dict[str, Any]) -> None:
        r["identifier"] = [{"system": system, "value": value}]
        r.pop("birthDate", None)

    return change


# ------------------------------------------------------------------------------ valid examples

VALID = [
    "Patient-tolvan-tolvansson",
    "Organization-region-norrbotten",
    "Organization-lulea-municipality",
    "Organization-ornaset-health-centre",
    "Organization-sunderby-medical-ward",
    "Organization-lulea-home-care",
    "Practitioner-case-officer",
    "Practitioner-district-nurse",
    "Practitioner-ward-physician",
    "Practitioner-gp-physician",
    "PractitionerRole-needs-assessment-officer",
    "PractitionerRole-ward-physician",
    "PractitionerRole-designated-care-contact",
    "PractitionerRole-designated-care-contact-physician",
    "CareTeam-sip-team",
]


@pytest.mark.parametrize("name", VALID)
async def test_example_claims_a_sip_profile_and_is_accepted(
    client: httpx.AsyncClient, name: str
) -> None:
    resource = example(name)
    [profile] = resource["meta"]["profile"]
    assert profile.startswith(f"{BASE}/StructureDefinition/sip-")
    validated = await client.post(f"/{resource['resourceType']}/$validate", json=resource)
    issues = validated.json()["issue"]
    assert not [i for i in issues if i["severity"] in ("error", "fatal")], issues
    assert not [i for i in issues if i["code"] == "not-supported"], issues  # all rules evaluated
    response = await post(client, resource)
    assert response.status_code == 201, response.text


# ------------------------------------------------------------------------------ Patient

PERSON_NUMBERS_VALID = [
    (PNR, "191212121212"),  # Skatteverket's test personnummer
    (PNR, with_check_digit("20240229123")),  # leap day
    (PNR, with_check_digit("20000229123")),  # divisible by 400: leap year
    (PNR_OID, "191212121212"),  # Inera's OID alias
    (SNR, "197010632391"),  # samordningsnummer: 1970-10-03 + 60
    (SNR, with_check_digit("19701091123")),  # day 31 + 60
    (SNR, with_check_digit("20240289123")),  # 29 February + 60
]


@pytest.mark.parametrize(("system", "value"), PERSON_NUMBERS_VALID)
async def test_valid_person_numbers_are_accepted(
    client: httpx.AsyncClient, system: str, value: str
) -> None:
    resource = changed("Patient-tolvan-tolvansson", set_identifier(system, value))
    response = await post(client, resource)
    assert response.status_code == 201, response.text


# fmt: off
PERSON_NUMBERS_INVALID = [  # (id, system, value, violated constraint)
    ("wrong-check-digit", PNR, "191212121213", "sip-patient-3"),
    ("wrong-check-digit-oid-alias", PNR_OID, "191212121219", "sip-patient-3"),
    ("wrong-check-digit-samordningsnummer", SNR, "197010632392", "sip-patient-3"),
    ("nine-digits", PNR, "121212121", "sip-patient-2"),  # 10/12 digits are normalised
    ("plus-in-twelve-digits", PNR, "19121212+1212", "sip-patient-2"),
    ("letters", PNR, "19121212121X", "sip-patient-2"),
    ("thirtieth-of-february", PNR, with_check_digit("20230230123"), "sip-patient-4"),
    ("29-february-not-leap", PNR, with_check_digit("20230229123"), "sip-patient-4"),
    ("29-february-1900", PNR, with_check_digit("19000229123"), "sip-patient-4"),
    ("month-13", PNR, with_check_digit("20231301123"), "sip-patient-4"),
    ("day-00", PNR, with_check_digit("20230100123"), "sip-patient-4"),
    ("31-april", PNR, with_check_digit("20230431123"), "sip-patient-4"),
    ("personnummer-as-samordningsnummer", SNR, "191212121212", "sip-patient-5"),
    ("samordningsnummer-as-personnummer", PNR, "197010632391", "sip-patient-4"),
    ("samordningsnummer-day-60", SNR, with_check_digit("20230160123"), "sip-patient-5"),
    ("samordningsnummer-31-april", SNR, with_check_digit("20230491123"), "sip-patient-5"),
    ("samordningsnummer-29-february", SNR, with_check_digit("20230289123"), "sip-patient-5"),
]
# fmt: on


@pytest.mark.parametrize(
    ("system", "value", "key"),
    [case[1:] for case in PERSON_NUMBERS_INVALID],
    ids=[case[0] for case in PERSON_NUMBERS_INVALID],
)
async def test_invalid_person_numbers_are_rejected(
    client: httpx.AsyncClient, system: str, value: str, key: str
) -> None:
    """Format (sip-patient-2), Luhn check digit (-3), date (-4) and date + 60 (-5)."""
    resource = changed("Patient-tolvan-tolvansson", set_identifier(system, value))
    issues = await rejected(client, resource)
    hit(issues, "Patient.identifier[0]", key)
    assert {i["expression"][0] for i in issues} == {"Patient.identifier[0]"}


async def test_patient_without_a_swedish_person_identifier_is_rejected(
    client: httpx.AsyncClient,
) -> None:
    """sip-patient-1: a personnummer or samordningsnummer is required."""
    resource = changed(
        "Patient-tolvan-tolvansson", set_identifier("urn:oid:1.2.752.129.2.1.3.2", "99")
    )
    hit(await rejected(client, resource), "Patient", "sip-patient-1")


async def test_patient_without_identifier_is_rejected(client: httpx.AsyncClient) -> None:
    resource = changed("Patient-tolvan-tolvansson", lambda r: r.pop("identifier"))
    issues = await rejected(client, resource)
    hit(issues, "Patient.identifier", "SIPPatient Patient.identifier: minimum 1")
    hit(issues, "Patient", "sip-patient-1")


async def test_personnummer_slice_needs_a_value(client: httpx.AsyncClient) -> None:
    resource = changed("Patient-tolvan-tolvansson", lambda r: r["identifier"][0].pop("value"))
    issues = await rejected(client, resource)
    hit(issues, "Patient.identifier[0].value", "Patient.identifier:personnummer.value")


async def test_r_sip_04_patient_phone_is_required(client: httpx.AsyncClient) -> None:
    """R-SIP-04: the person's phone number is recorded (telecom slice phone 1..*)."""
    resource = changed(
        "Patient-tolvan-tolvansson",
        lambda r: r.__setitem__("telecom", [{"system": "email", "value": "t@example.se"}]),
    )
    hit(await rejected(client, resource), "Patient.telecom", "Patient.telecom:phone: minimum 1")


async def test_r_sip_04_patient_phone_needs_a_number(client: httpx.AsyncClient) -> None:
    """R-SIP-04: a phone entry without a number does not count."""
    resource = changed(
        "Patient-tolvan-tolvansson",
        lambda r: r.__setitem__(
            "telecom",
            [
                {
                    "system": "phone",
                    "use": "mobile",
                    "extension": [{"url": "http://example.org/x", "valueString": "okänt"}],
                }
            ],
        ),
    )
    hit(
        await rejected(client, resource),
        "Patient.telecom[0].value",
        "Patient.telecom:phone.value: minimum 1",
    )


async def test_r_sip_04_next_of_kin_has_a_phone(client: httpx.AsyncClient) -> None:
    """R-SIP-04: a närstående (contact) is recorded with a phone number (sip-patient-7)."""

    def email_only(r: dict[str, Any]) -> None:
        r["contact"][0]["telecom"] = [{"system": "email", "value": "lena@example.se"}]

    issues = await rejected(client, changed("Patient-tolvan-tolvansson", email_only))
    hit(issues, "Patient.contact[0]", "sip-patient-7")


async def test_r_sip_04_patient_without_contact_is_accepted(client: httpx.AsyncClient) -> None:
    """R-SIP-04: the contact is optional (next of kin may be a RelatedPerson)."""
    resource = changed("Patient-tolvan-tolvansson", lambda r: r.pop("contact"))
    assert (await post(client, resource)).status_code == 201


async def test_r_sip_04_home_address_names_the_municipality(client: httpx.AsyncClient) -> None:
    """R-SIP-04, R-DIS-09: folkbokföringskommun in the home address's district."""
    resource = changed("Patient-tolvan-tolvansson", lambda r: r["address"][0].pop("district"))
    hit(await rejected(client, resource), "Patient.address[0]", "sip-patient-6")


async def test_r_sip_04_address_is_optional_for_protected_identity(
    client: httpx.AsyncClient,
) -> None:
    """Skyddade personuppgifter: no address on record is allowed."""
    resource = changed("Patient-tolvan-tolvansson", lambda r: r.pop("address"))
    assert (await post(client, resource)).status_code == 201


async def test_r_sip_04_listed_care_centre_is_an_organization(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-04: listed primary care centre: generalPractitioner references an Organization."""

    def to_practitioner(r: dict[str, Any]) -> None:
        r["generalPractitioner"] = [{"reference": "Practitioner/district-nurse"}]

    issues = await rejected(client, changed("Patient-tolvan-tolvansson", to_practitioner))
    hit(issues, "Patient.generalPractitioner[0]", "must reference Organization")


async def test_plain_patient_without_claim_is_not_checked(client: httpx.AsyncClient) -> None:
    resource = example("Patient-tolvan-tolvansson")
    resource.pop("meta")
    resource["identifier"][0]["value"] = "191212121213"
    resource.pop("telecom")
    assert (await post(client, resource)).status_code == 201


# ------------------------------------------------------------------------------ Organization


async def test_organization_accepts_the_inera_hsa_oid(client: httpx.AsyncClient) -> None:
    def inera(r: dict[str, Any]) -> None:
        r["identifier"] = [{"system": HSA_INERA, "value": "SE2321000230-H0R1"}]

    response = await post(client, changed("Organization-ornaset-health-centre", inera))
    assert response.status_code == 201, response.text


async def test_organization_without_hsa_id_is_rejected(client: httpx.AsyncClient) -> None:
    """sip-organization-1: an HSA-id (either OID) is required."""

    def orgnr_only(r: dict[str, Any]) -> None:
        r["identifier"] = [i for i in r["identifier"] if i["system"] not in (HSA, HSA_INERA)]

    issues = await rejected(client, changed("Organization-region-norrbotten", orgnr_only))
    hit(issues, "Organization", "sip-organization-1")


async def test_organization_principal_type_is_required(client: httpx.AsyncClient) -> None:
    """R-SIP-11, R-DIS-09: the principal type (huvudman) of every organisation is known."""

    def drop_principal(r: dict[str, Any]) -> None:
        r["type"] = [t for t in r["type"] if t["coding"][0]["system"] != PRINCIPAL]

    issues = await rejected(client, changed("Organization-sunderby-medical-ward", drop_principal))
    hit(issues, "Organization.type", "Organization.type:principal: minimum 1")


async def test_organization_principal_type_binding_is_required(
    client: httpx.AsyncClient,
) -> None:
    """R-SIP-11: only region, kommun, annan."""

    def bad_code(r: dict[str, Any]) -> None:
        for t in r["type"]:
            if t["coding"][0]["system"] == PRINCIPAL:
                t["coding"][0]["code"] = "landsting"

    issues = await rejected(client, changed("Organization-region-norrbotten", bad_code))
    [index] = [
        i
        for i, t in enumerate(example("Organization-region-norrbotten")["type"])
        if t["coding"][0]["system"] == PRINCIPAL
    ]
    hit(issues, f"Organization.type[{index}]", "sip-principal-type")


async def test_organization_unit_type_binding_is_required(client: httpx.AsyncClient) -> None:
    """R-DIS-02, R-DIS-07: unit types from sip-unit-type only."""

    def bad_code(r: dict[str, Any]) -> None:
        for t in r["type"]:
            if t["coding"][0]["system"] == UNIT:
                t["coding"][0]["code"] = "apotek"

    resource = changed("Organization-sunderby-medical-ward", bad_code)
    [index] = [i for i, t in enumerate(resource["type"]) if t["coding"][0]["system"] == UNIT]
    hit(await rejected(client, resource), f"Organization.type[{index}]", "sip-unit-type")


async def test_unit_without_part_of_is_rejected(client: httpx.AsyncClient) -> None:
    """R-SIP-11, R-DIS-09: a unit names its principal (sip-organization-2)."""
    resource = changed("Organization-lulea-home-care", lambda r: r.pop("partOf"))
    hit(await rejected(client, resource), "Organization", "sip-organization-2")


async def test_hsa_slice_needs_a_value(client: httpx.AsyncClient) -> None:
    resource = changed(
        "Organization-ornaset-health-centre", lambda r: r["identifier"][0].pop("value")
    )
    issues = await rejected(client, resource)
    hit(issues, "Organization.identifier[0].value", "Organization.identifier:hsaId.value")


# ------------------------------------------------------------------------------ Practitioner


async def test_practitioner_name_is_required(client: httpx.AsyncClient) -> None:
    """R-DIS-07, R-SIP-03: a named person."""
    resource = changed("Practitioner-district-nurse", lambda r: r.pop("name"))
    hit(await rejected(client, resource), "Practitioner.name", "Practitioner.name: minimum 1")


async def test_practitioner_name_needs_family_or_text(client: httpx.AsyncClient) -> None:
    resource = changed(
        "Practitioner-district-nurse", lambda r: r.__setitem__("name", [{"given": ["Maria"]}])
    )
    hit(await rejected(client, resource), "Practitioner.name[0]", "sip-practitioner-1")


async def test_practitioner_hsa_id_needs_a_value(client: httpx.AsyncClient) -> None:
    resource = changed("Practitioner-ward-physician", lambda r: r["identifier"][0].pop("value"))
    hit(
        await rejected(client, resource),
        "Practitioner.identifier[0].value",
        "Practitioner.identifier:hsaId.value",
    )


async def test_practitioner_without_hsa_id_is_accepted(client: httpx.AsyncClient) -> None:
    resource = changed("Practitioner-case-officer", lambda r: r.pop("identifier"))
    assert (await post(client, resource)).status_code == 201


# ------------------------------------------------------------------------------ PractitionerRole


async def test_r_sip_11_practitioner_role_names_its_unit(client: httpx.AsyncClient) -> None:
    """R-SIP-11: the unit a person acts for is the responsible actor."""
    resource = changed("PractitionerRole-needs-assessment-officer", lambda r: r.pop("organization"))
    hit(
        await rejected(client, resource),
        "PractitionerRole.organization",
        "SIPPractitionerRole PractitionerRole.organization: minimum 1",
    )


async def test_practitioner_role_states_its_role(client: httpx.AsyncClient) -> None:
    resource = changed("PractitionerRole-ward-physician", lambda r: r.pop("code"))
    hit(
        await rejected(client, resource),
        "PractitionerRole.code",
        "PractitionerRole.code: minimum 1",
    )


async def test_r_dis_07_designated_care_contact_is_a_named_person(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-07: fast vårdkontakt: practitioner 1..1."""
    resource = changed("PractitionerRole-designated-care-contact", lambda r: r.pop("practitioner"))
    hit(
        await rejected(client, resource),
        "PractitionerRole.practitioner",
        "SIPDesignatedCareContact PractitionerRole.practitioner: minimum 1",
    )


async def test_r_dis_07_designated_care_contact_not_display_only(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-07: the named person is referenced, not only a display text."""
    resource = changed(
        "PractitionerRole-designated-care-contact",
        lambda r: r.__setitem__("practitioner", {"display": "Maria Nyström"}),
    )
    hit(
        await rejected(client, resource),
        "PractitionerRole.practitioner",
        "sip-designated-care-contact-1",
    )


async def test_r_dis_07_designated_care_contact_has_a_workplace(
    client: httpx.AsyncClient,
) -> None:
    """R-DIS-07: the workplace (organization 1..1), inherited from sip-practitionerrole too."""
    resource = changed("PractitionerRole-designated-care-contact", lambda r: r.pop("organization"))
    hit(
        await rejected(client, resource),
        "PractitionerRole.organization",
        "SIPDesignatedCareContact PractitionerRole.organization: minimum 1",
    )


async def test_r_dis_07_designated_care_contact_has_a_phone(client: httpx.AsyncClient) -> None:
    """R-DIS-07: reachable by phone (telecom slice phone 1..*)."""
    resource = changed(
        "PractitionerRole-designated-care-contact",
        lambda r: r.__setitem__("telecom", [{"system": "email", "value": "m@example.se"}]),
    )
    hit(
        await rejected(client, resource),
        "PractitionerRole.telecom",
        "PractitionerRole.telecom:phone: minimum 1",
    )


async def test_r_dis_07_physician_flag_is_a_code_slice(client: httpx.AsyncClient) -> None:
    """R-DIS-07: a physician as fast vårdkontakt carries practitioner-role#doctor, at most once;
    searchable with `role=doctor`."""
    physician = example("PractitionerRole-designated-care-contact-physician")
    assert (await post(client, physician)).status_code == 201
    found = await client.get(
        "/PractitionerRole",
        params={
            "role": "http://terminology.hl7.org/CodeSystem/practitioner-role|doctor",
            "_profile": f"{BASE}/StructureDefinition/sip-designated-care-contact",
        },
    )
    assert found.status_code == 200, found.text
    assert [e["resource"]["practitioner"] for e in found.json()["entry"]] == [
        physician["practitioner"]
    ]
    twice = copy.deepcopy(physician)
    twice["code"].append(copy.deepcopy(physician["code"][0]))
    hit(
        await rejected(client, twice),
        "PractitionerRole.code",
        "PractitionerRole.code:physician: maximum 1",
    )


# ------------------------------------------------------------------------------ CareTeam


async def test_r_sip_03_care_team_identifies_its_coordinator(client: httpx.AsyncClient) -> None:
    """R-SIP-03: one participant has the role samordningsansvarig (sip-careteam-1)."""

    def no_coordinator(r: dict[str, Any]) -> None:
        for participant in r["participant"]:
            participant["role"] = [
                role
                for role in participant["role"]
                if not any(c.get("code") == "samordningsansvarig" for c in role.get("coding", []))
            ]

    hit(
        await rejected(client, changed("CareTeam-sip-team", no_coordinator)),
        "CareTeam",
        "sip-careteam-1",
    )


async def test_care_team_subject_is_a_patient(client: httpx.AsyncClient) -> None:
    resource = changed("CareTeam-sip-team", lambda r: r.pop("subject"))
    hit(await rejected(client, resource), "CareTeam.subject", "CareTeam.subject: minimum 1")
    resource = changed(
        "CareTeam-sip-team", lambda r: r.__setitem__("subject", {"reference": "Group/g1"})
    )
    hit(await rejected(client, resource), "CareTeam.subject", "must reference Patient")


async def test_care_team_participant_has_role_and_member(client: httpx.AsyncClient) -> None:
    resource = changed("CareTeam-sip-team", lambda r: r["participant"][1].pop("role"))
    hit(
        await rejected(client, resource),
        "CareTeam.participant[1].role",
        "CareTeam.participant.role: minimum 1",
    )
    resource = changed("CareTeam-sip-team", lambda r: r["participant"][1].pop("member"))
    hit(
        await rejected(client, resource),
        "CareTeam.participant[1].member",
        "CareTeam.participant.member: minimum 1",
    )


async def test_care_team_needs_participants(client: httpx.AsyncClient) -> None:
    resource = changed("CareTeam-sip-team", lambda r: r.pop("participant"))
    issues = await rejected(client, resource)
    hit(issues, "CareTeam.participant", "CareTeam.participant: minimum 1")
    hit(issues, "CareTeam", "sip-careteam-1")

"""Personnummer and samordningsnummer as people write them, to the 12 digits stored."""

from __future__ import annotations

from datetime import date

import pytest

from fhir_server.interactions.swedish_ids import normalise_identifiers, twelve_digits

TODAY = date(2026, 11, 23)


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("191212121212", "191212121212"),  # 12 digits: as is
        ("19121212-1212", "191212121212"),  # 12 digits with separator
        ("121212+1212", "191212121212"),  # 10 digits, '+': 100 years or older
        ("121212-1212", "201212121212"),  # 10 digits, '-': the latest century not ahead
        ("1212121212", "201212121212"),  # 10 digits, no separator: as with '-'
        ("5001011234", "195001011234"),  # 2050 is ahead: 1950
        ("261123-1234", "202611231234"),  # born today
        ("261124-1234", "192611241234"),  # tomorrow is ahead: 1926
        ("701063-2391", "197010632391"),  # samordningsnummer: day 63 is the 3rd
        ("19701063-2391", "197010632391"),
    ],
)
def test_written_forms_become_twelve_digits(written: str, stored: str) -> None:
    assert twelve_digits(written, TODAY) == stored


@pytest.mark.parametrize(
    "written", ["12121212", "1212121212345", "19121212+1212", "121332-1234", "abc", ""]
)
def test_what_is_not_a_person_number_is_left_for_validation(written: str) -> None:
    assert twelve_digits(written, TODAY) == written


def test_only_swedish_person_identifiers_are_touched() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {
                "system": "http://electronichealth.se/identifier/personnummer",
                "value": "121212+1212",
            },
            {"system": "urn:oid:1.2.752.129.2.1.3.3", "value": "701063-2391"},
            {"system": "urn:example:mrn", "value": "121212-1212"},
        ],
    }
    normalise_identifiers(patient, TODAY)
    assert [i["value"] for i in patient["identifier"]] == [
        "191212121212", "197010632391", "121212-1212"
    ]  # fmt: skip

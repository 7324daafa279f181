"""Inputs the fuzz test (tests/test_fuzz.py) found to make a 5xx, each reduced to one request."""

from __future__ import annotations

import httpx
import pytest

JSON = {"Content-Type": "application/fhir+json"}


def _observation(value: bytes) -> bytes:
    return (
        b'{"resourceType":"Observation","status":"final","code":{"text":"temp"},'
        b'"valueQuantity":{"value":' + value + b',"system":"http://unitsofmeasure.org"}}'
    )


@pytest.mark.parametrize("param", ["Observation?value-quantity", "RiskAssessment?probability"])
async def test_search_number_past_float_range_is_400(client: httpx.AsyncClient, param: str) -> None:
    response = await client.get(f"/{param}=1e99999999")
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("param", ["Observation?value-quantity", "RiskAssessment?probability"])
async def test_search_number_with_exponent_past_decimal_limits_is_a_number(
    client: httpx.AsyncClient, param: str
) -> None:
    """`1e-99999999` is a valid number (it rounds to zero), not an InvalidOperation."""
    response = await client.get(f"/{param}=1e-99999999")
    assert response.status_code == 200, response.text


async def test_write_decimal_with_exponent_past_decimal_limits_is_indexed(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/Observation", content=_observation(b"1e-99999999"), headers=JSON)
    assert response.status_code == 201, response.text
    found = await client.get("/Observation", params={"value-quantity": "0"})
    assert found.status_code == 200, found.text

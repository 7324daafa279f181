"""PATCH cannot be made to cost without bound, and request-given numbers give a clean 4xx.

A patch's result may be no larger than a request body (`max_body_bytes`, here 256 KiB so the
tests stay quick) and no deeper than a body may nest: beyond, 422 `too-costly` and nothing is
stored. Array indexes and numbers in paths are ASCII digits of bounded length.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.config import MAPPINGS_DIR, PROFILES_DIR, Settings
from tests.conformance.test_patch import (
    assert_unchanged,
    create,
    fhirpath_patch,
    json_patch,
    operation,
    read,
)
from tests.resources import patient

LIMIT = 256 * 1024


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    dirs = [PROFILES_DIR, MAPPINGS_DIR]
    return Settings(sqlite_path=tmp_path / "fhir.sqlite3", profile_dirs=dirs, max_body_bytes=LIMIT)


def refusal(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["issue"][0]


async def unchanged(client: httpx.AsyncClient, url: str, before: dict[str, Any]) -> None:
    await assert_unchanged(client, url)
    assert await read(client, url) == before


# -- size and depth of the result ------------------------------------------------------------


async def test_copies_that_double_the_resource_are_refused_quickly(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client)
    before = await read(client, url)
    doubling = [{"op": "copy", "from": "/name", "path": "/name/-"}] * 30  # 2**30 names
    started = time.monotonic()
    response = await json_patch(client, url, doubling)
    assert time.monotonic() - started < 5
    issue = refusal(response)
    assert issue["code"] == "too-costly"
    assert "(copy /name/-) is refused" in issue["diagnostics"]
    assert f"exceed {LIMIT} bytes" in issue["diagnostics"]  # the server's own body limit
    await unchanged(client, url, before)


async def test_a_normal_copy_still_works(client: httpx.AsyncClient) -> None:
    url = await create(client)
    copies = [{"op": "copy", "from": "/name/0", "path": "/name/-"}] * 3
    response = await json_patch(client, url, copies)
    assert response.status_code == 200, response.text
    assert len(response.json()["name"]) == 4


async def test_moves_that_nest_the_resource_too_deeply_are_refused(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client)
    before = await read(client, url)
    deeper = [  # each round puts the extension one level further down, adding nothing
        {"op": "add", "path": "/x", "value": {}},
        {"op": "move", "from": "/extension", "path": "/x/extension"},
        {"op": "move", "from": "/x", "path": "/extension"},
    ]
    start = {"op": "add", "path": "/extension", "value": {}}
    response = await json_patch(client, url, [start, *deeper * 250])
    issue = refusal(response)
    assert issue["code"] == "too-costly"
    assert "nests deeper than" in issue["diagnostics"]
    await unchanged(client, url, before)


async def test_a_json_patch_value_nested_too_deeply_is_400(client: httpx.AsyncClient) -> None:
    url = await create(client)
    value: Any = "x"
    for _ in range(600):
        value = [value]
    response = await json_patch(client, url, [{"op": "add", "path": "/x", "value": value}])
    assert refusal(response, 400)["code"] == "too-costly"


async def test_a_fhirpath_patch_result_larger_than_a_body_is_refused(
    client: httpx.AsyncClient,
) -> None:
    text = "x" * (LIMIT // 2 + 1000)  # the resource fits, and so does the patch; both do not
    url = await create(client, patient(text={"status": "generated", "div": div(text)}))
    before = await read(client, url)
    name = {"valueHumanName": {"text": text}}
    response = await fhirpath_patch(
        client, url, operation("insert", "Patient.name", value=name, index=0)
    )
    issue = refusal(response)
    assert issue["code"] == "too-costly"
    assert f"exceed {LIMIT} bytes" in issue["diagnostics"]
    await unchanged(client, url, before)


def div(text: str) -> str:
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{text}</p></div>'


# -- numbers from the request ----------------------------------------------------------------


@pytest.mark.parametrize(
    "index", ["99999999999999999999", "1" * 5000, "²", "٣", "01", "-1", " 0", "1_0"]
)
async def test_json_pointer_indexes_are_ascii_and_bounded(
    client: httpx.AsyncClient, index: str
) -> None:
    url = await create(client)
    response = await json_patch(client, url, [{"op": "remove", "path": f"/name/{index}"}])
    assert refusal(response)["code"] == "processing"
    await assert_unchanged(client, url)


@pytest.mark.parametrize("index", ["99999999999999999999", "1" * 5000, "1.5"])
async def test_fhirpath_indexes_out_of_bounds_are_400(
    client: httpx.AsyncClient, index: str
) -> None:
    url = await create(client)
    response = await fhirpath_patch(client, url, operation("delete", f"Patient.name[{index}]"))
    issue = refusal(response, 400)
    assert issue["expression"] == ["Parameters.parameter[0].part[1]"]
    await assert_unchanged(client, url)


@pytest.mark.parametrize("digit", ["²", "٣"])
async def test_fhirpath_digits_are_ascii(client: httpx.AsyncClient, digit: str) -> None:
    url = await create(client)
    response = await fhirpath_patch(client, url, operation("delete", f"Patient.name[{digit}]"))
    assert refusal(response, 400)["code"] == "invalid"
    await assert_unchanged(client, url)


async def test_a_fhirpath_literal_of_many_digits_compares_without_error(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client)
    path = f"Patient.name.where(family = {'1' * 5000})"
    response = await fhirpath_patch(client, url, operation("delete", path))
    assert response.status_code == 200, response.text  # matches nothing: nothing to delete
    await assert_unchanged(client, url)


async def test_a_fhirpath_index_part_beyond_a_fhir_integer_is_400(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client)
    value = {"valueString": "Tolvan"}
    insert = operation("insert", "Patient.name", value=value, index=2**40)
    response = await fhirpath_patch(client, url, insert)
    assert refusal(response, 400)["expression"] == ["Parameters.parameter[0].part[3]"]
    await assert_unchanged(client, url)

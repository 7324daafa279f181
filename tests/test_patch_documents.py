"""The patch documents as pure functions: JSON Pointer and JSON Patch (RFC 6901/6902), the
FHIRPath subset patches are located with, and FHIRPath Patch operations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhir_server import fhirjson
from fhir_server.errors import FhirError
from fhir_server.patch import JSON_PATCH, apply_patch, loads_json
from fhir_server.patch.json_patch import (
    NotApplicable,
    PointerError,
    format_pointer,
    get,
    json_equal,
    parse_pointer,
)
from fhir_server.patch.locate import CannotApply, PathError, Unsupported, parse_path


def a_patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}],
        "name": [
            {"use": "official", "family": "Tolvansson", "given": ["Tolvan", "Lars"]},
            {"use": "nickname", "given": ["Tolle"], "period": {"start": "2020-01-01"}},
        ],
        "telecom": [{"system": "phone", "value": "1", "rank": 1}],
        "deceasedBoolean": False,
    }


def fails(status: int, call: Any, *args: Any) -> FhirError:
    with pytest.raises(FhirError) as caught:
        call(*args)
    assert caught.value.status == status, caught.value
    return caught.value


# -- JSON Pointer ----------------------------------------------------------------------------


def test_pointer_tokens_and_escapes() -> None:
    assert parse_pointer("") == ()
    assert parse_pointer("/name/0/given") == ("name", "0", "given")
    assert parse_pointer("/a~1b/m~0n/~01") == ("a/b", "m~n", "~1")
    assert parse_pointer("/") == ("",)
    assert format_pointer(("a/b", "m~n")) == "/a~1b/m~0n"


@pytest.mark.parametrize("text", ["name", "/a~2", "/a~"])
def test_malformed_pointers(text: str) -> None:
    with pytest.raises(PointerError):
        parse_pointer(text)


def test_pointer_array_indexes_are_exact() -> None:
    document = {"a": [10, 20]}
    assert get(document, ("a", "1")) == 20
    for token in ("01", "2", "-", "-1", "x"):
        with pytest.raises(NotApplicable):
            get(document, ("a", token))


# -- JSON Patch ------------------------------------------------------------------------------


def json_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    return apply_patch(resource, json.dumps(operations).encode(), JSON_PATCH)


def test_json_patch_add_inserts_and_appends() -> None:
    patched = json_patch(
        a_patient(),
        [
            {"op": "add", "path": "/name/0/given/0", "value": "Första"},
            {"op": "add", "path": "/name/0/given/-", "value": "Sista"},
            {"op": "add", "path": "/active", "value": True},
        ],
    )
    assert patched["name"][0]["given"] == ["Första", "Tolvan", "Lars", "Sista"]
    assert patched["active"] is True


def test_json_patch_replace_keeps_the_member_in_place() -> None:
    patched = json_patch(a_patient(), [{"op": "replace", "path": "/identifier", "value": []}])
    assert list(patched) == list(a_patient())


def test_json_patch_move_copy_remove() -> None:
    patched = json_patch(
        a_patient(),
        [
            {"op": "move", "from": "/name/1", "path": "/name/0"},
            {"op": "copy", "from": "/telecom/0", "path": "/telecom/-"},
            {"op": "remove", "path": "/identifier/0"},
        ],
    )
    assert patched["name"][0]["use"] == "nickname"
    assert len(patched["telecom"]) == 2
    assert patched["identifier"] == [{"system": "urn:b", "value": "2"}]


def test_json_patch_cannot_move_a_value_into_itself() -> None:
    failure = fails(
        422, json_patch, a_patient(), [{"op": "move", "from": "/name", "path": "/name/0/x"}]
    )
    assert "own children" in str(failure)


def test_json_patch_is_all_or_nothing_and_leaves_its_input_alone() -> None:
    resource = a_patient()
    fails(
        422,
        json_patch,
        resource,
        [{"op": "remove", "path": "/telecom"}, {"op": "test", "path": "/id", "value": "p2"}],
    )
    assert resource == a_patient()


def test_json_patch_test_equality() -> None:
    assert json_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert json_equal(fhirjson.Decimal("1.10"), 1.1)
    assert not json_equal(True, 1)
    assert not json_equal(0, False)
    assert not json_equal(None, False)
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert not json_equal([1, 2], [2, 1])
    assert not json_equal("1", 1)


@pytest.mark.parametrize(
    "document",
    [
        {"op": "add"},
        [{"op": "add", "path": "/a"}],
        [{"op": "copy", "path": "/a"}],
        [{"op": "move", "path": "/a", "from": 3}],
        [{"path": "/a"}],
        ["add"],
    ],
)
def test_malformed_json_patch_is_400(document: Any) -> None:
    fails(400, json_patch, a_patient(), document)


def test_json_bodies_keep_decimal_text_and_refuse_duplicate_keys() -> None:
    value = loads_json(b'[{"value": 72.50}]')
    assert value[0]["value"].text == "72.50"
    fails(400, loads_json, b'[{"a": 1, "a": 2}]')
    fails(400, loads_json, b"[NaN]")
    fails(400, loads_json, b"\xff")


def test_unknown_media_type_is_415() -> None:
    fails(415, apply_patch, a_patient(), b"{}", "application/merge-patch+json")


# -- the FHIRPath subset ---------------------------------------------------------------------


def values(path: str, resource: dict[str, Any] | None = None) -> list[Any]:
    return [node.value for node in parse_path(path).locate(resource or a_patient())]


def test_member_access_flattens_lists() -> None:
    assert values("Patient.name.given") == ["Tolvan", "Lars", "Tolle"]
    assert values("name.given") == ["Tolvan", "Lars", "Tolle"]  # the type may be left out
    assert values("Patient.name.period.start") == ["2020-01-01"]
    assert values("Patient.birthDate") == []


def test_choice_elements_answer_to_their_fhirpath_name() -> None:
    [node] = parse_path("Patient.deceased").locate(a_patient())
    assert (node.key, node.name, node.value) == ("deceasedBoolean", "deceased", False)


def test_indexer_first_last() -> None:
    assert values("Patient.name.given[1]") == ["Lars"]
    assert values("Patient.name[1].given") == ["Tolle"]
    assert values("Patient.name.given.first()") == ["Tolvan"]
    assert values("Patient.name.given.last()") == ["Tolle"]
    assert values("Patient.name[5]") == []


def test_where_criteria() -> None:
    assert values("Patient.name.where(use = 'nickname').given") == ["Tolle"]
    assert values("Patient.name.where(use != 'nickname').family") == ["Tolvansson"]
    assert values("Patient.name.where(period.start = '2020-01-01').use") == ["nickname"]
    assert values("Patient.identifier.where(system='urn:b' and value='2').value") == ["2"]
    assert values("Patient.identifier.where(system='urn:b' and value='1')") == []
    assert values("Patient.telecom.where(rank = 1).value") == ["1"]
    assert values("Patient.name.given.where($this = 'Lars')") == ["Lars"]
    assert values(r"Patient.name.where(family = 'O\'Brien')") == []


def test_extension_by_url() -> None:
    resource = {
        "resourceType": "Patient",
        "extension": [
            {"url": "urn:a", "valueString": "A"},
            {"url": "urn:b", "valueCode": "B"},
        ],
    }
    assert values("Patient.extension('urn:b').value", resource) == ["B"]
    assert values("Patient.extension.where(url = 'urn:a').value", resource) == ["A"]
    assert values("Patient.extension('urn:c')", resource) == []


def test_where_compares_a_single_value() -> None:
    """FHIRPath `=`: a collection of several values does not equal one literal."""
    assert values("Patient.name.where(given = 'Tolvan')") == []
    assert values("Patient.name.where(given = 'Tolle').use") == ["nickname"]


def test_a_location_knows_its_place() -> None:
    [node] = parse_path("Patient.name[0].given[1]").locate(a_patient())
    assert (node.key, node.index, node.parent is not None) == ("given", 1, True)
    assert node.parent is not None and node.parent.base == "HumanName"


@pytest.mark.parametrize(
    "path",
    [
        "Patient.name.exists()",
        "Patient.name.where(given.exists())",
        "Patient.name | Patient.telecom",
        "Patient.name.where(use = given)",
        "Patient.managingOrganization.resolve()",
        "Patient.name.given.where(length() > 3)",
    ],
)
def test_unsupported_fhirpath(path: str) -> None:
    with pytest.raises(Unsupported):
        parse_path(path)


@pytest.mark.parametrize("path", ["Patient..name", "Patient.name[", "Patient.name[x]", "'x'"])
def test_malformed_paths(path: str) -> None:
    with pytest.raises(PathError):
        parse_path(path)


def test_unknown_elements_and_foreign_types_are_errors() -> None:
    with pytest.raises(PathError, match="no element 'nmae'"):
        values("Patient.nmae")
    with pytest.raises(PathError, match="the resource is a Patient"):
        values("Observation.status")


def test_collection_of_an_insert() -> None:
    parent, definition = parse_path("Patient.name[0].given").collection(a_patient())
    assert parent.value["family"] == "Tolvansson"
    assert (definition.name, definition.repeats) == ("given", True)
    with pytest.raises(CannotApply):
        parse_path("Patient.name.given").collection(a_patient())  # two names hold a `given`
    with pytest.raises(PathError, match="not a list"):
        parse_path("Patient.gender").collection(a_patient())


# -- FHIRPath Patch --------------------------------------------------------------------------


def part(name: str, **value: Any) -> dict[str, Any]:
    return {"name": name, **value}


def fhirpath_patch(resource: dict[str, Any], *operations: list[dict[str, Any]]) -> dict[str, Any]:
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "operation", "part": parts} for parts in operations],
    }
    return apply_patch(resource, body, "application/fhir+json")


def test_primitive_extensions_follow_their_values() -> None:
    resource = {
        "resourceType": "Patient",
        "name": [{"given": ["A", "B", "C"], "_given": [None, {"id": "b"}, None]}],
    }
    moved = fhirpath_patch(
        resource,
        [
            part("type", valueCode="move"),
            part("path", valueString="Patient.name.given"),
            part("source", valueInteger=1),
            part("destination", valueInteger=0),
        ],
    )
    assert moved["name"][0]["_given"] == [{"id": "b"}, None, None]
    deleted = fhirpath_patch(
        resource,
        [part("type", valueCode="delete"), part("path", valueString="Patient.name.given[1]")],
    )
    assert deleted["name"][0] == {"given": ["A", "C"]}


def test_delete_leaves_no_empty_objects() -> None:
    patched = fhirpath_patch(
        a_patient(),
        [
            part("type", valueCode="delete"),
            part("path", valueString="Patient.name[1].period.start"),
        ],
    )
    assert "period" not in patched["name"][1]


def test_add_of_a_choice_value_names_its_type() -> None:
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    patched = fhirpath_patch(
        resource,
        [
            part("type", valueCode="add"),
            part("path", valueString="Observation"),
            part("name", valueString="value"),
            part("value", valueQuantity={"value": 1, "unit": "kg"}),
        ],
    )
    assert patched["valueQuantity"] == {"value": 1, "unit": "kg"}
    failure = fails(
        422,
        fhirpath_patch,
        resource,
        [
            part("type", valueCode="add"),
            part("path", valueString="Observation"),
            part("name", valueString="value"),
            part("value", valueAddress={"city": "Umeå"}),
        ],
    )
    assert failure.issues[0].expression == ("Parameters.parameter[0].part[3]",)


@pytest.mark.parametrize(
    ("parts", "expression"),
    [
        ([part("type", valueCode="delete")], "Parameters.parameter[0]"),
        ([part("path", valueString="Patient")], "Parameters.parameter[0]"),
        ([part("type", valueCode="delete"), part("path", valueInteger=1)], ".part[1]"),
        ([part("type", valueCode="delete"), part("path", valueString="Patient"), part("x")], ""),
        (
            [part("type", valueCode="delete"), part("type", valueCode="add")],
            "Parameters.parameter[0].part[1]",
        ),
        (
            [
                part("type", valueCode="insert"),
                part("path", valueString="Patient.name"),
                part("index", valueInteger=-1),
                part("value", valueHumanName={}),
            ],
            "Parameters.parameter[0].part[2]",
        ),
    ],
)
def test_malformed_fhirpath_patch_is_400(parts: list[dict[str, Any]], expression: str) -> None:
    failure = fails(400, fhirpath_patch, a_patient(), parts)
    assert failure.issues[0].expression[0].startswith("Parameters.parameter[0]")
    assert failure.issues[0].expression[0].endswith(expression)

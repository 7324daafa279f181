"""PATCH and conditional PATCH over HTTP on every engine (R4 http.html#patch, fhirpatch.html).

JSON Patch (RFC 6902) and FHIRPath Patch; a malformed document is 400, a patch this resource
cannot take or whose result is invalid is 422, and neither stores anything.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.resources import PERSONNUMMER, patient

FHIR_JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
PNR = f"{PERSONNUMMER}|191212121212"


def operation(type: str, path: str, **parts: Any) -> dict[str, Any]:
    """One FHIRPath Patch operation; `value` is a value[x] dict such as {"valueCode": "x"}."""
    part: list[dict[str, Any]] = [
        {"name": "type", "valueCode": type},
        {"name": "path", "valueString": path},
    ]
    for name, value in parts.items():
        if name == "name":
            part.append({"name": "name", "valueString": value})
        elif name == "value":
            part.append({"name": "value", **value})
        else:
            part.append({"name": name, "valueInteger": value})
    return {"name": "operation", "part": part}


async def fhirpath_patch(
    client: httpx.AsyncClient, url: str, *operations: dict[str, Any], **headers: str
) -> httpx.Response:
    body = {"resourceType": "Parameters", "parameter": list(operations)}
    return await client.patch(url, content=json.dumps(body), headers={**FHIR_JSON, **headers})


async def json_patch(
    client: httpx.AsyncClient, url: str, operations: Any, **headers: str
) -> httpx.Response:
    return await client.patch(
        url, content=json.dumps(operations), headers={**JSON_PATCH, **headers}
    )


async def create(client: httpx.AsyncClient, resource: dict[str, Any] | None = None) -> str:
    """Create a resource (a Patient by default) and return its URL."""
    resource = resource or patient()
    response = await client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return f"/{resource['resourceType']}/{response.json()['id']}"


async def read(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return response.json()


async def assert_unchanged(client: httpx.AsyncClient, url: str) -> None:
    """Still version 1, and no version was added to the history."""
    assert (await read(client, url))["meta"]["versionId"] == "1"
    assert (await client.get(f"{url}/_history")).json()["total"] == 1


# -- FHIRPath Patch --------------------------------------------------------------------------


async def test_fhirpath_add_single_and_repeating_elements(client: httpx.AsyncClient) -> None:
    url = await create(client)
    phone = {"valueContactPoint": {"system": "phone", "value": "+46701234567"}}
    response = await fhirpath_patch(
        client,
        url,
        operation("add", "Patient", name="active", value={"valueBoolean": True}),
        operation("add", "Patient", name="telecom", value=phone),
        operation("add", "Patient", name="deceased", value={"valueBoolean": False}),
    )
    assert response.status_code == 200, response.text
    stored = await read(client, url)
    assert stored["active"] is True
    assert stored["telecom"] == [phone["valueContactPoint"]]
    assert stored["deceasedBoolean"] is False
    assert stored["meta"]["versionId"] == "2"


async def test_fhirpath_add_anonymous_element_from_parts(client: httpx.AsyncClient) -> None:
    """Patient.contact has no datatype: its value is given as parts (fhirpatch.html)."""
    url = await create(client)
    contact = {
        "part": [
            {"name": "name", "valueHumanName": {"family": "Tolvansdotter"}},
            {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "08-123"}},
        ]
    }
    response = await fhirpath_patch(
        client, url, operation("add", "Patient", name="contact", value=contact)
    )
    assert response.status_code == 200, response.text
    assert (await read(client, url))["contact"] == [
        {"name": {"family": "Tolvansdotter"}, "telecom": [{"system": "phone", "value": "08-123"}]}
    ]


async def test_fhirpath_add_existing_single_element_is_422(client: httpx.AsyncClient) -> None:
    url = await create(client)
    response = await fhirpath_patch(
        client, url, operation("add", "Patient", name="gender", value={"valueCode": "female"})
    )
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Parameters.parameter[0]"]
    await assert_unchanged(client, url)


async def test_fhirpath_insert_at_index(client: httpx.AsyncClient) -> None:
    url = await create(client)
    hsa = {"valueIdentifier": {"system": "urn:oid:1.2.752.29.4.19", "value": "SE-1"}}
    response = await fhirpath_patch(
        client,
        url,
        operation("insert", "Patient.identifier", index=0, value=hsa),
        operation("insert", "Patient.name.given", index=1, value={"valueString": "Tolvar"}),
    )
    assert response.status_code == 200, response.text
    stored = await read(client, url)
    assert [i["value"] for i in stored["identifier"]] == ["SE-1", "191212121212"]
    assert stored["name"][0]["given"] == ["Tolvan", "Tolvar"]


async def test_fhirpath_insert_beyond_the_list_is_422(client: httpx.AsyncClient) -> None:
    url = await create(client)
    response = await fhirpath_patch(
        client, url, operation("insert", "Patient.name", index=5, value={"valueHumanName": {}})
    )
    assert response.status_code == 422
    await assert_unchanged(client, url)


async def test_fhirpath_delete(client: httpx.AsyncClient) -> None:
    url = await create(client, patient(telecom=[{"system": "phone", "value": "1"}]))
    response = await fhirpath_patch(
        client,
        url,
        operation("delete", "Patient.birthDate"),
        operation("delete", "Patient.telecom.where(system = 'phone')"),
    )
    assert response.status_code == 200, response.text
    stored = await read(client, url)
    assert "birthDate" not in stored
    assert "telecom" not in stored  # an emptied list goes with its last item


async def test_fhirpath_delete_of_nothing_makes_no_new_version(client: httpx.AsyncClient) -> None:
    """Deleting what is not there is no error (fhirpatch.html); nothing changed, so no
    version is added (HAPI's no-op rule)."""
    url = await create(client)
    response = await fhirpath_patch(client, url, operation("delete", "Patient.telecom"))
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"1"'
    await assert_unchanged(client, url)


async def test_fhirpath_delete_of_several_is_422(client: httpx.AsyncClient) -> None:
    url = await create(client, patient(telecom=[{"system": "phone", "value": "1"}] * 2))
    response = await fhirpath_patch(client, url, operation("delete", "Patient.telecom"))
    assert response.status_code == 422
    assert "matches 2 elements" in response.json()["issue"][0]["diagnostics"]
    await assert_unchanged(client, url)


async def test_fhirpath_replace(client: httpx.AsyncClient) -> None:
    telecom = [{"system": "email", "value": "t@x.se"}, {"system": "phone", "value": "1"}]
    url = await create(client, patient(telecom=telecom))
    response = await fhirpath_patch(
        client,
        url,
        operation("replace", "Patient.gender", value={"valueCode": "female"}),
        operation(
            "replace", "Patient.telecom.where(system='phone').value", value={"valueString": "2"}
        ),
        operation("replace", "Patient.name[0].given.first()", value={"valueString": "Tolva"}),
    )
    assert response.status_code == 200, response.text
    stored = await read(client, url)
    assert stored["gender"] == "female"
    assert stored["telecom"] == [telecom[0], {"system": "phone", "value": "2"}]
    assert stored["name"][0]["given"] == ["Tolva"]


async def test_fhirpath_replace_changes_a_choice_type(client: httpx.AsyncClient) -> None:
    url = await create(client, patient(deceasedBoolean=False))
    response = await fhirpath_patch(
        client,
        url,
        operation("replace", "Patient.deceased", value={"valueDateTime": "2026-01-02"}),
    )
    assert response.status_code == 200, response.text
    stored = await read(client, url)
    assert stored["deceasedDateTime"] == "2026-01-02"
    assert "deceasedBoolean" not in stored


async def test_fhirpath_replace_of_nothing_is_422(client: httpx.AsyncClient) -> None:
    url = await create(client)
    response = await fhirpath_patch(
        client, url, operation("replace", "Patient.active", value={"valueBoolean": True})
    )
    assert response.status_code == 422
    assert "matches no element" in response.json()["issue"][0]["diagnostics"]


async def test_fhirpath_move(client: httpx.AsyncClient) -> None:
    url = await create(client)
    await fhirpath_patch(
        client, url, operation("add", "Patient.name", name="given", value={"valueString": "B"})
    )
    response = await fhirpath_patch(
        client, url, operation("move", "Patient.name.given", source=1, destination=0)
    )
    assert response.status_code == 200, response.text
    assert (await read(client, url))["name"][0]["given"] == ["B", "Tolvan"]


async def test_fhirpath_unsupported_path_is_400_not_supported(client: httpx.AsyncClient) -> None:
    url = await create(client)
    response = await fhirpath_patch(
        client, url, operation("delete", "Patient.managingOrganization.resolve().name")
    )
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["code"] == "not-supported"
    assert issue["expression"] == ["Parameters.parameter[0].part[1]"]
    assert "resolve()" in issue["diagnostics"]


async def test_fhirpath_patch_document_errors_are_400(client: httpx.AsyncClient) -> None:
    url = await create(client)
    cases = [
        ({"resourceType": "Patient"}, None),
        (
            {"resourceType": "Parameters", "parameter": [operation("add", "Patient")]},
            "Parameters.parameter[0]",
        ),
        (
            {"resourceType": "Parameters", "parameter": [operation("upsert", "Patient.gender")]},
            "Parameters.parameter[0]",
        ),
        (
            {"resourceType": "Parameters", "parameter": [operation("delete", "Patient..name")]},
            "Parameters.parameter[0].part[1]",
        ),
        (
            {"resourceType": "Parameters", "parameter": [operation("delete", "Patient.nmae")]},
            "Parameters.parameter[0].part[1]",
        ),
    ]
    for body, expression in cases:
        response = await client.patch(url, content=json.dumps(body), headers=FHIR_JSON)
        assert response.status_code == 400, body
        issue = response.json()["issue"][0]
        assert issue["diagnostics"]
        assert issue.get("expression") == ([expression] if expression else None)
    await assert_unchanged(client, url)


# -- JSON Patch ------------------------------------------------------------------------------


async def test_json_patch_add_remove_replace(client: httpx.AsyncClient) -> None:
    url = await create(client)
    response = await json_patch(
        client,
        url,
        [
            {"op": "add", "path": "/active", "value": True},
            {"op": "add", "path": "/name/0/given/-", "value": "Tolvar"},
            {"op": "remove", "path": "/birthDate"},
            {"op": "replace", "path": "/gender", "value": "female"},
        ],
    )
    assert response.status_code == 200, response.text
    stored = await read(client, url)
    assert stored["active"] is True
    assert stored["name"][0]["given"] == ["Tolvan", "Tolvar"]
    assert "birthDate" not in stored
    assert stored["gender"] == "female"


async def test_json_patch_move_and_copy(client: httpx.AsyncClient) -> None:
    url = await create(client, patient(name=[{"family": "A"}, {"family": "B"}]))
    response = await json_patch(
        client,
        url,
        [
            {"op": "move", "from": "/name/1", "path": "/name/0"},
            {"op": "copy", "from": "/name/0/family", "path": "/name/1/text"},
        ],
    )
    assert response.status_code == 200, response.text
    assert (await read(client, url))["name"] == [{"family": "B"}, {"family": "A", "text": "B"}]


async def test_json_patch_test_that_holds_lets_the_patch_apply(client: httpx.AsyncClient) -> None:
    url = await create(client)
    response = await json_patch(
        client,
        url,
        [
            {"op": "test", "path": "/gender", "value": "male"},
            {"op": "replace", "path": "/gender", "value": "other"},
        ],
    )
    assert response.status_code == 200, response.text
    assert (await read(client, url))["gender"] == "other"


async def test_json_patch_failed_test_is_422_and_nothing_changes(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client)
    response = await json_patch(
        client,
        url,
        [
            {"op": "replace", "path": "/gender", "value": "other"},
            {"op": "test", "path": "/name/0/family", "value": "Someone else"},
        ],
    )
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert issue["code"] == "processing"
    assert "operation 1 (test /name/0/family)" in issue["diagnostics"]
    await assert_unchanged(client, url)


async def test_json_patch_of_a_missing_target_is_422(client: httpx.AsyncClient) -> None:
    url = await create(client)
    response = await json_patch(client, url, [{"op": "remove", "path": "/telecom/0"}])
    assert response.status_code == 422
    assert "/telecom does not exist" in response.json()["issue"][0]["diagnostics"]


async def test_json_patch_document_errors_are_400(client: httpx.AsyncClient) -> None:
    url = await create(client)
    for body in (
        b'{"op": "remove", "path": "/gender"}',
        b'[{"op": "frobnicate", "path": "/gender"}]',
        b'[{"op": "replace", "path": "gender", "value": "x"}]',
        b'[{"op": "add", "path": "/gender"}]',
        b'[{"op": "move", "path": "/gender"}]',
        b"[{",
    ):
        response = await client.patch(url, content=body, headers=JSON_PATCH)
        assert response.status_code == 400, body
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["diagnostics"]
    await assert_unchanged(client, url)


async def test_json_patch_keeps_decimal_text(client: httpx.AsyncClient) -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "vikt"},
        "valueQuantity": {"value": 72.5, "unit": "kg"},
    }
    url = await create(client, observation)
    body = b'[{"op": "replace", "path": "/valueQuantity/value", "value": 72.50}]'
    response = await client.patch(url, content=body, headers=JSON_PATCH)
    assert response.status_code == 200, response.text
    assert b'"value":72.50' in (await client.get(url)).content


# -- the result is validated and keeps its identity ------------------------------------------


async def test_patch_to_an_invalid_resource_is_422_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    url = await create(client)
    response = await fhirpath_patch(
        client, url, operation("replace", "Patient.gender", value={"valueCode": "x"})
    )
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Patient.gender"]
    await assert_unchanged(client, url)


async def test_patch_to_an_unknown_element_is_422(client: httpx.AsyncClient) -> None:
    """Structure errors in the result are 422 too: the document itself was well-formed."""
    url = await create(client)
    response = await json_patch(client, url, [{"op": "add", "path": "/colour", "value": "x"}])
    assert response.status_code == 422
    await assert_unchanged(client, url)


async def test_patch_breaking_a_profile_is_422(client: httpx.AsyncClient) -> None:
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "category": [
            {
                "coding": [
                    {"system": "https://fhir.inera.se/CodeSystem/typeofcareplan-cs", "code": "SIP"}
                ]
            }
        ],
        "extension": [
            {
                "url": "http://sip-fhir.se/fhir/StructureDefinition/sip-follow-up",
                "extension": [
                    {"url": "date", "valueDate": "2027-01-19"},
                    {
                        "url": "responsible",
                        "valueReference": {"reference": "Organization/home-care"},
                    },
                ],
            }
        ],
        "subject": {"reference": "Patient/p1"},
        "author": {"reference": "PractitionerRole/coordinator"},
        "goal": [{"reference": "Goal/main"}],
        "activity": [
            {
                "detail": {
                    "status": "scheduled",
                    "description": "Hemtjänst",
                    "performer": [{"reference": "Organization/home-care"}],
                }
            }
        ],
    }
    url = await create(client, plan)
    response = await fhirpath_patch(client, url, operation("delete", "CarePlan.author"))
    assert response.status_code == 422
    [issue] = response.json()["issue"]
    assert issue["expression"] == ["CarePlan.author"]
    assert "SIPCarePlan CarePlan.author: minimum 1" in issue["diagnostics"]
    await assert_unchanged(client, url)


async def test_patch_must_not_change_id_or_type(client: httpx.AsyncClient) -> None:
    url = await create(client)
    response = await json_patch(client, url, [{"op": "replace", "path": "/id", "value": "other"}])
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Patient.id"]
    response = await json_patch(client, url, [{"op": "remove", "path": "/id"}])
    assert response.status_code == 422
    response = await json_patch(
        client, url, [{"op": "replace", "path": "/resourceType", "value": "Group"}]
    )
    assert response.status_code == 422
    assert (await client.get("/Patient/other")).status_code == 404
    await assert_unchanged(client, url)


# -- HTTP: versions, headers, preconditions --------------------------------------------------


async def test_patch_answers_like_an_update(client: httpx.AsyncClient) -> None:
    url = await create(client)
    before = await read(client, url)
    response = await json_patch(
        client, url, [{"op": "replace", "path": "/gender", "value": "female"}]
    )
    assert response.status_code == 200
    body = response.json()
    assert body["meta"]["versionId"] == "2"
    assert body["meta"]["lastUpdated"] > before["meta"]["lastUpdated"]
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"] == f"http://testserver/fhir{url}/_history/2"
    assert response.headers["last-modified"].endswith("GMT")
    assert response.content == (await client.get(url)).content
    history = (await client.get(f"{url}/_history")).json()
    assert history["entry"][0]["request"]["method"] == "PATCH"
    assert (await client.get(f"{url}/_history/1")).json()["gender"] == "male"


async def test_patch_honours_prefer_return_minimal(client: httpx.AsyncClient) -> None:
    url = await create(client)
    response = await json_patch(
        client,
        url,
        [{"op": "replace", "path": "/gender", "value": "female"}],
        Prefer="return=minimal",
    )
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["etag"] == 'W/"2"'


async def test_patch_changes_what_search_finds(client: httpx.AsyncClient) -> None:
    url = await create(client)
    await json_patch(client, url, [{"op": "replace", "path": "/gender", "value": "female"}])
    assert (await client.get("/Patient", params={"gender": "female"})).json()["total"] == 1
    assert (await client.get("/Patient", params={"gender": "male"})).json()["total"] == 0


async def test_patch_if_match(client: httpx.AsyncClient) -> None:
    url = await create(client)
    change = [{"op": "replace", "path": "/gender", "value": "female"}]
    stale = await json_patch(client, url, change, **{"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    await assert_unchanged(client, url)
    fresh = await json_patch(client, url, change, **{"If-Match": 'W/"1"'})
    assert fresh.status_code == 200
    assert fresh.json()["meta"]["versionId"] == "2"


async def test_patch_of_unknown_resource_is_404(client: httpx.AsyncClient) -> None:
    """PATCH never creates."""
    change = [{"op": "add", "path": "/gender", "value": "female"}]
    response = await json_patch(client, "/Patient/nobody", change)
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"
    assert (await client.get("/Patient/nobody")).status_code == 404


async def test_patch_of_deleted_resource_is_410(client: httpx.AsyncClient) -> None:
    url = await create(client)
    await client.delete(url)
    response = await json_patch(client, url, [{"op": "remove", "path": "/gender"}])
    assert response.status_code == 410
    assert response.headers["etag"] == 'W/"2"'


async def test_patch_media_types(client: httpx.AsyncClient) -> None:
    url = await create(client)
    body = json.dumps([{"op": "replace", "path": "/gender", "value": "female"}])
    for content_type in ("application/merge-patch+json", "text/plain", "application/xml"):
        response = await client.patch(url, content=body, headers={"Content-Type": content_type})
        assert response.status_code == 415, content_type
        assert response.json()["issue"][0]["code"] == "not-supported"
    assert (await client.patch(url, content=body)).status_code == 415  # no Content-Type
    parameters = {
        "resourceType": "Parameters",
        "parameter": [operation("delete", "Patient.gender")],
    }
    plain_json = await client.patch(
        url, content=json.dumps(parameters), headers={"Content-Type": "application/json"}
    )
    assert plain_json.status_code == 200
    charset = await client.patch(
        url, content=body, headers={"Content-Type": "application/json-patch+json; charset=utf-8"}
    )
    assert charset.status_code == 422  # applied as JSON Patch: /gender is gone by now


async def test_concurrent_patches_both_apply(client: httpx.AsyncClient) -> None:
    """Each patch is applied to the version it is stored after: no update is lost."""
    url = await create(client)
    phones = [{"system": "phone", "value": str(n)} for n in range(4)]
    await json_patch(client, url, [{"op": "add", "path": "/telecom", "value": [phones[0]]}])
    responses = await asyncio.gather(
        *(
            json_patch(client, url, [{"op": "add", "path": "/telecom/-", "value": phone}])
            for phone in phones[1:]
        )
    )
    assert [r.status_code for r in responses] == [200, 200, 200]
    stored = await read(client, url)
    assert sorted(t["value"] for t in stored["telecom"]) == ["0", "1", "2", "3"]
    assert stored["meta"]["versionId"] == "5"


# -- conditional PATCH -----------------------------------------------------------------------


async def test_conditional_patch_one_match(client: httpx.AsyncClient) -> None:
    url = await create(client)
    response = await client.patch(
        "/Patient",
        params={"identifier": PNR},
        content=json.dumps([{"op": "replace", "path": "/gender", "value": "female"}]),
        headers=JSON_PATCH,
    )
    assert response.status_code == 200, response.text
    assert response.headers["location"].endswith(f"{url}/_history/2")
    assert (await read(client, url))["gender"] == "female"


async def test_conditional_patch_no_match_is_404(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/Patient",
        params={"identifier": PNR},
        content=json.dumps([{"op": "remove", "path": "/gender"}]),
        headers=JSON_PATCH,
    )
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


async def test_conditional_patch_several_matches_is_412(client: httpx.AsyncClient) -> None:
    first = await create(client)
    await create(client)
    response = await client.patch(
        "/Patient",
        params={"identifier": PNR},
        content=json.dumps([{"op": "remove", "path": "/gender"}]),
        headers=JSON_PATCH,
    )
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "multiple-matches"
    await assert_unchanged(client, first)


async def test_conditional_patch_needs_criteria(client: httpx.AsyncClient) -> None:
    await create(client)
    body = json.dumps([{"op": "remove", "path": "/gender"}])
    response = await client.patch("/Patient", content=body, headers=JSON_PATCH)
    assert response.status_code == 400


async def test_capability_statement_claims_patch(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    patient_caps = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert "patch" in {i["code"] for i in patient_caps["interaction"]}

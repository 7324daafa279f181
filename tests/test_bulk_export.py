"""Bulk Data Access IG v2 `$export`, through the HTTP API on both engines.

Kick-off at system, Patient and Group level (GET and POST), polling (202 with X-Progress, then
the manifest), every file downloaded and held to exactly the resources expected, the
parameters (`_since`, `_type`, `_typeFilter`, `patient`), the errors (each a 400/404/406
OperationOutcome naming the parameter, nothing created), cancellation, expiry by the
injected clock, and a round trip into an empty server. The restart test runs a real
uvicorn process, SIGKILLs it mid-job and starts it again on the same database and export
directory: the job resumes under its id and completes with each resource once.

Jobs are slowed by the settings (small pages, a pause between pages) where a test must see
them running; waiting is polling with a bound, never a sleep asserted on.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from fhir_server.config import Settings
from fhir_server.errors import error
from fhir_server.sip.clock import FixedClock
from fhir_server.storage.port import Storage
from tests.conftest import LiveServer, app_client
from tests.engines import make_storage
from tests.sip_case import ACTS, load_case

ASYNC = {"Prefer": "respond-async"}
CONFORMANCE = {
    "StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "ConceptMap",
    "Measure", "OperationDefinition", "Basic",
}  # fmt: skip
RETENTION = 600.0


@pytest.fixture
def export_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Small pages with a pause between them, so a job is seen running; small files."""
    return settings.model_copy(
        update={
            "export_dir": tmp_path / "exports",
            "export_batch_size": 3,
            "export_page_delay": 0.01,
            "export_file_size": 4,
            "export_poll_interval": 0.05,
            "export_retention": RETENTION,
        }
    )


@pytest.fixture
async def http(
    engine: str, tmp_path: Path, export_settings: Settings, clock: FixedClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(export_settings, make_storage(engine, tmp_path), clock) as client:
        yield client


# -- helpers -----------------------------------------------------------------------------------


async def put(http: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await http.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text
    return response.json()


def patient(id: str, family: str = "Svensson", **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": id, "name": [{"family": family}], **more}


def observation(id: str, subject: str | None, code: str = "weight") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": "http://example.org/codes", "code": code}]},
    }
    if subject:
        resource["subject"] = {"reference": subject}
    return resource


async def small_case(http: httpx.AsyncClient) -> None:
    """Two patients with observations, one observation of nobody, a practitioner, a group."""
    for id in ("p1", "p2", "p3"):
        await put(http, patient(id))
    await put(http, observation("o1", "Patient/p1"))
    await put(http, observation("o2", "Patient/p1", "height"))
    await put(http, observation("o3", "Patient/p2"))
    await put(http, observation("o4", None))
    await put(http, {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Läk"}]})
    group = {
        "resourceType": "Group",
        "id": "g1",
        "type": "person",
        "actual": True,
        "member": [
            {"entity": {"reference": "Patient/p1"}},
            {"entity": {"reference": "Patient/p3"}, "inactive": True},
        ],
    }
    await put(http, group)


async def kick_off(
    http: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> str:
    method = "POST" if "json" in kwargs else "GET"
    response = await http.request(method, url, headers={**ASYNC, **(headers or {})}, **kwargs)
    assert response.status_code == 202, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    location = response.headers["Content-Location"]
    assert location.startswith("http://testserver/fhir/$export-poll-status?_jobId=")
    return location


async def wait_manifest(http: httpx.AsyncClient, status: str) -> dict[str, Any]:
    """Poll (bounded) until the job is done; the 200 manifest."""
    for _ in range(2000):
        response = await http.get(status)
        if response.status_code != 202:
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("application/json")
            assert "Expires" in response.headers
            return response.json()
        assert response.headers["X-Progress"]
        await asyncio.sleep(0.01)
    raise AssertionError("the export did not finish")


async def download(http: httpx.AsyncClient, manifest: dict[str, Any]) -> dict[str, list[dict]]:
    """Every output file, checked against its manifest entry; resources by type."""
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest["output"]:
        response = await http.get(entry["url"])
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = response.content.splitlines()
        assert len(lines) == entry["count"] > 0
        resources = [orjson.loads(line) for line in lines]
        assert {r["resourceType"] for r in resources} == {entry["type"]}
        found.setdefault(entry["type"], []).extend(resources)
    return found


def ids(found: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {type: sorted(r["id"] for r in resources) for type, resources in found.items()}


async def export(http: httpx.AsyncClient, url: str, **kwargs: Any) -> dict[str, list[str]]:
    manifest = await wait_manifest(http, await kick_off(http, url, **kwargs))
    assert manifest["error"] == []
    return ids(await download(http, manifest))


async def everything(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """Every current resource, by `Type/id`, from system search pages."""
    found: dict[str, dict[str, Any]] = {}
    url: str | None = "?_count=1000"
    while url:
        bundle = (await http.get(url)).json()
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            found[f"{resource['resourceType']}/{resource['id']}"] = resource
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return found


def job_dirs(settings: Settings) -> list[Path]:
    root = settings.export_dir
    return sorted(root.iterdir()) if root.exists() else []


async def gone(path: Path) -> bool:
    for _ in range(500):
        if not path.exists():
            return True
        await asyncio.sleep(0.01)
    return False


# -- kick-off, status, files -------------------------------------------------------------------


async def test_system_export_holds_every_resource_once(http: httpx.AsyncClient) -> None:
    await small_case(http)
    for n in range(10):
        await put(http, patient(f"many-{n:02d}"))
    status = await kick_off(http, "/$export")
    first = await http.get(status)
    assert first.status_code == 202  # small pages with a pause: still running
    assert first.headers["X-Progress"] and first.headers["Retry-After"]
    manifest = await wait_manifest(http, status)
    assert manifest["request"] == "http://testserver/fhir/$export"
    assert manifest["requiresAccessToken"] is False
    assert manifest["transactionTime"].endswith("Z")
    assert manifest["error"] == []
    found = await download(http, manifest)
    stored = await everything(http)
    exported = {f"{t}/{r['id']}": r for t, resources in found.items() for r in resources}
    assert sum(len(r) for r in found.values()) == len(exported)  # each resource once
    assert exported == stored  # the stored JSON, meta and all
    patients = [e for e in manifest["output"] if e["type"] == "Patient"]
    assert [e["count"] for e in patients] == [4, 4, 4, 1]  # 13 Patients, 4 per file


async def test_patient_level_exports_the_patient_compartments(http: httpx.AsyncClient) -> None:
    await small_case(http)
    found = await export(http, "/Patient/$export")
    assert found == {
        "Patient": ["p1", "p2", "p3"],
        "Observation": ["o1", "o2", "o3"],  # not o4, which is nobody's
        "Group": ["g1"],  # in its members' compartments (Group.member)
    }


async def test_group_level_exports_its_active_members(http: httpx.AsyncClient) -> None:
    await small_case(http)
    found = await export(http, "/Group/g1/$export")
    assert found == {"Patient": ["p1"], "Observation": ["o1", "o2"], "Group": ["g1"]}
    narrowed = await export(http, "/Group/g1/$export?_type=Observation")
    assert narrowed == {"Observation": ["o1", "o2"]}


async def test_post_kick_off_with_parameters(http: httpx.AsyncClient) -> None:
    await small_case(http)
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient,Observation"},
            {"name": "_outputFormat", "valueString": "application/ndjson"},
            {"name": "patient", "valueReference": {"reference": "Patient/p2"}},
        ],
    }
    assert await export(http, "/Patient/$export", json=body) == {
        "Patient": ["p2"],
        "Observation": ["o3"],
    }
    outside = {**body, "parameter": [body["parameter"][2]]}  # p2 is not a member of g1
    assert await export(http, "/Group/g1/$export", json=outside) == {}


async def test_type_and_output_format(http: httpx.AsyncClient) -> None:
    await small_case(http)
    for form in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
        url = f"/$export?_type=Practitioner,Observation&_outputFormat={form}"
        found = await export(http, url)
        assert found == {"Observation": ["o1", "o2", "o3", "o4"], "Practitioner": ["dr1"]}


async def test_since_and_transaction_time(http: httpx.AsyncClient) -> None:
    await put(http, patient("a"))
    b = await put(http, patient("b"))
    await put(http, patient("c"))
    await put(http, patient("a", "Ändrad"))  # a again: changed after b
    since = b["meta"]["lastUpdated"]
    assert await export(http, f"/$export?_type=Patient&_since={since}") == {"Patient": ["a", "c"]}
    moment = datetime.fromisoformat(since).astimezone(timezone(timedelta(hours=2)))
    offset = quote(moment.isoformat())  # the same instant, as +02:00
    assert await export(http, f"/$export?_type=Patient&_since={offset}") == {"Patient": ["a", "c"]}
    status = await kick_off(http, "/$export?_type=Patient")
    await put(http, patient("later"))  # after transactionTime: left out
    manifest = await wait_manifest(http, status)
    assert ids(await download(http, manifest)) == {"Patient": ["a", "b", "c"]}


async def test_type_filters_are_ored_and_each_resource_written_once(
    http: httpx.AsyncClient,
) -> None:
    await small_case(http)
    both = observation("o5", "Patient/p2")
    both["code"]["coding"].append({"system": "http://example.org/codes", "code": "height"})
    await put(http, both)
    url = (
        "/$export?_type=Observation,Patient&_typeFilter=Observation?code=weight"
        "&_typeFilter=Observation?code=height&_typeFilter=Patient?_id=p1,p3"
    )
    assert await export(http, url) == {
        "Observation": ["o1", "o2", "o3", "o4", "o5"],
        "Patient": ["p1", "p3"],
    }
    chained = "/$export?_type=Observation&_typeFilter=Observation?subject:Patient._id=p2"
    assert await export(http, chained) == {"Observation": ["o3", "o5"]}


# -- errors: an OperationOutcome naming the parameter, and nothing created ---------------------


@pytest.mark.parametrize(
    ("url", "headers", "status", "expression"),
    [
        ("/$export", {"Prefer": "return=minimal"}, 400, "Prefer"),
        ("/$export?_outputFormat=text/csv", ASYNC, 400, "_outputFormat"),
        ("/$export?_type=Patient,Unicorn", ASYNC, 400, "_type"),
        ("/Patient/$export?_type=Practitioner", ASYNC, 400, "_type"),
        ("/$export?_typeFilter=Observation?bogus=1", ASYNC, 400, "_typeFilter"),
        ("/$export?_typeFilter=Observation?date=yesterday", ASYNC, 400, "_typeFilter"),
        ("/$export?_typeFilter=Observation?_count=5", ASYNC, 400, "_typeFilter"),
        ("/$export?_typeFilter=Observation", ASYNC, 400, "_typeFilter"),
        ("/$export?_typeFilter=Unicorn?code=x", ASYNC, 400, "_typeFilter"),
        ("/$export?_type=Patient&_typeFilter=Observation?code=x", ASYNC, 400, "_typeFilter"),
        ("/$export?_since=2026-01-01", ASYNC, 400, "_since"),
        ("/$export?_since=2026-02-30T00:00:00Z", ASYNC, 400, "_since"),
        ("/$export?_since=a&_since=b", ASYNC, 400, "_since"),
        ("/$export?_elements=id", ASYNC, 400, "_elements"),
        ("/$export?unknown=1", ASYNC, 400, "unknown"),
        ("/$export?patient=Patient/p1", ASYNC, 400, "patient"),
        ("/Group/nobody/$export", ASYNC, 404, None),
        ("/$export", {**ASYNC, "Accept": "text/csv"}, 406, None),
    ],
)
async def test_bad_kick_off_is_refused(
    http: httpx.AsyncClient,
    export_settings: Settings,
    url: str,
    headers: dict[str, str],
    status: int,
    expression: str | None,
) -> None:
    response = await http.get(url, headers=headers)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    if expression is not None:
        assert outcome["issue"][0]["expression"] == [expression]
    assert job_dirs(export_settings) == []


async def test_bad_post_parameters_name_the_parameter(
    http: httpx.AsyncClient, export_settings: Settings
) -> None:
    cases = [
        ({"resourceType": "Patient"}, None),
        ({"resourceType": "Parameters", "parameter": [{"valueString": "x"}]}, "[0]"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "X"}]},
            "[0].valueString",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "_type", "valueString": "Patient"},
                    {"name": "patient", "valueString": "Patient/p1"},
                ],
            },
            "[1].valueString",
        ),
    ]
    for body, where in cases:
        response = await http.post("/Patient/$export", json=body, headers=ASYNC)
        assert response.status_code == 400, response.text
        issue = response.json()["issue"][0]
        if where is not None:
            assert issue["expression"] == [f"Parameters.parameter{where}"]
    assert job_dirs(export_settings) == []


async def test_lenient_handling_ignores_what_is_not_offered(http: httpx.AsyncClient) -> None:
    await small_case(http)
    headers = {**ASYNC, "Prefer": "respond-async, handling=lenient"}
    response = await http.get("/$export?_type=Practitioner&_elements=id", headers=headers)
    assert response.status_code == 202, response.text
    warnings = [i for i in response.json()["issue"] if i["severity"] == "warning"]
    assert warnings[0]["expression"] == ["_elements"]
    manifest = await wait_manifest(http, response.headers["Content-Location"])
    assert ids(await download(http, manifest)) == {"Practitioner": ["dr1"]}


async def test_unknown_jobs_and_files_are_404(http: httpx.AsyncClient) -> None:
    assert (await http.get("/$export-poll-status?_jobId=" + "0" * 32)).status_code == 404
    assert (await http.get("/$export-poll-status?_jobId=../../etc")).status_code == 404
    assert (await http.delete("/$export-poll-status?_jobId=" + "0" * 32)).status_code == 404
    missing = await http.get("/$export-poll-status")
    assert missing.status_code == 400 and missing.json()["issue"][0]["expression"] == ["_jobId"]
    assert (await http.get(f"/$export-file/{'0' * 32}/Patient-1.ndjson")).status_code == 404
    status = await kick_off(http, "/$export?_type=Practitioner")
    await wait_manifest(http, status)
    job = status.rsplit("=", 1)[1]
    assert (await http.get(f"/$export-file/{job}/Patient-1.ndjson")).status_code == 404
    assert (await http.get(f"/$export-file/{job}/job.json")).status_code == 404


# -- cancellation and expiry -------------------------------------------------------------------


async def test_delete_cancels_a_running_job(
    http: httpx.AsyncClient, export_settings: Settings
) -> None:
    for n in range(30):
        await put(http, patient(f"p{n:02d}"))
    status = await kick_off(http, "/$export?_type=Patient")
    assert (await http.get(status)).status_code == 202
    response = await http.delete(status)
    assert response.status_code == 202
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (await http.get(status)).status_code == 404
    assert (await http.delete(status)).status_code == 404
    for folder in job_dirs(export_settings):  # removed already, or at the runner's next page
        assert await gone(folder)


async def test_delete_removes_a_finished_jobs_files(
    http: httpx.AsyncClient, export_settings: Settings
) -> None:
    await small_case(http)
    status = await kick_off(http, "/$export?_type=Patient")
    manifest = await wait_manifest(http, status)
    assert (await http.delete(status)).status_code == 202
    assert (await http.get(status)).status_code == 404
    for entry in manifest["output"]:
        assert (await http.get(entry["url"])).status_code == 404
    assert job_dirs(export_settings) == []


async def test_files_expire_by_the_clock(
    http: httpx.AsyncClient, export_settings: Settings, clock: FixedClock
) -> None:
    await small_case(http)
    status = await kick_off(http, "/$export?_type=Patient")
    manifest = await wait_manifest(http, status)
    url = manifest["output"][0]["url"]
    clock.moment += timedelta(seconds=RETENTION - 1)
    assert (await http.get(status)).status_code == 200
    assert (await http.get(url)).status_code == 200
    clock.moment += timedelta(seconds=2)
    assert (await http.get(status)).status_code == 404
    assert (await http.get(url)).status_code == 404
    [folder] = job_dirs(export_settings)
    assert await gone(folder)  # swept


# -- failures ------------------------------------------------------------------------------------


async def test_a_type_that_cannot_be_read_goes_to_the_error_file(
    store: Storage, export_settings: Settings, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = store.search

    async def costly(query: Any, access: Any) -> Any:
        if query.type == "Observation":
            raise error(400, "too-costly", "The search took longer than 10 s")
        return await search(query, access)

    async with app_client(export_settings, store, clock) as http:
        await small_case(http)
        monkeypatch.setattr(store, "search", costly)
        manifest = await wait_manifest(
            http, await kick_off(http, "/$export?_type=Patient,Observation")
        )
        assert ids(await download(http, manifest)) == {"Patient": ["p1", "p2", "p3"]}
        [entry] = manifest["error"]
        assert entry["type"] == "OperationOutcome" and entry["count"] == 1
        response = await http.get(entry["url"])
        assert response.status_code == 200
        [outcome] = [orjson.loads(line) for line in response.content.splitlines()]
        assert outcome["resourceType"] == "OperationOutcome"
        assert "Observation was not exported" in outcome["issue"][0]["diagnostics"]


async def test_a_job_that_keeps_failing_is_failed_not_lost(
    store: Storage, export_settings: Settings, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(query: Any, access: Any) -> Any:
        raise RuntimeError("the database went away")

    async with app_client(export_settings, store, clock) as http:
        await small_case(http)
        monkeypatch.setattr(store, "search", broken)
        status = await kick_off(http, "/$export?_type=Patient")
        for _ in range(2000):
            response = await http.get(status)
            if response.status_code != 202:
                break
            await asyncio.sleep(0.01)
        assert response.status_code == 500, response.text  # the IG's error status
        issue = response.json()["issue"][0]
        assert issue["code"] == "exception" and "RuntimeError" in issue["diagnostics"]
        assert (await http.delete(status)).status_code == 202
        assert (await http.get(status)).status_code == 404


# -- round trip --------------------------------------------------------------------------------

SEARCHES = [
    "Patient?_count=100",
    "Patient?name=tolvan",
    "Encounter?subject=Patient/tolvan-tolvansson",
    "Organization?_count=100",
    "Observation?code=weight",
    "Observation?subject:Patient.name=svensson",
    "Task?_count=100",
]


async def test_round_trip_into_an_empty_server(
    engine: str, tmp_path: Path, export_settings: Settings, clock: FixedClock
) -> None:
    """Export everything, PUT each line into an empty server: the same searches agree."""
    source_dir, target_dir = tmp_path / "source", tmp_path / "target"
    source_dir.mkdir(), target_dir.mkdir()
    source_settings = export_settings.model_copy(
        update={"sqlite_path": source_dir / "fhir.sqlite3", "export_batch_size": 50}
    )
    target_settings = source_settings.model_copy(
        update={"sqlite_path": target_dir / "fhir.sqlite3", "export_dir": target_dir / "x"}
    )
    async with (
        app_client(source_settings, make_storage(engine, source_dir), clock) as source,
        app_client(target_settings, make_storage(engine, target_dir), clock) as target,
    ):
        await load_case(source, leave_out=ACTS)
        await small_case(source)
        manifest = await wait_manifest(source, await kick_off(source, "/$export"))
        found = await download(source, manifest)
        first = ["Organization", "Practitioner", "Patient", "PractitionerRole", "Location"]
        order = sorted(found, key=lambda t: (first.index(t) if t in first else len(first), t))
        for type in order:
            if type in CONFORMANCE:
                continue  # the target publishes its own at start-up
            for resource in found[type]:
                await put(target, resource)
        for search in SEARCHES:
            left, right = await source.get(search), await target.get(search)
            assert left.status_code == right.status_code == 200, search
            assert _matches(left.json()) == _matches(right.json()), search
            assert left.json().get("total") == right.json().get("total"), search


def _matches(bundle: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """Each match as (type, id, content without meta): the target wrote new versions."""
    out = []
    for entry in bundle.get("entry", []):
        resource = {k: v for k, v in entry["resource"].items() if k != "meta"}
        out.append((resource["resourceType"], resource["id"], orjson.dumps(resource)))
    return sorted(out)


# -- a restart mid-job -------------------------------------------------------------------------


def test_a_job_survives_sigkill_and_resumes(tmp_path: Path) -> None:
    """SIGKILL while the job is mid-way; the next process on the same database and export
    directory takes the job over once its lease runs out and completes it, same id."""
    env = {
        "FHIR_EXPORT_DIR": str(tmp_path / "exports"),
        "FHIR_EXPORT_BATCH_SIZE": "20",
        "FHIR_EXPORT_PAGE_DELAY": "0.1",
        "FHIR_EXPORT_FILE_SIZE": "100",
        "FHIR_EXPORT_LEASE": "1",
        "FHIR_EXPORT_POLL_INTERVAL": "0.1",
    }
    server = LiveServer(tmp_path / "live.sqlite3", env)
    server.start()
    try:
        base = server.base_url
        with httpx.Client(base_url=base, timeout=30, trust_env=False) as client:
            entries = [
                {
                    "resource": patient(f"p{n:04d}"),
                    "request": {"method": "PUT", "url": f"Patient/p{n:04d}"},
                }
                for n in range(600)
            ]
            bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
            assert client.post("", json=bundle).status_code == 200
            response = client.get("/$export?_type=Patient", headers=ASYNC)
            assert response.status_code == 202, response.text
            status = response.headers["Content-Location"]
            progress = _wait_mid_way(client, status)
            server.kill()
            server.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                response = client.get(status)
                if response.status_code != 202:
                    break
                time.sleep(0.05)
            assert response.status_code == 200, (progress, response.text)
            manifest = response.json()
            lines = []
            for entry in manifest["output"]:
                file = client.get(entry["url"])
                assert file.status_code == 200
                assert len(file.content.splitlines()) == entry["count"]
                lines += file.content.splitlines()
            exported = sorted(orjson.loads(line)["id"] for line in lines)
            assert exported == [f"p{n:04d}" for n in range(600)]  # each once
            [job] = [p for p in (tmp_path / "exports").iterdir()]
            state = orjson.loads((job / "job.json").read_bytes())
            assert state["attempts"] == 2  # resumed, not restarted under a new id
            assert not [p.name for p in job.iterdir() if p.name.endswith(".part")]
    finally:
        server.stop()


def _wait_mid_way(client: httpx.Client, status: str) -> str:
    """Poll until X-Progress shows resources written and the job still running."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = client.get(status)
        assert response.status_code == 202, response.text  # not done before the kill
        progress = response.headers["X-Progress"]
        written = re.search(r"([0-9]+) resources written", progress)
        if written and int(written[1]) > 0:
            return progress
        time.sleep(0.02)
    raise AssertionError("the job never got going")

"""`fhir-server import`: NDJSON, .ndjson.gz and Bundles loaded as the server's writes would
store them, references across files in any order, refused lines reported, resumption after
SIGKILL without duplicate versions, and a re-run that changes nothing.

In-process tests run the importer on both engines (SQLite and the mongomock double) and look
at the result through the HTTP API of an app over the same storage; the CLI tests run
`fhir-server import` in a subprocess on SQLite (mongomock lives in one process only)."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from benchmarks.dataset import _Builder
from benchmarks.import_bulk import case
from fhir_server.bulk.importer import EXIT_REFUSED, Summary, run_import
from fhir_server.bulk.report import read_report
from fhir_server.config import Settings
from fhir_server.storage.port import Storage
from tests.conftest import ROOT, app_client
from tests.engines import make_storage

PNR = "http://electronichealth.se/identifier/personnummer"
CASE_TYPES = ("Patient", "Organization", "Consent", "CarePlan", "Task", "Encounter",
              "Condition", "Goal", "Appointment", "Observation")  # fmt: skip


def write_ndjson(path: Path, resources: list[dict[str, Any]], *raw: bytes) -> Path:
    lines = [orjson.dumps(r) for r in resources] + list(raw)
    data = b"\n".join(lines) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def sip_case(n: int, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """A person's records (benchmarks/import_bulk.py) whose SIP plan is active: R-SIP-01
    needs the person's consent stored first, whatever the order of the files."""
    builder = _Builder(random.Random(seed))
    while True:
        records = case(builder, n)
        if records["1-plans.ndjson"][0]["status"] == "active":
            return records


@pytest.fixture
async def api(
    settings: Settings, store: Storage
) -> AsyncIterator[tuple[httpx.AsyncClient, Storage]]:
    async with app_client(settings, store) as http:
        yield http, store


async def load(
    storage: Storage, settings: Settings, tmp_path: Path, *paths: Path, workers: int = 0
) -> Summary:
    report = tmp_path / "report.ndjson"
    return await run_import(
        list(paths), storage, settings, report=report, workers=workers, progress=False
    )


async def total(http: httpx.AsyncClient, url: str) -> int:
    response = await http.get(url)
    assert response.status_code == 200, response.text
    return response.json()["total"]


async def test_ndjson_gzip_and_bundles_load(api, settings: Settings, tmp_path: Path) -> None:
    http, storage = api
    patients = [
        {"resourceType": "Patient", "id": f"p{i}", "identifier": [{"system": PNR,
         "value": "19121212-1212" if i == 0 else f"19{i:02d}0101-0000"}]}
        for i in range(3)
    ]  # fmt: skip
    observations = [
        {"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "Vikt"},
         "subject": {"reference": f"Patient/p{i}"}, "valueQuantity": {"value": 72, "unit": "kg"}}
        for i in range(3)
    ]  # fmt: skip
    write_ndjson(tmp_path / "in" / "patients.ndjson", patients)
    decimal = orjson.dumps(observations[1]).replace(b'"value":72', b'"value":72.50')
    write_ndjson(tmp_path / "in" / "deep" / "obs.ndjson.gz", observations[::2], decimal)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b0e7f4e-1111-4c7e-9d55-0f1e2a3b4c5d",
         "resource": {"resourceType": "Patient", "name": [{"family": "Tolvansson"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Encounter", "id": "e1", "status": "in-progress",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": "IMP"},
                      "subject": {"reference": "urn:uuid:0b0e7f4e-1111-4c7e-9d55-0f1e2a3b4c5d"}},
         "request": {"method": "PUT", "url": "Encounter/e1"}},
        {"request": {"method": "GET", "url": "Patient?name=x"}},
    ]}  # fmt: skip
    (tmp_path / "in" / "bundle.json").write_bytes(orjson.dumps(bundle))
    single = {"resourceType": "Organization", "id": "org1", "name": "Sunderby sjukhus"}
    (tmp_path / "in" / "org.json").write_bytes(orjson.dumps(single))

    summary = await load(storage, settings, tmp_path, tmp_path / "in")

    assert (summary.created, summary.refused, summary.exit_code) == (9, 0, 0)
    assert await total(http, "/Observation?subject=Patient/p2") == 1
    # Swedish person numbers are stored in their 12-digit form, as on every write
    assert await total(http, f"/Patient?identifier={PNR}|191212121212") == 1
    observation = (await http.get("/Observation/o1")).json()
    assert observation["meta"]["versionId"] == "1"
    assert b'"value":72.50' in (await http.get("/Observation/o1")).content  # decimals as written
    encounter = (await http.get("/Encounter/e1")).json()
    patient_id = encounter["subject"]["reference"].removeprefix("Patient/")
    assert (await http.get(f"/Patient/{patient_id}")).json()["name"][0]["family"] == "Tolvansson"
    assert (await http.get("/Organization/org1")).status_code == 200


@pytest.mark.parametrize("plans_first", [True, False])
async def test_references_across_files_in_either_order(
    api, settings: Settings, tmp_path: Path, plans_first: bool
) -> None:
    """R-SIP-01 judges an active plan by its person's consent: with the plan in the first
    file and the consent in the last, or the other way round, both load."""
    http, storage = api
    records = sip_case(1)
    people = records["3-people.ndjson"]
    first, last = ("a", "z") if plans_first else ("z", "a")
    write_ndjson(tmp_path / f"{first}-plans.ndjson", records["1-plans.ndjson"])
    write_ndjson(tmp_path / f"{last}-people.ndjson", people)
    clinical = tmp_path / "m-clinical.ndjson.gz"
    write_ndjson(clinical, records["2-clinical.ndjson.gz"])

    summary = await load(storage, settings, tmp_path, tmp_path)

    assert summary.refused == 0, read_report(tmp_path / "report.ndjson")
    assert (await http.get("/CarePlan/plan1")).json()["status"] == "active"
    assert await total(http, "/CarePlan?subject=Patient/p1") == 1


async def test_gate_refuses_a_plan_without_consent_in_any_file(
    api, settings: Settings, tmp_path: Path
) -> None:
    http, storage = api
    records = sip_case(2)
    write_ndjson(tmp_path / "a-plans.ndjson", records["1-plans.ndjson"])
    people = [r for r in records["3-people.ndjson"] if r["resourceType"] != "Consent"]
    write_ndjson(tmp_path / "b-people.ndjson", people)

    summary = await load(storage, settings, tmp_path, tmp_path)

    assert summary.exit_code == EXIT_REFUSED
    [refused] = read_report(tmp_path / "report.ndjson")
    assert refused["file"].endswith("a-plans.ndjson") and refused["line"] == 1
    issue = refused["outcome"]["issue"][0]
    assert issue["diagnostics"].startswith("R-SIP-01") and issue["expression"]
    assert (await http.get("/CarePlan/plan2")).status_code == 404
    assert (await http.get("/Task/task2")).status_code == 200  # the rest of the file loads


async def test_bad_lines_are_reported_and_the_rest_loads(
    api, settings: Settings, tmp_path: Path
) -> None:
    http, storage = api
    good = [{"resourceType": "Patient", "id": f"ok{i}", "gender": "female"} for i in range(3)]
    path = write_ndjson(tmp_path / "mixed.ndjson", good[:1])
    with path.open("ab") as f:
        f.write(b'{"resourceType": "Patient", "id": "broken", \n')  # line 2: not JSON
        f.write(orjson.dumps({"resourceType": "Patient", "id": "bad", "gender": "x"}) + b"\n")
        f.write(b"\n")  # line 4: blank, skipped
        f.write(orjson.dumps({"resourceType": "Nonsense", "id": "n"}) + b"\n")
        f.write(b"\n".join(orjson.dumps(r) for r in good[1:]) + b"\n")
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "id": "b1"},
         "request": {"method": "PUT", "url": "Patient/b1"}},
        {"resource": {"resourceType": "Patient", "id": "b2", "birthDate": "1950-02-30"},
         "request": {"method": "PUT", "url": "Patient/b2"}},
        {"request": {"method": "DELETE", "url": "Patient/ok0"}},
    ]}  # fmt: skip
    (tmp_path / "batch.json").write_bytes(orjson.dumps(bundle))

    summary = await load(storage, settings, tmp_path, path, tmp_path / "batch.json")

    assert (summary.created, summary.refused, summary.exit_code) == (4, 5, EXIT_REFUSED)
    report = read_report(tmp_path / "report.ndjson")
    where = {(Path(r["file"]).name, r.get("line"), r.get("entry")) for r in report}
    assert where == {
        ("mixed.ndjson", 2, None), ("mixed.ndjson", 3, None), ("mixed.ndjson", 5, None),
        ("batch.json", None, 1), ("batch.json", None, 2),
    }  # fmt: skip
    by_line = {(r.get("line"), r.get("entry")): r["outcome"] for r in report}
    assert all(o["resourceType"] == "OperationOutcome" for o in by_line.values())
    assert by_line[(3, None)]["issue"][0]["expression"] == ["Patient.gender"]
    assert by_line[(5, None)]["issue"][0]["expression"] == ["resourceType"]
    assert by_line[(None, 1)]["issue"][0]["expression"] == ["Bundle.entry[1].resource.birthDate"]
    assert by_line[(None, 2)]["issue"][0]["expression"] == ["Bundle.entry[2].request.method"]
    assert await total(http, "/Patient") == 4
    assert (await http.get("/Patient/ok0")).status_code == 200  # the DELETE was not run


async def test_reimport_adds_versions_only_for_changed_content(
    api, settings: Settings, tmp_path: Path
) -> None:
    """Re-running a finished import changes nothing; the same resources in another file
    add no version unless their content differs (then one version, as a PUT)."""
    http, storage = api
    patients = [{"resourceType": "Patient", "id": f"p{i}", "gender": "male"} for i in range(4)]
    first = write_ndjson(tmp_path / "first.ndjson", patients)
    assert (await load(storage, settings, tmp_path, first)).created == 4

    again = await load(storage, settings, tmp_path, first)
    assert (again.created, again.updated, again.unchanged, again.resumed) == (0, 0, 0, 4)

    changed = [*patients[:3], {**patients[3], "gender": "female"}]
    changed[0] = {**changed[0], "meta": {"versionId": "7", "lastUpdated": "2020-01-01T00:00:00Z"}}
    second = write_ndjson(tmp_path / "second.ndjson", changed)
    summary = await load(storage, settings, tmp_path, second)

    assert (summary.created, summary.updated, summary.unchanged) == (0, 1, 3)
    assert await total(http, "/Patient/p0/_history") == 1
    assert await total(http, "/Patient/p3/_history") == 2
    assert (await http.get("/Patient/p3")).json()["meta"]["versionId"] == "2"


async def test_a_resource_without_id_gets_the_same_id_each_time(
    api, settings: Settings, tmp_path: Path
) -> None:
    http, storage = api
    path = write_ndjson(tmp_path / "anonymous.ndjson", [{"resourceType": "Patient"}])
    await load(storage, settings, tmp_path, path)
    copy = tmp_path / "elsewhere" / "renamed.ndjson"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    await load(storage, settings, tmp_path, copy)
    assert await total(http, "/Patient") == 1


async def test_import_fires_no_topics_and_opens_no_obligations(
    api, settings: Settings, tmp_path: Path
) -> None:
    """A migration of history: an active SIP plan with a follow-up date opens R-SIP-08/09
    Tasks and the SIP EpisodeOfCare when written over HTTP, but not when imported."""
    http, storage = api
    records = sip_case(3)
    plans = [r for r in records["1-plans.ndjson"] if r["resourceType"] == "CarePlan"]
    write_ndjson(tmp_path / "plans.ndjson", plans)
    write_ndjson(tmp_path / "people.ndjson", records["3-people.ndjson"])
    events_before = await storage.outbox.last_seq()

    await load(storage, settings, tmp_path, tmp_path)

    assert await total(http, "/Task") == 0
    assert await total(http, "/EpisodeOfCare") == 0
    assert await storage.outbox.last_seq() == events_before
    plan = {**plans[0], "id": "plan-over-http"}
    assert (await http.put("/CarePlan/plan-over-http", json=plan)).status_code == 201
    assert await total(http, "/Task") > 0  # the contrast: the HTTP write runs the hooks


async def test_workers_prepare_as_this_process_does(settings: Settings, tmp_path: Path) -> None:
    """Two worker processes validate and index; the result is the same as without them."""
    storage = make_storage("sqlite", tmp_path)
    records = sip_case(4)
    for name, resources in records.items():
        write_ndjson(tmp_path / name, resources)
    write_ndjson(tmp_path / "bad.ndjson", [], b"not json")
    async with app_client(settings, storage) as http:
        summary = await run_import(
            [tmp_path], storage, settings, report=tmp_path / "r.ndjson", workers=2,
            batch_size=3, progress=False,
        )  # fmt: skip
        assert (summary.created, summary.refused) == (16, 1)
        assert await total(http, "/Observation?subject=Patient/p4") == 5


# -- the command line, SQLite ----------------------------------------------------------------


def cli(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "fhir_server.cli", "import", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True, **kwargs,
    )  # fmt: skip


def big_set(folder: Path, cases: int) -> int:
    builder = _Builder(random.Random(11))
    count = 0
    streams: dict[str, list[dict[str, Any]]] = {}
    for n in range(cases):
        for name, resources in case(builder, n).items():
            streams.setdefault(name, []).extend(resources)
            count += len(resources)
    for name, resources in streams.items():
        write_ndjson(folder / name, resources)
    return count


async def test_killed_import_resumes_without_duplicates(tmp_path: Path) -> None:
    """SIGKILL a running `fhir-server import` after a few committed batches (SQLite only:
    mongomock cannot be shared with a subprocess); run the same command again: it goes on
    from the checkpoints, every resource has exactly one version, and each refused line is
    reported once. Running it a third time changes nothing."""
    data = tmp_path / "data"
    data.mkdir()
    expected = big_set(data, 250)  # 4,000 resources
    write_ndjson(data / "0-bad.ndjson", [], b"{oops", b'{"resourceType": "Patient", "gender": 1}')
    db, report = tmp_path / "fhir.sqlite3", tmp_path / "report.ndjson"  # as make_storage
    args = (str(data), "--db", str(db), "--report", str(report), "--workers", "0")
    args += ("--batch-size", "100", "--verbose")

    first = cli(*args)
    assert first.stderr is not None
    committed = 0
    for line in first.stderr:
        committed += "committed" in line
        if committed == 5:
            first.send_signal(signal.SIGKILL)
            break
    first.wait()
    assert first.returncode == -signal.SIGKILL

    second = cli(*args)
    _, errors = second.communicate()
    assert second.returncode == EXIT_REFUSED, errors
    assert "committed by an earlier run" in errors
    assert "\r" not in errors and "resources/s" in errors  # plain lines: stderr is no TTY

    settings = Settings(sqlite_path=db)  # the profiles the command uses: no re-index
    storage = make_storage("sqlite", tmp_path)
    async with app_client(settings, storage) as http:
        versions = [await total(http, f"/{type}/_history?_count=1") for type in CASE_TYPES]
        assert sum(versions) == expected  # one version each: nothing written twice
        assert await total(http, "/Patient") == 250
        assert await total(http, "/Observation") == 250 * 5
    records = read_report(report)
    assert sorted(r["line"] for r in records) == [1, 2]

    third = cli(*args)
    _, errors = third.communicate()
    assert third.returncode == EXIT_REFUSED
    assert f"{expected + 2:,} resources were committed by an earlier run" in errors  # + 2 bad
    assert len(read_report(report)) == 2


def test_import_exit_codes_and_a_missing_path(tmp_path: Path) -> None:
    good = write_ndjson(tmp_path / "good.ndjson", [{"resourceType": "Patient", "id": "g"}])
    db = str(tmp_path / "db.sqlite3")
    ok = cli(str(good), "--db", db, "--report", str(tmp_path / "r.ndjson"), "--workers", "0")
    assert ok.wait() == 0
    missing = cli(str(tmp_path / "nowhere"), "--db", db, "--report", str(tmp_path / "r.ndjson"))
    _, errors = missing.communicate()
    assert missing.returncode == 1 and "nowhere" in errors

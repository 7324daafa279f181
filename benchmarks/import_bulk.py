"""Bulk import benchmark: `fhir-server import` over a generated NDJSON set of SIP cases.

Each case is one person's records with ids and `Type/id` references between them: a
Patient (valid personnummer), their care unit (Organization), an Encounter, a Condition, a
SIP consent, a SIP CarePlan, two Goals, two Appointments, five Observations and a Task:
16 resources. The set is split into files by kind, written so that references point
forward (the CarePlans' file comes before the Patients' and Consents' file, one file is
gzipped), so the import's order independence is exercised too. Reported: resources/s over
the wall clock and the importer's CPU (its own and its workers').

    .venv/bin/python benchmarks/import_bulk.py --cases 12500          # 200,000 resources
    .venv/bin/python benchmarks/import_bulk.py --cases 2000 --workers 0
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.dataset import PNR, _Builder, coding, link, narrative  # noqa: E402

PER_CASE = 16
SNOMED = "http://snomed.info/sct"
CONDITIONS = [
    ("230690007", "Stroke"),
    ("84114007", "Hjärtsvikt"),
    ("13645005", "KOL"),
    ("52448006", "Demens"),
    ("44054006", "Diabetes mellitus typ 2"),
]


def case(builder: _Builder, n: int) -> dict[str, list[dict[str, Any]]]:
    """One person's records, by the file they go to."""
    rng = builder.rng
    patient = {**builder.patient(), "id": f"p{n}"}
    unit = {**builder.organization(), "id": f"org{n}"}
    patient_ref, unit_ref = f"Patient/p{n}", f"Organization/org{n}"
    assert any(i["system"] == PNR for i in patient["identifier"])
    encounter = {**builder.encounter(), "id": f"enc{n}"}
    code, display = rng.choice(CONDITIONS)
    condition = {
        "resourceType": "Condition",
        "id": f"cond{n}",
        "text": narrative(display),
        "clinicalStatus": {
            "coding": [
                coding(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
                )
            ]
        },
        "code": {"coding": [coding(SNOMED, code, display)], "text": display},
        "subject": {"reference": patient_ref},
        "encounter": {"reference": f"Encounter/enc{n}"},
        "recordedDate": builder.moment().date().isoformat(),
    }
    consent = {**builder.sip_consent(), "id": f"consent{n}"}
    plan = {**builder.care_plan(), "id": f"plan{n}"}
    task = {
        "resourceType": "Task",
        "id": f"task{n}",
        "text": narrative("Kalla till SIP-möte"),
        "status": rng.choice(["requested", "in-progress", "completed"]),
        "intent": "order",
        "description": "Kalla till SIP-möte",
        "for": {"reference": patient_ref},
        "focus": {"reference": f"CarePlan/plan{n}"},
        "owner": {"reference": unit_ref},
        "authoredOn": builder.moment().isoformat(),
    }
    others = [
        *({**builder.goal(), "id": f"goal{n}-{i}"} for i in range(2)),
        *({**builder.appointment(), "id": f"appt{n}-{i}"} for i in range(2)),
        *({**builder.observation(), "id": f"obs{n}-{i}"} for i in range(5)),
    ]

    def linked(resource: dict[str, Any]) -> dict[str, Any]:
        return link(link(resource, "Patient", patient_ref), "Organization", unit_ref)

    return {
        "1-plans.ndjson": [linked(plan), linked(task)],
        "2-clinical.ndjson.gz": [linked(encounter), condition, *map(linked, others)],
        "3-people.ndjson": [patient, unit, linked(consent)],
    }


def generate(folder: Path, cases: int, seed: int) -> int:
    builder = _Builder(random.Random(seed))
    count = 0
    with contextlib.ExitStack() as stack:
        files: dict[str, IO[bytes]] = {}
        for n in range(cases):
            for name, resources in case(builder, n).items():
                if name not in files:
                    path = folder / name
                    gz = name.endswith(".gz")
                    files[name] = stack.enter_context(
                        gzip.open(path, "wb", 3) if gz else path.open("wb")  # noqa: SIM115
                    )
                for item in resources:
                    files[name].write(orjson.dumps(item) + b"\n")
                    count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12500, help=f"{PER_CASE} resources each")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="write the data and database here instead")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sip-import-") as tmp:
        work = args.keep or Path(tmp)
        data = work / "data"
        data.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        total = generate(data, args.cases, args.seed)
        print(f"generated {total:,} resources in {time.perf_counter() - started:.1f} s")
        command = [sys.executable, "-m", "fhir_server.cli", "import", str(data)]
        command += ["--db", str(work / "import.sqlite3"), "--report", str(work / "report.ndjson")]
        command += ["--workers", str(args.workers), "--batch-size", str(args.batch_size)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        print(f"sip-fhir import  {total:,} resources  workers={args.workers}  SQLite")
        print(f"wall {wall:.1f} s: {total / wall:,.0f} resources/s")
        print(f"importer CPU (with its workers) {cpu:.1f} s: {total / cpu:,.0f} resources per "
              f"CPU second ({cpu / total * 1000:.2f} ms per resource)")  # fmt: skip
        print(f"exit code {result.returncode}")
        return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())

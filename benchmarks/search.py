"""Search benchmark for sip-fhir: a fixed query mix against SIP populations of growing size.

For each size (default 10,000 and 1,000,000 resources) the script writes a realistic SIP
population into a fresh SQLite file through the storage port (`SqliteStorage.unit_of_work()`,
`put(stored_version(...), index_entries(...))`, ~1000 puts per unit of work, so the index
tables are the server's own), then runs a fixed query mix in-process, without HTTP:
`parse_search` + `storage.search`, and `search_type` (the Bundle, `_include` included) for
the `_include` query. It prints p50/p95 per query and size and the p95 ratio largest/smallest
size; a ratio above 1.5 is marked, and for those the SQL's `EXPLAIN QUERY PLAN` is printed.

    .venv/bin/python benchmarks/search.py                       # 10k and 1M, temp directory
    .venv/bin/python benchmarks/search.py --sizes 10000 --repeat 20
    .venv/bin/python benchmarks/search.py --db-dir /tmp/sipbench --reuse   # keep / reuse DBs

Population per 1,000 resources: 200 Patient, 40 Organization, 30 Practitioner,
30 PractitionerRole, 150 CarePlan (SIP), 150 Goal, 150 Appointment, 150 Communication,
50 Consent, 50 EpisodeOfCare. Every reference points at a resource of the same population.
Output depends only on the size and --seed (ids included), so runs repeat exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import hashlib
import math
import mmap
import multiprocessing
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `fhir_server` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.dataset import (  # noqa: E402
    CET,
    CITIES,
    FAMILY,
    GIVEN_F,
    GIVEN_M,
    HSA,
    MUNICIPALITIES,
    PNR,
    REGION_UNITS,
    SIP_CATEGORY,
    STREETS,
    luhn_digit,
    narrative,
)

GENERATOR_VERSION = "1"  # bump when the population changes: --reuse then regenerates
POPULATION_KEY = "benchmark-population"
BATCH = 1000  # puts per unit of work (and resources per generated chunk)
PREFETCH = 3  # chunks prepared ahead of the writer
# (resource type, count per 1000 resources)
MIX = [
    ("Patient", 200),
    ("Organization", 40),
    ("Practitioner", 30),
    ("PractitionerRole", 30),
    ("CarePlan", 150),
    ("Goal", 150),
    ("Appointment", 150),
    ("Communication", 150),
    ("Consent", 50),
    ("EpisodeOfCare", 50),
]
SURNAMES = [*FAMILY, "Berg", "Bergström", "Sjöberg", "Åberg", "Ekström", "Holm", "Strömberg"]
DAYS = 365 * 80  # birth dates spread over 80 years from 1925
SVU = "https://fhir.inera.se/CodeSystem/svu-meddelandetyp"  # samverkan vid utskrivning
MESSAGES = [
    ("inskrivningsmeddelande", "Inskrivningsmeddelande"),
    ("utskrivningsklar", "Meddelande om utskrivningsklar"),
    ("planeringsunderlag", "Planeringsunderlag"),
    ("utskrivningsmeddelande", "Utskrivningsmeddelande"),
    ("kallelse-sip", "Kallelse till SIP-möte"),
]
ACTIVITIES = [
    "Hemtjänst: personlig omvårdnad",
    "Hemsjukvård: läkemedelsadministration",
    "Trygghetslarm",
    "Uppföljande besök hos distriktssköterska",
    "Läkemedelsgenomgång",
    "Rehabilitering med fysioterapeut",
    "Korttidsboende efter utskrivning",
]
GOALS = [
    "Bo kvar i egen bostad och känna sig trygg",
    "Gå själv med rollator till affären",
    "Klara sin personliga hygien själv",
    "Minska antalet akuta sjukhusbesök",
    "Återgå till arbete på deltid",
]
ROLES = ["Läkare", "Sjuksköterska", "Fysioterapeut", "Arbetsterapeut", "Biståndshandläggare"]


# -- population ------------------------------------------------------------------------------


def type_counts(size: int) -> dict[str, int]:
    """Resources per type for `size` (largest remainder, so the total is exactly `size`)."""
    exact = [(size * weight / 1000, kind) for kind, weight in MIX]
    counts = {kind: int(share) for share, kind in exact}
    by_remainder = sorted(exact, key=lambda item: item[0] - int(item[0]), reverse=True)
    for _, kind in by_remainder[: size - sum(counts.values())]:
        counts[kind] += 1
    return counts


def rid(seed: int, kind: str, index: int) -> str:
    """The id of resource `index` of `kind`: uuid-shaped, deterministic, unordered."""
    h = hashlib.blake2b(f"{seed}:{kind}:{index}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"


def birth_and_pnr(index: int, male: bool, rng: random.Random) -> tuple[date, str]:
    """A unique personnummer per patient index: (day, block) is a bijection of the index."""
    day = (index % DAYS) * 7919 % DAYS  # 7919 is prime and coprime with DAYS
    birth = date(1925, 1, 1) + timedelta(days=day)
    serial = (index // DAYS) * 20 + 2 * rng.randrange(10) + int(male)
    nine = f"{birth:%y%m%d}{serial:03d}"
    return birth, f"{birth:%Y}{nine[2:]}{luhn_digit(nine)}"


@dataclass(frozen=True)
class Population:
    size: int
    seed: int

    @property
    def counts(self) -> dict[str, int]:
        return type_counts(self.size)

    @property
    def chunks(self) -> int:
        return max(1, math.ceil(self.size / BATCH))

    def span(self, kind: str, chunk: int) -> range:
        """The indexes of `kind` generated in `chunk` (each type spread evenly over chunks)."""
        n, k = self.counts[kind], self.chunks
        return range(n * chunk // k, n * (chunk + 1) // k)

    def chunk_of(self, kind: str, index: int) -> int:
        """The chunk that generates resource `index` of `kind` (inverse of `span`)."""
        k = index * self.chunks // self.counts[kind]
        while index < self.span(kind, k).start:
            k -= 1
        while index >= self.span(kind, k).stop:
            k += 1
        return k

    def sip_patient(self, plan: int) -> int:
        """The patient of CarePlan `plan` (and of Goal and Appointment `plan`)."""
        chunk = self.chunk_of("CarePlan", plan)
        return _patient_in_chunk(self, chunk, random.Random(f"{self.seed}:SIP:{plan}"))

    def ref(self, kind: str, index: int) -> dict[str, str]:
        return {"reference": f"{kind}/{rid(self.seed, kind, index)}"}

    def skewed(self, rng: random.Random, kind: str) -> int:
        """An index of `kind`, low indexes more often (big units): the same shape at any size."""
        return int(self.counts[kind] * rng.random() ** 2)

    def patient_pnr(self, index: int) -> str:
        """The personnummer of patient `index` (as `build_chunk` made it)."""
        return _patient(self, index, random.Random(f"{self.seed}:Patient:{index}"))["identifier"][
            0
        ]["value"]


def moment(rng: random.Random, start: date, days: int) -> datetime:
    day = start + timedelta(days=rng.randrange(days))
    return datetime(
        day.year, day.month, day.day, rng.randrange(7, 19), rng.choice([0, 15, 30, 45]), tzinfo=CET
    )


def _patient(pop: Population, i: int, rng: random.Random) -> dict[str, Any]:
    male = rng.random() < 0.5
    birth, pnr = birth_and_pnr(i, male, rng)
    given = rng.sample(GIVEN_M if male else GIVEN_F, rng.choice([1, 1, 2]))
    family = rng.choice(SURNAMES)
    city, postal = rng.choice(CITIES)
    return {
        "resourceType": "Patient",
        "text": narrative(f"{' '.join(given)} {family}, född {birth.isoformat()}"),
        "identifier": [{"use": "official", "system": PNR, "value": pnr}],
        "active": True,
        "name": [{"use": "official", "family": family, "given": given}],
        "gender": "male" if male else "female",
        "birthDate": birth.isoformat(),
        "telecom": [
            {"system": "phone", "value": f"+4670{rng.randrange(10**6, 10**7)}", "use": "mobile"}
        ],
        "address": [
            {
                "use": "home",
                "line": [f"{rng.choice(STREETS)} {rng.randint(1, 80)}"],
                "city": city,
                "postalCode": f"{postal} {rng.randrange(10, 99)}",
                "country": "SE",
            }
        ],
    }


def _organization(pop: Population, i: int, rng: random.Random) -> dict[str, Any]:
    """Every 20th is a top-level organisation (region or municipality), the rest its units."""
    top = i - i % 20
    municipality = (top // 20) % 2 == 1
    place = MUNICIPALITIES[(top // 40) % len(MUNICIPALITIES)]
    if i == top:
        name = f"{place} kommun" if municipality else "Region Norrbotten"
        prefix = "SE2120002726" if municipality else "SE2321000230"
    elif municipality:
        name = f"{place} kommun, {rng.choice(['hemtjänst', 'hemsjukvård', 'socialtjänst'])}"
        prefix = "SE2120002726"
    else:
        name, prefix = rng.choice(REGION_UNITS), "SE2321000230"
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "text": narrative(name),
        "identifier": [{"use": "official", "system": HSA, "value": f"{prefix}-E{i:07d}"}],
        "active": True,
        "type": [{"text": "Kommunal enhet" if municipality else "Vårdenhet"}],
        "name": name,
        "telecom": [
            {"system": "phone", "value": f"+46920{rng.randrange(10**5, 10**6)}", "use": "work"}
        ],
    }
    if i != top:
        resource["partOf"] = pop.ref("Organization", top)
    return resource


def _practitioner(pop: Population, i: int, rng: random.Random) -> dict[str, Any]:
    male = rng.random() < 0.5
    given, family = rng.choice(GIVEN_M if male else GIVEN_F), rng.choice(SURNAMES)
    return {
        "resourceType": "Practitioner",
        "text": narrative(f"{given} {family}"),
        "identifier": [{"use": "official", "system": HSA, "value": f"SE2321000230-P{i:07d}"}],
        "active": True,
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": "male" if male else "female",
    }


def _practitioner_role(pop: Population, i: int, rng: random.Random) -> dict[str, Any]:
    role = rng.choice(ROLES)
    return {
        "resourceType": "PractitionerRole",
        "text": narrative(role),
        "identifier": [{"use": "official", "system": HSA, "value": f"SE2321000230-R{i:07d}"}],
        "active": True,
        "practitioner": pop.ref("Practitioner", i % pop.counts["Practitioner"]),
        "organization": pop.ref("Organization", pop.skewed(rng, "Organization")),
        "code": [{"text": role}],
    }


def _patient_in_chunk(pop: Population, chunk: int, rng: random.Random) -> int:
    return rng.choice(pop.span("Patient", chunk) or range(pop.counts["Patient"]))


def _care_plan(pop: Population, i: int, rng: random.Random, chunk: int) -> dict[str, Any]:
    """CarePlan i, Goal i and Appointment i belong to the same patient (one SIP)."""
    patient = pop.sip_patient(i)
    status = rng.choice(["active", "active", "active", "completed", "draft"])
    start = moment(rng, date(2024, 6, 1), 700).date()
    period = {"start": start.isoformat()}
    if status == "completed" or rng.random() < 0.3:
        period["end"] = (start + timedelta(days=rng.choice([90, 180, 365]))).isoformat()
    detail_status = {"active": "in-progress", "completed": "completed", "draft": "not-started"}
    activities = [
        {
            "detail": {
                "code": {"text": text},
                "status": detail_status[status],
                "performer": [pop.ref("Organization", pop.skewed(rng, "Organization"))],
            }
        }
        for text in rng.sample(ACTIVITIES, rng.randint(1, 3))
    ]
    return {
        "resourceType": "CarePlan",
        "text": narrative("Samordnad individuell plan", *ACTIVITIES[:1]),
        "status": status,
        "intent": "plan",
        "category": [{"coding": [SIP_CATEGORY]}],
        "title": "Samordnad individuell plan",
        "subject": pop.ref("Patient", patient),
        "period": period,
        "created": f"{start.isoformat()}T10:00:00+01:00",
        "author": pop.ref("PractitionerRole", pop.skewed(rng, "PractitionerRole")),
        "goal": [pop.ref("Goal", i % pop.counts["Goal"])],
        "activity": activities,
    }


def _goal(pop: Population, i: int, rng: random.Random, chunk: int) -> dict[str, Any]:
    plan = i % pop.counts["CarePlan"]
    patient = pop.sip_patient(plan)
    start = moment(rng, date(2024, 6, 1), 700).date()
    text = rng.choice(GOALS)
    return {
        "resourceType": "Goal",
        "text": narrative(text),
        "lifecycleStatus": rng.choice(["proposed", "accepted", "active", "active", "completed"]),
        "description": {"text": text},
        "subject": pop.ref("Patient", patient),
        "startDate": start.isoformat(),
        "target": [{"dueDate": (start + timedelta(days=rng.choice([30, 90, 180]))).isoformat()}],
    }


def _appointment(pop: Population, i: int, rng: random.Random, chunk: int) -> dict[str, Any]:
    plan = i % pop.counts["CarePlan"]
    patient = pop.sip_patient(plan)
    start = moment(rng, date(2025, 1, 1), 730)  # two years
    status = rng.choice(["booked", "booked", "fulfilled", "fulfilled", "cancelled"])
    what = rng.choice(["SIP-möte", "Uppföljning av SIP", "Planeringsmöte inför utskrivning"])
    participants = [
        {"actor": pop.ref("Patient", patient), "required": "required", "status": "accepted"}
    ]
    for _ in range(rng.randint(2, 3)):
        kind = rng.choice(["Organization", "Organization", "PractitionerRole"])
        participants.append({"actor": pop.ref(kind, pop.skewed(rng, kind)), "status": "accepted"})
    return {
        "resourceType": "Appointment",
        "text": narrative(what),
        "status": status,
        "serviceType": [{"text": what}],
        "description": f"{what}, mötesform: {rng.choice(['fysiskt', 'digitalt', 'telefon'])}",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=rng.choice([30, 60, 90]))).isoformat(),
        "participant": participants,
    }


def _communication(pop: Population, i: int, rng: random.Random, chunk: int) -> dict[str, Any]:
    code, display = rng.choice(MESSAGES)
    sent = moment(rng, date(2025, 1, 1), 730)
    return {
        "resourceType": "Communication",
        "text": narrative(display),
        "status": "completed",
        "category": [{"coding": [{"system": SVU, "code": code, "display": display}]}],
        "subject": pop.ref("Patient", _patient_in_chunk(pop, chunk, rng)),
        "sent": sent.isoformat(),
        "sender": pop.ref("Organization", pop.skewed(rng, "Organization")),
        "recipient": [pop.ref("Organization", pop.skewed(rng, "Organization"))],
        "payload": [{"contentString": f"{display} för patient, se bifogad information."}],
    }


def _consent(pop: Population, i: int, rng: random.Random, chunk: int) -> dict[str, Any]:
    patient = pop.ref("Patient", _patient_in_chunk(pop, chunk, rng))
    when = moment(rng, date(2024, 6, 1), 700)
    return {
        "resourceType": "Consent",
        "text": narrative("Samtycke till informationsöverföring inom SIP"),
        "status": rng.choice(["active", "active", "active", "inactive"]),
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": patient,
        "dateTime": when.isoformat(),
        "performer": [patient],
        "organization": [pop.ref("Organization", pop.skewed(rng, "Organization"))],
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
    }


def _episode(pop: Population, i: int, rng: random.Random, chunk: int) -> dict[str, Any]:
    start = moment(rng, date(2024, 6, 1), 700)
    status = rng.choice(["active", "finished"])
    period = {"start": start.isoformat()}
    if status == "finished":
        period["end"] = (start + timedelta(days=rng.randint(3, 60))).isoformat()
    return {
        "resourceType": "EpisodeOfCare",
        "status": status,
        "type": [{"text": rng.choice(["Hemsjukvård", "Korttidsvård", "Slutenvård"])}],
        "patient": pop.ref("Patient", _patient_in_chunk(pop, chunk, rng)),
        "managingOrganization": pop.ref("Organization", pop.skewed(rng, "Organization")),
        "period": period,
        "careManager": pop.ref("Practitioner", pop.skewed(rng, "Practitioner")),
    }


BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "Patient": _patient,
    "Organization": _organization,
    "Practitioner": _practitioner,
    "PractitionerRole": _practitioner_role,
    "CarePlan": _care_plan,
    "Goal": _goal,
    "Appointment": _appointment,
    "Communication": _communication,
    "Consent": _consent,
    "EpisodeOfCare": _episode,
}
CHUNKED = {"CarePlan", "Goal", "Appointment", "Communication", "Consent", "EpisodeOfCare"}


def build_chunk(pop: Population, chunk: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, id, resource) for one chunk: every type in proportion, patients first."""
    out = []
    for kind, _ in MIX:
        for i in pop.span(kind, chunk):
            rng = random.Random(f"{pop.seed}:{kind}:{i}")
            args = (chunk,) if kind in CHUNKED else ()
            out.append((kind, rid(pop.seed, kind, i), BUILDERS[kind](pop, i, rng, *args)))
    return out


def prepare_chunk(job: tuple[int, int, int]) -> list[tuple[Any, list[Any]]]:
    """Worker: one chunk as (ResourceVersion, index entries), ready for `put`."""
    from fhir_server.interactions.versions import stored_version
    from fhir_server.search.indexer import index_entries

    size, seed, chunk = job
    return [
        (stored_version(resource, kind, id_, None, "POST"), index_entries(kind, resource))
        for kind, id_, resource in build_chunk(Population(size, seed), chunk)
    ]


async def generate(pop: Population, path: Path, pool: Any) -> dict[str, float]:
    """Write the population through the storage port; returns timings."""
    from fhir_server.interactions.reindex import INDEX_KEY
    from fhir_server.search.indexer import index_version
    from fhir_server.storage.sqlite.engine import SqliteStorage

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    storage = SqliteStorage(path)
    await storage.open()
    writer = storage._writer  # type: ignore[union-attr]
    # Loader only: a 1 GiB page cache on the writer (the engine's default is 2 MB), no fsync
    # per unit of work, and the secondary indexes dropped during the load and rebuilt after
    # it from the engine's own statements, so the file ends up exactly as the server's.
    await writer.execute("PRAGMA cache_size = -1048576")
    await writer.execute("PRAGMA synchronous = OFF")
    indexes = await writer.execute_fetchall(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    )
    for name, _ in indexes:
        await writer.execute(f'DROP INDEX "{name}"')
    start, put_seconds, done = time.perf_counter(), 0.0, 0
    last_report = start
    try:
        # A few chunks ahead only: the workers would otherwise outrun the writer and hold
        # the whole population in memory.
        ahead: deque[Any] = deque()
        for k in range(pop.chunks + PREFETCH):
            if k < pop.chunks:
                ahead.append(pool.apply_async(prepare_chunk, ((pop.size, pop.seed, k),)))
            if len(ahead) <= PREFETCH and k < pop.chunks:
                continue
            if not ahead:
                break
            batch = ahead.popleft().get()
            t0 = time.perf_counter()
            async with storage.unit_of_work() as uow:
                for version, entries in batch:  # one by one: they share the one connection
                    await uow.put(version, entries)
            put_seconds += time.perf_counter() - t0
            done += len(batch)
            now = time.perf_counter()
            if now - last_report > 30:
                last_report = now
                rate = done / (now - start)
                eta = (pop.size - done) / rate
                print(
                    f"... {done:,}/{pop.size:,} resources, {rate:,.0f}/s, eta {eta:,.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        loaded = time.perf_counter()
        for _, sql in indexes:
            await writer.execute(sql)
        index_seconds = time.perf_counter() - loaded
        async with storage.unit_of_work() as uow:
            await uow.set_meta(INDEX_KEY, index_version())
            await uow.set_meta(POPULATION_KEY, population_tag(pop))
    finally:
        await storage.close()
    elapsed = time.perf_counter() - start
    checkpoint(path)
    return {
        "seconds": elapsed,
        "put_seconds": put_seconds,
        "index_seconds": index_seconds,
        "resources": done,
    }


def population_tag(pop: Population) -> str:
    return f"{pop.size}:{pop.seed}:{GENERATOR_VERSION}"


def stored_tag(path: Path) -> str | None:
    if not path.exists():
        return None
    with sqlite3.connect(path) as db:
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (POPULATION_KEY,)).fetchone()
        except sqlite3.Error:
            return None
    return row[0] if row else None


def checkpoint(path: Path) -> None:
    """Fold the WAL into the main file so the size printed is the database's."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def db_bytes(path: Path) -> int:
    return sum(
        Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists()
    )


# -- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuerySpec:
    name: str
    type: str
    make: Callable[[Population, random.Random], list[tuple[str, str]]]
    bundle: bool = False  # run through search_type (Bundle and _include), not storage.search


def _week(pop: Population, rng: random.Random) -> list[tuple[str, str]]:
    first = date(2025, 1, 1) + timedelta(days=rng.randrange(730 - 7))
    return [("date", f"ge{first}"), ("date", f"lt{first + timedelta(days=7)}")]


def _pick(pop: Population, rng: random.Random, kind: str) -> int:
    """An existing resource of `kind` at a seeded fraction of its population."""
    return int(rng.random() * pop.counts[kind])


def _sip_patient(pop: Population, rng: random.Random) -> int:
    """The patient of a random CarePlan: a patient who has a SIP."""
    return pop.sip_patient(_pick(pop, rng, "CarePlan"))


def _patient_ref(pop: Population, rng: random.Random) -> str:
    return f"Patient/{rid(pop.seed, 'Patient', _sip_patient(pop, rng))}"


def _org_ref(pop: Population, rng: random.Random) -> str:
    return f"Organization/{rid(pop.seed, 'Organization', _pick(pop, rng, 'Organization'))}"


def _pnr(pop: Population, rng: random.Random, sip: bool = False) -> str:
    patient = _sip_patient(pop, rng) if sip else _pick(pop, rng, "Patient")
    return f"{PNR}|{pop.patient_pnr(patient)}"


NONE, COUNT = ("_total", "none"), ("_count", "20")
QUERIES = [
    QuerySpec(
        "CarePlan?subject=Patient/x",
        "CarePlan",
        lambda p, r: [("subject", _patient_ref(p, r)), NONE, COUNT],
    ),
    QuerySpec(
        "Appointment?actor=Organization/x",
        "Appointment",
        lambda p, r: [("actor", _org_ref(p, r)), NONE, COUNT],
    ),
    QuerySpec(
        "Appointment?date=ge..&date=lt.. (1 week)",
        "Appointment",
        lambda p, r: [*_week(p, r), NONE, COUNT],
    ),
    QuerySpec(
        "CarePlan?status=active&_include=CarePlan:subject",
        "CarePlan",
        lambda p, r: [("status", "active"), ("_include", "CarePlan:subject"), NONE, COUNT],
        bundle=True,
    ),
    QuerySpec(
        "Patient?family=berg&gender=female",
        "Patient",
        lambda p, r: [("family", "berg"), ("gender", "female"), NONE, COUNT],
    ),
    QuerySpec(
        "CarePlan?subject:Patient.identifier=pnr",
        "CarePlan",
        lambda p, r: [("subject:Patient.identifier", _pnr(p, r, sip=True)), NONE, COUNT],
    ),
    QuerySpec(
        "Patient?_has:CarePlan:subject:status=active",
        "Patient",
        lambda p, r: [("_has:CarePlan:subject:status", "active"), NONE, COUNT],
    ),
    QuerySpec(
        "Appointment?actor=Organization/x&_sort=-date",
        "Appointment",
        lambda p, r: [("actor", _org_ref(p, r)), ("_sort", "-date"), NONE, COUNT],
    ),
    QuerySpec(
        "Patient?identifier=pnr", "Patient", lambda p, r: [("identifier", _pnr(p, r)), NONE, COUNT]
    ),
    QuerySpec(
        "Appointment?actor=Organization/x&_total=accurate",
        "Appointment",
        lambda p, r: [("actor", _org_ref(p, r)), ("_total", "accurate"), COUNT],
    ),
]


def query_values(pop: Population, seed: int, repeat: int) -> dict[str, list[list[tuple[str, str]]]]:
    """The parameters of every run (a warm-up run first): same draws at every size."""
    out = {}
    for n, spec in enumerate(QUERIES):
        rng = random.Random(f"{seed}:query:{n}")
        out[spec.name] = [spec.make(pop, rng) for _ in range(repeat + 1)]
    return out


async def run_queries(
    pop: Population, path: Path, repeat: int, seed: int, warmup: int
) -> dict[str, dict[str, Any]]:
    from fhir_server.config import Settings
    from fhir_server.interactions.context import Context
    from fhir_server.interactions.search import search_type
    from fhir_server.search.parser import parse_search
    from fhir_server.security.principal import ANONYMOUS
    from fhir_server.storage.port import AccessFilter
    from fhir_server.storage.sqlite.engine import SqliteStorage

    storage = SqliteStorage(path)
    await storage.open()  # brings an older file's indexes to today's schema first
    checkpoint(path)  # the WAL folded in: the whole database is the one file held below
    # search_type needs no validator; the rest is what a request would carry.
    ctx = Context(storage, Settings(), ANONYMOUS, "http://localhost/fhir", None)  # type: ignore[arg-type]
    access = AccessFilter()

    async def once(spec: QuerySpec, params: list[tuple[str, str]]) -> tuple[int, int, Any]:
        """One search: (matches on the page, resources included, total or None)."""
        if spec.bundle:
            bundle = await search_type(ctx, spec.type, params, lenient=False)
            modes = [e["search"]["mode"] for e in bundle.get("entry", [])]
            return modes.count("match"), modes.count("include"), bundle.get("total")
        page = await storage.search(parse_search(spec.type, params).query, access)
        return len(page.items), 0, page.total

    results: dict[str, dict[str, Any]] = {}
    try:
        with in_memory(path) as how:
            print(f"[{pop.size:,}] database file {how}; {warmup} warm-up runs per query")
            # A server in steady state: the mix runs first with other draws (another seed),
            # untimed, so the B-tree levels every search crosses are mapped and cached.
            for spec in QUERIES:
                for params in query_values(pop, seed + 1_000_003, warmup)[spec.name]:
                    await once(spec, params)
            for spec in QUERIES:
                runs = query_values(pop, seed, repeat)[spec.name]
                times, hits, included = [], [], []
                for n, params in enumerate(runs):
                    t0 = time.perf_counter()
                    matched, extra, total = await once(spec, params)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if n == 0:
                        continue  # warm-up: statement preparation, first page reads
                    times.append(elapsed)
                    hits.append(matched if total is None else total)
                    included.append(extra)
                results[spec.name] = {
                    "p50": percentile(times, 0.50),
                    "p95": percentile(times, 0.95),
                    "hits": sum(hits) / len(hits),
                    "included": sum(included) / len(included),
                    "total": any(("_total", "accurate") in p for p in runs),
                    "example": runs[1],
                }
    finally:
        await storage.close()
    return results


@contextmanager
def in_memory(path: Path) -> Iterator[str]:
    """Hold the database file in the OS page cache while the queries run; yields how.

    Why: this VM's kernel drops about a sixth of a 6 GB file from its cache within minutes,
    even with GBs free, and a query that meets such a page measures the disk (p99 in the
    milliseconds), not the engine.  As `vmtouch -l` does, the file is mapped and `mlock`ed
    (root or CAP_IPC_LOCK); where that is refused it is only read once.
    """
    size = path.stat().st_size
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mlock.argtypes = libc.munlock.argtypes = libc.munmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
    ]
    with path.open("rb") as f:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
    if address in (None, ctypes.c_void_p(-1).value):
        how = "read once (mmap refused)"
    elif libc.mlock(address, size) == 0:
        how = f"locked in memory ({size / 2**30:.1f} GiB, mlock)"
    else:
        how = f"read once (mlock refused: {os.strerror(ctypes.get_errno())})"
    if not how.startswith("locked"):
        with path.open("rb") as f:
            while f.read(1 << 24):
                pass
    try:
        yield how
    finally:
        if address not in (None, ctypes.c_void_p(-1).value):
            libc.munlock(address, size)
            libc.munmap(address, size)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- EXPLAIN ---------------------------------------------------------------------------------


def search_sql(spec: QuerySpec, params: list[tuple[str, str]]) -> tuple[list[str], list[Any]]:
    """The SQL the SQLite engine runs for one query: the count (when _total) and the page
    statement, from the engine's own builders (`_where`, `_page_sql`)."""
    from fhir_server.search.parser import parse_search
    from fhir_server.storage.sqlite.engine import _page_sql, _where

    query = parse_search(spec.type, params).query
    statements: list[tuple[str, list[Any]]] = []
    if query.total:
        where, values = _where(query)
        statements.append((f"SELECT count(*) FROM resources r WHERE {where}", values))
    statements.append(_page_sql(query, paged=True))
    return [s for s, _ in statements], [v for _, v in statements]


def explain(path: Path, spec: QuerySpec, params: list[tuple[str, str]]) -> str:
    sqls, values = search_sql(spec, params)
    lines = []
    with sqlite3.connect(path) as db:
        for sql, vals in zip(sqls, values, strict=True):
            lines.append(f"  SQL: {sql}")
            lines.append(f"  params: {vals}")
            rows = db.execute(f"EXPLAIN QUERY PLAN {sql}", vals).fetchall()
            depth = {0: 0}
            for node, parent, _, detail in rows:
                depth[node] = depth.get(parent, 0) + 1
                lines.append("  " + "  " * depth[node] + detail)
            t0 = time.perf_counter()
            db.execute(sql, vals).fetchall()
            lines.append(
                f"  (plain sqlite3, this statement alone: "
                f"{(time.perf_counter() - t0) * 1000:.1f} ms)"
            )
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def report(
    sizes: list[int], results: dict[int, dict[str, dict[str, Any]]], limit: float
) -> list[str]:
    """Print the table; return the names of queries whose p95 grew more than `limit`."""
    small, big = sizes[0], sizes[-1]
    head = ["query"]
    for s in sizes:
        head += [f"{s:,} p50", "p95", "hits"]
    if len(sizes) > 1:
        head.append(f"p95 {big // 1000:,}k/{small // 1000:,}k")
    rows, flagged = [], []
    for spec in QUERIES:
        row = [spec.name + ("  [_total=accurate]" if results[small][spec.name]["total"] else "")]
        for s in sizes:
            r = results[s][spec.name]
            hits = f"{r['hits']:.1f}" + (f"+{r['included']:.1f}" if r["included"] else "")
            row += [f"{r['p50']:.2f}", f"{r['p95']:.2f}", hits]
        if len(sizes) > 1:
            ratio = results[big][spec.name]["p95"] / results[small][spec.name]["p95"]
            mark = f"  <-- > {limit:.1f}" if ratio > limit else ""
            row.append(f"{ratio:.1f}{mark}")
            if ratio > limit:
                flagged.append(spec.name)
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    print(fmt(head))
    print("-" * len(fmt(head)))
    for row in rows:
        print(fmt(row))
    return flagged


def run(coroutine: Any) -> Any:
    """Run on uvloop when installed, as uvicorn serves the server (aiosqlite's thread hops
    cost ~50 µs there against ~90 µs on asyncio's default loop, on this machine)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="10000,1000000", help="population sizes, comma-separated"
    )
    parser.add_argument("--db-dir", type=Path, help="where the SQLite files go (default: temp)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse a database in --db-dir made with the same size and seed",
    )
    parser.add_argument("--repeat", type=int, default=200, help="timed runs per query and size")
    parser.add_argument(
        "--warmup", type=int, default=200, help="untimed runs per query first, other draws"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="processes building and indexing resources (default: cores - 1)",
    )
    parser.add_argument("--ratio", type=float, default=1.5, help="mark p95 growth above this")
    args = parser.parse_args(argv)
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(","))
    if not sizes or sizes[0] < 1000 or args.repeat < 1:
        parser.error("sizes must be >= 1000 and --repeat >= 1")

    from fhir_server.search.registry import all_params

    all_params()  # load the 1,400 SearchParameters once, before the workers fork
    tmp = None if args.db_dir else tempfile.mkdtemp(prefix="search-bench-")
    db_dir = args.db_dir or Path(tmp)  # type: ignore[arg-type]
    db_dir.mkdir(parents=True, exist_ok=True)
    paths = {s: db_dir / f"search-{s}-seed{args.seed}.sqlite3" for s in sizes}
    results: dict[int, dict[str, dict[str, Any]]] = {}
    print(
        f"sip-fhir search benchmark  sizes={sizes}  repeat={args.repeat}  seed={args.seed}  "
        f"SQLite {sqlite3.sqlite_version}  {os.cpu_count()} cores  db-dir={db_dir}"
    )
    print(
        "in-process: parse_search + SqliteStorage.search (the _include query: search_type, "
        "which builds the Bundle); _count=20; _total=none unless marked [_total=accurate] "
        "(the server's default is accurate); times in ms, wall, after one warm-up run, with the "
        "database file held in the OS page cache"
    )
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(args.workers) as pool:
            for size in sizes:
                pop, path = Population(size, args.seed), paths[size]
                if args.reuse and stored_tag(path) == population_tag(pop):
                    print(f"\n[{size:,}] reusing {path} ({db_bytes(path) / 2**20:,.0f} MiB)")
                else:
                    print(f"\n[{size:,}] generating {pop.counts}", flush=True)
                    t = run(generate(pop, path, pool))
                    print(
                        f"[{size:,}] generated {t['resources']:,} resources in "
                        f"{t['seconds']:,.1f} s ({t['resources'] / t['seconds']:,.0f}/s; "
                        f"units of work {t['put_seconds']:,.1f} s, "
                        f"index build {t['index_seconds']:,.1f} s), "
                        f"DB {db_bytes(path) / 2**20:,.0f} MiB",
                        flush=True,
                    )
                results[size] = run(run_queries(pop, path, args.repeat, args.seed, args.warmup))
                report([size], {size: results[size]}, args.ratio)
        if len(sizes) > 1:
            print(f"\nsummary: p95 ratio {sizes[-1]:,} / {sizes[0]:,} (marked above {args.ratio})")
            flagged = report(sizes, results, args.ratio)
            big = Population(sizes[-1], args.seed)
            for name in flagged:
                spec = next(s for s in QUERIES if s.name == name)
                params = query_values(big, args.seed, 1)[name][1]
                print(f"\nEXPLAIN QUERY PLAN at {sizes[-1]:,}: {name}\n  {params}")
                print(explain(paths[sizes[-1]], spec, params))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

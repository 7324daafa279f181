"""Fuzz: no input makes a 5xx, every 4xx is an OperationOutcome, a refused write changes nothing.

Generated requests (resources, searches, conditional headers, ids, version ids, patches,
batch and transaction Bundles) go through HTTP to one app on SQLite (`FUZZ_ENGINE=mongo` for
mongomock). The profile's `max_examples` is the budget for the whole module, shared out by
weight: `ci` (default) is 2,000 cases, derandomised so CI is deterministic; `make fuzz` runs
`HYPOTHESIS_PROFILE=fuzz`, 20,000 random cases. A 500 fails with the server's traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fhir_server.api.app import create_app
from fhir_server.config import MAPPINGS_DIR, PROFILES_DIR, Settings
from tests import fuzz_requests as fr
from tests import fuzz_strategies as fs
from tests.resources import care_plan, patient

settings.register_profile(
    "ci",
    max_examples=2_000,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    max_examples=20_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
BUDGET = settings.default.max_examples


def share(weight: float) -> settings:
    """This test's part of the module's example budget."""
    return settings(max_examples=max(1, round(BUDGET * weight)))


# ---------------------------------------------------------------- requests and answers


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, bytes] = field(default_factory=dict)
    body: bytes | None = None
    types: tuple[str, ...] = ()  # resource types whose count a refused write must not change


@dataclass
class Answer:
    status: int
    body: Any
    text: str
    errors: list[logging.LogRecord]


# ---------------------------------------------------------------- the harness


class _Records(logging.Handler):
    """Keeps the server's error log records: the traceback of an unexpected error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Harness:
    """One app and one event loop for the module; each example runs to completion on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, http: httpx.AsyncClient) -> None:
        self.loop, self.http, self.log = loop, http, _Records()

    def send(self, sent: Sent) -> Answer:
        self.log.records.clear()
        response = self.loop.run_until_complete(
            self.http.request(sent.method, sent.url, headers=sent.headers, content=sent.body)
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        return Answer(response.status_code, body, response.text, list(self.log.records))

    def counts(self, types: tuple[str, ...]) -> dict[str, Any]:
        """History total (every version, so updates and deletes show) and per-type counts."""
        out: dict[str, Any] = {"_history": self._total("/_history?_count=0")}
        for type in types:
            out[type] = self._total(f"/{type}?_summary=count")
        return out

    def _total(self, url: str) -> Any:
        answer = self.send(Sent("GET", url))
        assert answer.status == 200, answer.text
        return answer.body.get("total")

    def check(self, sent: Sent, *, write: bool) -> Answer:
        """The oracle: no 5xx; a 4xx is an OperationOutcome; a refused write changed nothing."""
        before = self.counts(sent.types) if write else None
        answer = self.send(sent)
        event(f"HTTP {answer.status}")
        if os.environ.get("FUZZ_DEBUG") and isinstance(answer.body, dict):  # what is refused
            event(str(answer.body.get("issue", [{}])[0].get("diagnostics"))[:60])
        if answer.status >= 500:
            pytest.fail(f"{answer.status} on {_show(sent)}\n{_tracebacks(answer)}\n{answer.text}")
        if 400 <= answer.status < 500:
            body = answer.body
            assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", (
                f"{answer.status} without an OperationOutcome on {_show(sent)}: {answer.text}"
            )
            assert isinstance(body.get("issue"), list) and body["issue"], answer.text
            if write:
                after = self.counts(sent.types)
                if after != before:
                    pytest.fail(
                        f"refused ({answer.status}) but changed {before} -> {after}: "
                        f"{_show(sent)}\n{answer.text}"
                    )
        return answer


def _show(sent: Sent) -> str:
    body = (sent.body or b"")[:2000]
    return f"{sent.method} {sent.url} headers={sent.headers!r} body={body!r}"


def _tracebacks(answer: Answer) -> str:
    formatter = logging.Formatter()
    return "\n".join(formatter.format(record) for record in answer.errors)


SEED = [
    patient(id="p1"),
    patient(pnr="201212121212", family="Tolvansdotter", id="p1"),
    patient(pnr="199001019802", id="p2"),
    {"resourceType": "Organization", "id": "org1", "name": "Vårdcentral"},
    {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 37.5, "system": "http://unitsofmeasure.org", "code": "Cel"},
    },
    {**care_plan("Patient/p1"), "id": "c1"},
    {"resourceType": "Encounter", "id": "e1", "status": "finished",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
     "subject": {"reference": "Patient/p1"}},
]  # fmt: skip


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    from tests.conftest import TEST_PROFILES
    from tests.engines import make_storage

    tmp: Path = tmp_path_factory.mktemp("fuzz")
    config = Settings(
        sqlite_path=tmp / "fhir.sqlite3", profile_dirs=[PROFILES_DIR, MAPPINGS_DIR, TEST_PROFILES]
    )
    app = create_app(config, make_storage(os.environ.get("FUZZ_ENGINE", "sqlite"), tmp))
    loop = asyncio.new_event_loop()
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    http = httpx.AsyncClient(transport=transport, base_url="http://testserver/fhir")
    harness = Harness(loop, http)
    logger = logging.getLogger("fhir_server")
    logger.addHandler(harness.log)
    try:
        for resource in SEED:
            url = f"/{resource['resourceType']}/{resource['id']}"
            answer = harness.send(Sent("PUT", url, body=fs.to_bytes(resource), headers=JSON))
            assert answer.status in (200, 201), answer.text
        yield harness
    finally:
        logger.removeHandler(harness.log)
        loop.run_until_complete(http.aclose())
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
        loop.close()


JSON = {"Content-Type": b"application/fhir+json"}

# ---------------------------------------------------------------- requests


@st.composite
def writes(draw: st.DrawFn) -> Sent:
    """create, update, conditional update and $validate with generated resources."""
    type = draw(st.one_of(st.sampled_from(fs.TYPES), st.sampled_from(fs.ALL_TYPES)))
    if draw(st.integers(0, 19)) == 0:
        type = draw(st.sampled_from(["Nope", "patient", "Resource", "DomainResource"]))
    resource = draw(fs.resource_body(type=type if type in fs.ALL_TYPES else None))
    how = draw(st.sampled_from(["create", "update", "conditional", "validate"]))
    id = draw(fs.ids())
    if how == "update" and draw(st.integers(0, 3)):
        resource["id"] = id
    body = draw(fs.body_bytes(st.just(resource)))
    headers = {**JSON, **draw(fr.headers(body=True))}
    if how == "create":
        query = draw(st.one_of(st.just(""), fr.search_query(st.just(type)).map(lambda q: q.query)))
        url, method = f"/{type}" + (f"?{query}" if query else ""), "POST"
    elif how == "update":
        url, method = f"/{type}/{fs.path_segment(id)}", "PUT"
    elif how == "conditional":
        url, method = f"/{type}?{draw(fr.search_query(st.just(type))).query}", "PUT"
    else:
        url, method = f"/{type}/$validate", "POST"
    return Sent(method, url, headers, body, types=(type,) if type in fs.ALL_TYPES else ())


@st.composite
def searches(draw: st.DrawFn) -> Sent:
    """search-type (GET and POST _search), system search, compartments and history."""
    query = draw(fr.search_query())
    headers = draw(fr.headers())
    how = draw(st.sampled_from(["type", "type", "post", "system", "compartment", "history"]))
    if how == "type":
        return Sent("GET", f"/{query.type}?{query.query}", headers)
    if how == "post":
        body = query.query.encode() if draw(st.integers(0, 9)) else b"name=%FF\xff"
        headers["Content-Type"] = b"application/x-www-form-urlencoded"
        return Sent("POST", f"/{query.type}/_search", headers, body)
    if how == "system":
        types = draw(st.lists(st.sampled_from([*fs.TYPES, "Nope", ""]), max_size=3))
        type_param = f"_type={','.join(types)}&" if types else ""
        return Sent("GET", f"/?{type_param}{query.query}", headers)
    if how == "compartment":
        compartment = draw(st.sampled_from(["Patient", "Encounter", "Practitioner", "Nope"]))
        id = fs.path_segment(draw(fs.ids()))
        return Sent("GET", f"/{compartment}/{id}/{query.type}?{query.query}", headers)
    params = draw(
        st.lists(
            st.sampled_from(["_count", "_since", "_cursor", "_format", "name"]).flatmap(
                lambda n: fr.SPECIAL_VALUES.get(n, fs.TEXT).map(lambda v: (n, v))
            ),
            max_size=3,
        )
    )
    text = "&".join(f"{fr.encode(n)}={fr.encode(v)}" for n, v in params)
    base = draw(st.sampled_from(["", f"/{query.type}", f"/{query.type}/p1", "/Patient/p1"]))
    return Sent("GET", f"{base}/_history?{text}", headers)


@st.composite
def instance_requests(draw: st.DrawFn) -> Sent:
    """read, vread, delete, patch (JSON and FHIRPath), instance $validate: ids and versions."""
    type = draw(st.sampled_from(["Patient", "Observation", "CarePlan", "Organization", "Nope"]))
    id = fs.path_segment(draw(fs.ids()))
    how = draw(st.sampled_from(["read", "vread", "delete", "patch", "validate", "conditional"]))
    headers = draw(fr.headers(body=how in ("patch", "conditional")))
    types = (type,) if type != "Nope" else ()
    if how == "read":
        return Sent("GET", f"/{type}/{id}", headers)
    if how == "vread":
        version = fs.path_segment(draw(fs.version_ids()))
        return Sent("GET", f"/{type}/{id}/_history/{version}", headers)
    if how == "validate":
        mode = draw(st.sampled_from(["", "?mode=delete", "?mode=update", "?mode=x", "?profile=x"]))
        return Sent("GET", f"/{type}/{id}/$validate{mode}", headers)
    if how == "delete":
        if draw(st.booleans()):
            return Sent("DELETE", f"/{type}/{id}", headers, types=types)
        query = draw(fr.search_query(st.just(type if type != "Nope" else "Patient"))).query
        return Sent("DELETE", f"/{type}?{query}", headers, types=types)
    fhirpath = draw(st.booleans())
    document = draw(fr.fhirpath_patch() if fhirpath else fr.json_patch())
    media = b"application/fhir+json" if fhirpath else b"application/json-patch+json"
    headers.setdefault("Content-Type", media)
    body = draw(fs.body_bytes(st.just(document)))
    if how == "conditional":
        query = draw(fr.search_query(st.just(type if type != "Nope" else "Patient"))).query
        return Sent("PATCH", f"/{type}?{query}", headers, body, types=types)
    return Sent("PATCH", f"/{type}/{id}", headers, body, types=types)


@st.composite
def bundles(draw: st.DrawFn) -> Sent:
    headers = {**JSON, **draw(fr.headers(body=True))}
    body = draw(fs.body_bytes(fr.bundle()))
    types = ("Patient", "Observation", "CarePlan", "Organization")
    return Sent("POST", draw(st.sampled_from(["", "/"])), headers, body, types=types)


# ---------------------------------------------------------------- the tests


@share(0.3)
@given(sent=writes())
def test_generated_writes_are_answered_and_refusals_change_nothing(
    harness: Harness, sent: Sent
) -> None:
    harness.check(sent, write=sent.method != "POST" or "$validate" not in sent.url)


@share(0.3)
@given(sent=searches())
def test_generated_searches_are_answered(harness: Harness, sent: Sent) -> None:
    harness.check(sent, write=False)


@share(0.2)
@given(sent=instance_requests())
def test_generated_instance_requests_are_answered_and_refusals_change_nothing(
    harness: Harness, sent: Sent
) -> None:
    harness.check(sent, write=sent.method in ("PATCH", "DELETE"))


@share(0.2)
@given(sent=bundles())
def test_generated_bundles_are_answered_and_refusals_change_nothing(
    harness: Harness, sent: Sent
) -> None:
    harness.check(sent, write=True)

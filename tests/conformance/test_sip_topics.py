"""The SIP SubscriptionTopics in `profiles/topics/`, as the Subscriptions R5 Backport IG writes
them for R4: `Basic` with code `fhir-types#SubscriptionTopic` and the R5 elements as the
cross-version extensions `http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.*`.

Each topic is loaded and published (`GET Basic?code=…`), validates against R4, names existing
resource types, and only search parameters that exist for them (R4 or `profiles/`): in
`canFilterBy`, in `queryCriteria` (which must parse as a search) and in `notificationShape`
includes.  Its FHIRPath criteria give the intended verdict on sample writes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from fhirpathpy import evaluate
from fhirpathpy.models import models

from fhir_server.config import MAPPINGS_DIR, PROFILES_DIR
from fhir_server.resource_types import resource_types
from fhir_server.search.parser import parse_search
from fhir_server.search.registry import (
    search_params,
    use_codesystems,
    use_custom,
    use_valuesets,
)
from fhir_server.validation.conformance import load_conformance
from tests.conftest import TEST_PROFILES

SIP = "http://sip-fhir.se/fhir"
X = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."
SD = "http://hl7.org/fhir/StructureDefinition/"
TOPIC_CODE = "http://hl7.org/fhir/fhir-types|SubscriptionTopic"
RULE_ID = re.compile(r"\bR-(?:SIP|DIS|MTG|ACC|IND)-\d\d\b")
TOPICS = {  # name -> resource types it is triggered by
    "admission-notice": {"Communication"},
    "ready-for-discharge": {"Communication", "Encounter"},
    "discharge": {"Communication", "Encounter"},
    "invitation": {"Appointment"},
    "sip-plan": {"CarePlan"},
    "consent-withdrawn": {"Consent"},
    "obligation-overdue": {"Task"},
}


@pytest.fixture(autouse=True, scope="module")
def registry() -> None:
    """The search registry as the app sets it up (custom parameters, local value sets), also
    for the tests here that run without the `client` fixture."""
    loaded = load_conformance([PROFILES_DIR, MAPPINGS_DIR, TEST_PROFILES])
    use_custom(loaded.of_kind("SearchParameter"))
    use_valuesets(loaded.valueset)
    use_codesystems(loaded.hierarchy)


def topic(name: str) -> dict[str, Any]:
    path = PROFILES_DIR / "topics" / f"Basic-sip-topic-{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def elements(resource: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The cross-version extensions for one SubscriptionTopic element."""
    return [e for e in resource.get("extension", []) if e["url"] == X + name]


def parts(extension: dict[str, Any], name: str) -> list[Any]:
    """Values of the sub-extensions called `name` (value[x] or the nested extension)."""
    out = []
    for sub in extension.get("extension", []):
        if sub["url"] == name:
            values = [v for k, v in sub.items() if k.startswith("value")]
            out.append(values[0] if values else sub)
    return out


def one(extension: dict[str, Any], name: str) -> Any:
    found = parts(extension, name)
    assert len(found) == 1, (name, extension)
    return found[0]


def type_of(uri: str) -> str:
    kind = uri.removeprefix(SD)
    assert kind in resource_types(), uri
    return kind


def test_every_topic_file_is_loaded() -> None:
    loaded = load_conformance([PROFILES_DIR])
    topics = {r["id"] for r in loaded.of_kind("Basic")}
    assert topics == {f"sip-topic-{name}" for name in TOPICS}
    for name in TOPICS:
        assert loaded.by_url[f"{SIP}/SubscriptionTopic/{name}"]["id"] == f"sip-topic-{name}"


async def test_topics_are_published(client: httpx.AsyncClient) -> None:
    response = await client.get("/Basic", params={"code": TOPIC_CODE, "_count": "100"})
    assert response.status_code == 200
    published = {e["resource"]["id"]: e["resource"] for e in response.json().get("entry", [])}
    assert set(published) == {f"sip-topic-{name}" for name in TOPICS}
    for name in TOPICS:
        stored = published[f"sip-topic-{name}"]
        assert {k: v for k, v in stored.items() if k != "meta"} == topic(name)


@pytest.mark.parametrize("name", sorted(TOPICS))
async def test_topic_validates(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/Basic/$validate", json=topic(name))
    assert response.status_code == 200
    issues = response.json()["issue"]
    assert [i for i in issues if i["severity"] in ("error", "fatal")] == []


@pytest.mark.parametrize("name", sorted(TOPICS))
def test_topic_metadata(name: str) -> None:
    resource = topic(name)
    assert resource["id"] == f"sip-topic-{name}"
    assert resource["code"]["coding"] == [
        {"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}
    ]
    single = {
        key: [e for e in elements(resource, key)]
        for key in ("url", "version", "name", "title", "date", "publisher", "description")
    }
    assert all(len(found) == 1 for found in single.values()), single
    assert single["url"][0]["valueUri"] == f"{SIP}/SubscriptionTopic/{name}"
    assert single["version"][0]["valueString"] == "0.1.0"
    assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", single["name"][0]["valueString"])
    assert RULE_ID.search(single["description"][0]["valueMarkdown"])
    status = [e for e in resource["modifierExtension"] if e["url"] == X + "status"]
    assert [s["valueCode"] for s in status] == ["draft"]


@pytest.mark.parametrize("name", sorted(TOPICS))
def test_topic_names_existing_types_and_parameters(name: str) -> None:
    resource = topic(name)
    triggered = set()
    for trigger in elements(resource, "resourceTrigger"):
        kind = type_of(one(trigger, "resource"))
        triggered.add(kind)
        assert one(trigger, "description")
        assert set(parts(trigger, "supportedInteraction")) <= {"create", "update", "delete"}
        for criteria in parts(trigger, "queryCriteria"):
            for side in ("previous", "current"):
                for query in parts(criteria, side):
                    pairs = [tuple(p.split("=", 1)) for p in query.split("&")]
                    for param, _ in pairs:
                        assert param.split(":")[0] in search_params(kind), (name, param)
                    parse_search(kind, pairs)  # a search the server accepts as it is
    for event in elements(resource, "eventTrigger"):
        triggered.add(type_of(one(event, "resource")))
        assert one(event, "event")["text"]
    assert triggered == TOPICS[name]

    filters = elements(resource, "canFilterBy")
    assert filters, "a topic offers filters"
    for by in filters:
        kind = one(by, "resource")
        assert kind in triggered, (name, kind)
        param = one(by, "filterParameter")
        assert param in search_params(kind), (name, kind, param)
        for definition in parts(by, "filterDefinition"):
            assert search_params(kind)[param].url == definition
        assert set(parts(by, "comparator")) <= {"eq", "gt", "lt", "ge", "le", "sa", "eb"}

    for shape in elements(resource, "notificationShape"):
        kind = one(shape, "resource")
        assert kind in triggered
        for include in parts(shape, "include") + parts(shape, "revInclude"):
            source, param = include.split(":")
            assert search_params(source)[param].type == "reference", include


def test_custom_filters_are_used() -> None:
    """Every SIP SearchParameter a workflow needs for filtering appears in some topic."""
    used = {
        one(by, "filterParameter") for name in TOPICS for by in elements(topic(name), "canFilterBy")
    }
    assert {
        "participant-organization",
        "deadline",
        "follow-up-date",
        "follow-up-responsible",
        "ready-for-discharge",
    } <= used


# -- the FHIRPath criteria, on sample writes ---------------------------------------------------

MSG = f"{SIP}/CodeSystem/sip-message-type"


def notice(code: str, status: str = "completed") -> dict[str, Any]:
    category = [{"coding": [{"system": MSG, "code": code}]}]
    return {"resourceType": "Communication", "status": status, "category": category}


def consent(status: str) -> dict[str, Any]:
    return {"resourceType": "Consent", "id": "c", "status": status}


def stay(status: str, ready: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Encounter", "id": "e", "status": status}
    if ready:
        url = f"{SIP}/StructureDefinition/sip-ready-for-discharge"
        resource["extension"] = [{"url": url, "valueDateTime": ready}]
    return resource


def obligation(status: str, deadline: str) -> dict[str, Any]:
    code = {"coding": [{"system": f"{SIP}/CodeSystem/sip-obligation-type", "code": "uppratta-sip"}]}
    period = {"period": {"end": deadline}}
    return {"resourceType": "Task", "status": status, "code": code, "restriction": period}


def meeting(purpose: bool) -> dict[str, Any]:
    system = f"{SIP}/CodeSystem/sip-meeting-purpose" if purpose else "urn:other"
    return {"resourceType": "Appointment", "serviceType": [{"coding": [{"system": system}]}]}


SIP_PLAN = {
    "resourceType": "CarePlan",
    "category": [
        {
            "coding": [
                {"system": "https://fhir.inera.se/CodeSystem/typeofcareplan-cs", "code": "SIP"}
            ]
        }
    ],
}

CASES = [  # topic, trigger type, previous, current, expected
    ("admission-notice", "Communication", None, notice("inskrivningsmeddelande"), True),
    (
        "admission-notice",
        "Communication",
        None,
        notice("inskrivningsmeddelande", "preparation"),
        False,
    ),
    ("admission-notice", "Communication", None, notice("utskrivningsklar"), False),
    ("ready-for-discharge", "Communication", None, notice("utskrivningsklar"), True),
    (
        "ready-for-discharge",
        "Encounter",
        stay("in-progress"),
        stay("in-progress", "2026-11-20"),
        True,
    ),
    ("ready-for-discharge", "Encounter", None, stay("in-progress", "2026-11-20"), True),
    (
        "ready-for-discharge",
        "Encounter",
        stay("in-progress", "2026-11-20"),
        stay("in-progress", "2026-11-20"),
        False,
    ),
    (
        "ready-for-discharge",
        "Encounter",
        stay("in-progress", "2026-11-19"),
        stay("in-progress", "2026-11-20"),
        True,
    ),
    ("ready-for-discharge", "Encounter", None, stay("in-progress"), False),
    ("discharge", "Communication", None, notice("utskrivningsmeddelande"), True),
    ("discharge", "Encounter", stay("in-progress"), stay("finished"), True),
    ("discharge", "Encounter", stay("finished"), stay("finished"), False),
    ("invitation", "Appointment", None, meeting(True), True),
    ("invitation", "Appointment", meeting(True), None, True),
    ("invitation", "Appointment", None, meeting(False), False),
    ("sip-plan", "CarePlan", None, SIP_PLAN, True),
    ("sip-plan", "CarePlan", None, {"resourceType": "CarePlan"}, False),
    ("consent-withdrawn", "Consent", consent("active"), consent("inactive"), True),
    ("consent-withdrawn", "Consent", None, consent("rejected"), True),
    ("consent-withdrawn", "Consent", consent("inactive"), consent("inactive"), False),
    ("consent-withdrawn", "Consent", consent("proposed"), consent("active"), False),
    ("obligation-overdue", "Task", None, obligation("requested", "2020-01-01T12:00:00Z"), True),
    ("obligation-overdue", "Task", None, obligation("completed", "2020-01-01T12:00:00Z"), False),
    ("obligation-overdue", "Task", None, obligation("requested", "2999-01-01T12:00:00Z"), False),
]


@pytest.mark.parametrize(("name", "kind", "previous", "current", "expected"), CASES)
def test_fhirpath_criteria(
    name: str, kind: str, previous: Any, current: Any, expected: bool
) -> None:
    """R-DIS-01, R-DIS-08, R-DIS-12, R-SIP-04, R-SIP-10, R-DIS-05: each topic fires on the write
    that matters and not on others."""
    [trigger] = [
        t for t in elements(topic(name), "resourceTrigger") if one(t, "resource") == SD + kind
    ]
    expression = one(trigger, "fhirPathCriteria")
    env = {"previous": previous or {}, "current": current or {}}
    result = evaluate(current or previous, expression, env, models["r4"])
    assert result == [expected], (expression, result)


def test_overdue_query_is_a_valid_search() -> None:
    """R-DIS-05, R-IND-01: the query the scheduler of `obligation-overdue` runs is one the server
    answers (with `[now]` filled in)."""
    [description] = elements(topic("obligation-overdue"), "description")
    [query] = re.findall(r"`Task\?([^`]+)`", description["valueMarkdown"])
    query = query.replace("[now]", "2026-11-23T12:00:00Z")
    pairs = [tuple(p.split("=", 1)) for p in query.split("&")]
    assert {name for name, _ in pairs} == {"code:in", "status", "deadline"}
    parse_search("Task", pairs)


async def test_topics_are_read_at_their_canonical_url(client: httpx.AsyncClient) -> None:
    """Each topic is found by its canonical URL (SearchParameter sip-topic-url on Basic)."""
    for name in ("admission-notice", "obligation-overdue"):
        url = f"http://sip-fhir.se/fhir/SubscriptionTopic/{name}"
        found = (await client.get("/Basic", params={"url": url})).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == [f"sip-topic-{name}"]

"""Notification Bundles as the Backport IG (STU 1.1) shows them for R4.

A `history` Bundle whose first entry is the status `Parameters`
(`backport-subscription-status-r4`), requested as `GET [base]/Subscription/[id]/$status`;
then, by payload content, nothing (`empty`), entries with only fullUrl, request and response
(`id-only`), or the resources themselves (`full-resource`), plus the topic's
notificationShape context. `$status` is a searchset of `query-status` Parameters, `$events`
a `query-event` notification. Every Bundle is valid R4.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from fhir_server.config import MAPPINGS_DIR, PROFILES_DIR, Settings
from fhir_server.search.registry import use_codesystems, use_custom, use_valuesets
from fhir_server.storage.port import Notification, SubscriptionState, TopicEvent
from fhir_server.subscriptions import notifications as bundles
from fhir_server.subscriptions.model import SubscriptionSpec, parse_subscription
from fhir_server.subscriptions.topics import Topics, load_topics, parse_topic
from fhir_server.validation.conformance import load_conformance
from fhir_server.validation.validator import Validator
from tests.conftest import TEST_PROFILES
from tests.sip_case import example

BASE = "https://fhir.region.se/fhir"
SIP = "http://sip-fhir.se/fhir"
TOPIC = f"{SIP}/SubscriptionTopic/admission-notice"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
NOTIFICATION_PROFILE = BACKPORT + "backport-subscription-notification-r4"
NOW = "2026-11-20T12:00:00.000000Z"
AT1, AT2, AT3 = (f"2026-11-20T10:0{i}:00.000000Z" for i in (1, 2, 3))
DIRECTORIES = [PROFILES_DIR, MAPPINGS_DIR, TEST_PROFILES]


@pytest.fixture(scope="module")
def topics() -> Topics:
    conformance = load_conformance(DIRECTORIES)
    use_custom(conformance.of_kind("SearchParameter"))
    use_valuesets(conformance.valueset)
    use_codesystems(conformance.hierarchy)
    return load_topics(conformance)


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.from_directories(DIRECTORIES)


def spec(topics: Topics, content: str = "id-only", status: str = "active") -> SubscriptionSpec:
    resource = {
        "resourceType": "Subscription",
        "id": "kommunen",
        "status": "requested",
        "reason": "Inskrivningsmeddelanden till kommunen",
        "criteria": TOPIC,
        "channel": {
            "type": "rest-hook",
            "endpoint": "https://mottagare.lulea.se/hook",
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]
            },
        },
    }
    return replace(parse_subscription(resource, topics, Settings()), status=status)


def state(number: int = 0, error: str | None = None) -> SubscriptionState:
    return SubscriptionState("kommunen", TOPIC, 10, number, 0, 0, None, error, None)


def note(number: int, id: str, version: int, interaction: str, at: str) -> Notification:
    event = TopicEvent(TOPIC, "Communication", id, version, interaction, at, seq=10 + number)  # type: ignore[arg-type]
    return Notification("kommunen", number, event)


def notice(id: str, version: int) -> dict[str, Any]:
    resource = example("Communication-admission-notice")
    resource["id"] = id
    resource["meta"] = {"versionId": str(version), "lastUpdated": AT1}
    return resource


def patient() -> dict[str, Any]:
    return example("Patient-tolvan-tolvansson") | {"meta": {"versionId": "3"}}


NOTES = [
    note(4, "n1", 1, "create", AT1),
    note(5, "n1", 2, "update", AT2),
    note(6, "n2", 4, "delete", AT3),
]
RESOURCES = {
    ("Communication", "n1", 1): notice("n1", 1),
    ("Communication", "n1", 2): notice("n1", 2),
}
CONTEXT = {("Communication", "n1", 1): [patient()]}


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return bundle["entry"][0]["resource"]


def parameters(bundle_or_status: dict[str, Any]) -> list[tuple[str, Any]]:
    status = bundle_or_status
    if status["resourceType"] == "Bundle":
        status = status_of(status)
    return [
        (p["name"], p.get("part", next((v for k, v in p.items() if k.startswith("value")), None)))
        for p in status["parameter"]
    ]


def events(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Each notification-event's parts as name -> value (additional-context as a list)."""
    out = []
    for name, parts in parameters(bundle):
        if name != "notification-event":
            continue
        found: dict[str, Any] = {}
        for part in parts:
            value = next(v for k, v in part.items() if k.startswith("value"))
            if part["name"] == "additional-context":
                found.setdefault("additional-context", []).append(value)
            else:
                found[part["name"]] = value
        out.append(found)
    return out


def assert_valid(validator: Validator, bundle: dict[str, Any]) -> None:
    issues = validator.validate(bundle)
    assert [i for i in issues if i.severity in ("error", "fatal")] == []


def assert_notification(bundle: dict[str, Any], type: str) -> None:
    """The shape every notification shares: history Bundle, status first, read as $status."""
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "history"
    assert bundle["meta"]["profile"] == [NOTIFICATION_PROFILE]
    assert bundle["timestamp"] == NOW
    first = bundle["entry"][0]
    status = first["resource"]
    assert status["resourceType"] == "Parameters"
    assert status["meta"]["profile"] == [STATUS_PROFILE]
    assert first["fullUrl"] == f"urn:uuid:{status['id']}"
    assert first["request"] == {"method": "GET", "url": f"{BASE}/Subscription/kommunen/$status"}
    assert first["response"] == {"status": "200 OK"}
    assert ("type", type) in parameters(bundle)


def test_handshake(topics: Topics, validator: Validator) -> None:
    bundle = bundles.handshake(spec(topics, status="requested"), None, BASE, now=NOW)
    assert_notification(bundle, "handshake")
    assert parameters(bundle) == [
        ("subscription", {"reference": f"{BASE}/Subscription/kommunen"}),
        ("topic", TOPIC),
        ("status", "requested"),
        ("type", "handshake"),
        ("events-since-subscription-start", "0"),
    ]
    assert len(bundle["entry"]) == 1
    assert_valid(validator, bundle)


def test_heartbeat_counts_the_events_so_far(topics: Topics, validator: Validator) -> None:
    bundle = bundles.heartbeat(spec(topics), state(7), BASE, now=NOW)
    assert_notification(bundle, "heartbeat")
    assert ("events-since-subscription-start", "7") in parameters(bundle)
    assert ("status", "active") in parameters(bundle)
    assert events(bundle) == []
    assert len(bundle["entry"]) == 1
    assert_valid(validator, bundle)


def test_empty_names_no_resource(topics: Topics, validator: Validator) -> None:
    bundle = bundles.event_notification(
        spec(topics, "empty"), state(6), NOTES, RESOURCES, BASE, context=CONTEXT, now=NOW
    )
    assert_notification(bundle, "event-notification")
    assert [name for name, _ in parameters(bundle)] == [
        "subscription",
        "status",
        "type",
        "events-since-subscription-start",
        "notification-event",
        "notification-event",
        "notification-event",
    ]
    assert events(bundle) == [
        {"event-number": "4", "timestamp": AT1},
        {"event-number": "5", "timestamp": AT2},
        {"event-number": "6", "timestamp": AT3},
    ]
    assert len(bundle["entry"]) == 1
    assert_valid(validator, bundle)


def test_id_only_gives_urls_not_resources(topics: Topics, validator: Validator) -> None:
    bundle = bundles.event_notification(
        spec(topics, "id-only"), state(6), NOTES, RESOURCES, BASE, context=CONTEXT, now=NOW
    )
    assert_notification(bundle, "event-notification")
    assert ("topic", TOPIC) in parameters(bundle)
    assert ("events-since-subscription-start", "6") in parameters(bundle)
    n1, n2 = f"{BASE}/Communication/n1", f"{BASE}/Communication/n2"
    person = f"{BASE}/Patient/tolvan-tolvansson"
    assert events(bundle) == [
        {
            "event-number": "4",
            "timestamp": AT1,
            "focus": {"reference": n1},
            "additional-context": [{"reference": person}],
        },
        {"event-number": "5", "timestamp": AT2, "focus": {"reference": n1}},
        {"event-number": "6", "timestamp": AT3, "focus": {"reference": n2}},
    ]
    assert bundle["entry"][1:] == [
        {
            "fullUrl": n1,
            "request": {"method": "POST", "url": "Communication"},
            "response": {"status": "201 Created", "etag": 'W/"1"', "lastModified": AT1},
        },
        {
            "fullUrl": person,
            "request": {"method": "GET", "url": "Patient/tolvan-tolvansson"},
            "response": {"status": "200 OK", "etag": 'W/"3"'},
        },
        {
            "fullUrl": n1,
            "request": {"method": "PUT", "url": "Communication/n1"},
            "response": {"status": "200 OK", "etag": 'W/"2"', "lastModified": AT2},
        },
        {
            "fullUrl": n2,
            "request": {"method": "DELETE", "url": "Communication/n2"},
            "response": {"status": "204 No Content", "etag": 'W/"4"', "lastModified": AT3},
        },
    ]
    assert_valid(validator, bundle)


def test_full_resource_carries_the_versions(topics: Topics, validator: Validator) -> None:
    bundle = bundles.event_notification(
        spec(topics, "full-resource"), state(6), NOTES, RESOURCES, BASE, context=CONTEXT, now=NOW
    )
    assert_notification(bundle, "event-notification")
    entries = bundle["entry"][1:]
    assert [e.get("resource") for e in entries] == [
        RESOURCES[("Communication", "n1", 1)],
        patient(),
        RESOURCES[("Communication", "n1", 2)],
        None,  # a delete has no content: request and response say what happened
    ]
    assert [e["request"]["method"] for e in entries] == ["POST", "GET", "PUT", "DELETE"]
    assert_valid(validator, bundle)


def test_a_focus_not_at_hand_is_named_without_content(topics: Topics) -> None:
    only = [note(1, "gone", 1, "create", AT1)]
    bundle = bundles.event_notification(spec(topics, "full-resource"), state(1), only, {}, BASE)
    [entry] = bundle["entry"][1:]
    assert "resource" not in entry
    assert entry["fullUrl"] == f"{BASE}/Communication/gone"


def test_context_shared_by_events_is_one_entry(topics: Topics) -> None:
    context = {key: [patient()] for key in RESOURCES}
    bundle = bundles.event_notification(
        spec(topics, "full-resource"), state(5), NOTES[:2], RESOURCES, BASE, context=context
    )
    urls = [e["fullUrl"] for e in bundle["entry"][1:]]
    assert urls.count(f"{BASE}/Patient/tolvan-tolvansson") == 1
    assert [len(e["additional-context"]) for e in events(bundle)] == [1, 1]


def test_events_since_start_never_below_the_batch(topics: Topics) -> None:
    """A state read before the fan-out of these events still counts them."""
    bundle = bundles.event_notification(spec(topics), state(2), NOTES, RESOURCES, BASE)
    assert ("events-since-subscription-start", "6") in parameters(bundle)


def test_an_erring_subscription_reports_its_error(topics: Topics) -> None:
    failing = spec(topics, status="error")
    bundle = bundles.heartbeat(failing, state(3, "endpoint answered 503"), BASE)
    assert ("status", "error") in parameters(bundle)
    assert ("error", {"text": "endpoint answered 503"}) in parameters(bundle)
    healthy = bundles.heartbeat(spec(topics), state(3, "an old error"), BASE)
    assert "error" not in [name for name, _ in parameters(healthy)]


def test_status_bundle_is_a_searchset(topics: Topics, validator: Validator) -> None:
    bundle = bundles.status_bundle(
        [(spec(topics), state(4)), (spec(topics, "empty", "error"), state(2, "timeout"))],
        BASE,
        now=NOW,
    )
    assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle", "searchset", 2)
    first, second = (e["resource"] for e in bundle["entry"])
    assert [e["search"] for e in bundle["entry"]] == [{"mode": "match"}] * 2
    assert [e["fullUrl"] for e in bundle["entry"]] == [
        f"urn:uuid:{first['id']}",
        f"urn:uuid:{second['id']}",
    ]
    assert parameters(first) == [
        ("subscription", {"reference": f"{BASE}/Subscription/kommunen"}),
        ("topic", TOPIC),
        ("status", "active"),
        ("type", "query-status"),
        ("events-since-subscription-start", "4"),
    ]
    assert ("error", {"text": "timeout"}) in parameters(second)
    assert_valid(validator, bundle)
    assert "entry" not in bundles.status_bundle([], BASE)


def test_events_bundle_is_a_query_event(topics: Topics, validator: Validator) -> None:
    bundle = bundles.events_bundle(spec(topics), state(6), NOTES, RESOURCES, BASE, now=NOW)
    assert_notification(bundle, "query-event")
    assert [e["event-number"] for e in events(bundle)] == ["4", "5", "6"]
    assert_valid(validator, bundle)


def test_events_bundle_takes_the_content_hint(topics: Topics) -> None:
    bundle = bundles.events_bundle(
        spec(topics, "id-only"), state(6), NOTES, RESOURCES, BASE, content="empty"
    )
    assert all("focus" not in e for e in events(bundle))
    assert "topic" not in [name for name, _ in parameters(bundle)]
    assert len(bundle["entry"]) == 1
    full = bundles.events_bundle(
        spec(topics, "empty"), state(6), NOTES, RESOURCES, BASE, content="full-resource"
    )
    assert full["entry"][1]["resource"] == RESOURCES[("Communication", "n1", 1)]


def test_shape_includes_are_the_focus_references(topics: Topics) -> None:
    topic = topics.get(TOPIC)
    assert topic is not None
    found = bundles.shape_includes(
        topic, "Communication", example("Communication-admission-notice")
    )
    assert found == [
        ("Patient", "tolvan-tolvansson"),
        ("Encounter", "inpatient-stay"),
        ("Organization", "sunderby-medical-ward"),
    ]
    assert bundles.shape_includes(topic, "Encounter", example("Encounter-inpatient-stay")) == []


def test_shape_rev_includes_are_searches_for_the_focus() -> None:
    x = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."
    shape = {
        "url": x + "notificationShape",
        "extension": [
            {"url": "resource", "valueUri": "Encounter"},
            {"url": "revInclude", "valueString": "Communication:encounter"},
            {"url": "revInclude", "valueString": "Task:focus:Patient"},
        ],
    }
    trigger = {
        "url": x + "resourceTrigger",
        "extension": [{"url": "resource", "valueUri": "Encounter"}],
    }
    basic = {
        "resourceType": "Basic",
        "id": "t",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}]
        },
        "extension": [{"url": x + "url", "valueUri": "http://example.org/t"}, trigger, shape],
    }
    topic = parse_topic(basic)
    assert bundles.shape_rev_includes(topic, "Encounter", "e1") == [
        ("Communication", "encounter", "Encounter/e1")
    ]

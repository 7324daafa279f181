"""SubscriptionTopics as the server reads them, and the verdicts it gives on writes.

`load_topics` reads the `Basic` SubscriptionTopics of `profiles/topics/` (R5 elements as the
Backport IG's cross-version extensions); `events_for` decides which topics a write fires:
the trigger's interaction, then its `queryCriteria` (evaluated in memory with the search
semantics: each side given is a test, a create's previous side is `resultForCreate`, a
delete's current side `resultForDelete`, `requireBoth` ANDs them), then its
`fhirPathCriteria` (`%previous`, `%current`); both criteria must hold. Writes through the
HTTP API append what fires to the outbox in the same unit of work.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from fhir_server.config import MAPPINGS_DIR, PROFILES_DIR, Settings
from fhir_server.search.registry import use_codesystems, use_custom, use_valuesets
from fhir_server.sip.clock import FixedClock
from fhir_server.storage.port import ResourceVersion, Storage, TopicEvent
from fhir_server.subscriptions import matching
from fhir_server.subscriptions.matching import events_for, filters_match
from fhir_server.subscriptions.model import parse_subscription
from fhir_server.subscriptions.topics import Topics, load_topics, parse_topic
from fhir_server.validation.conformance import ConformanceError, load_conformance
from tests.conftest import TEST_PROFILES
from tests.sip_case import case_client, example

SIP = "http://sip-fhir.se/fhir"
T = f"{SIP}/SubscriptionTopic/"
X = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."
AT = "2026-11-20T10:00:00.000000Z"
MEETING_PURPOSE = f"{SIP}/CodeSystem/sip-meeting-purpose"
READY = f"{SIP}/StructureDefinition/sip-ready-for-discharge"


@pytest.fixture(autouse=True, scope="module")
def loaded() -> Topics:
    """The topics, with the search registry as the app sets it up (custom parameters and
    local value sets, which the criteria and filters use)."""
    conformance = load_conformance([PROFILES_DIR, MAPPINGS_DIR, TEST_PROFILES])
    use_custom(conformance.of_kind("SearchParameter"))
    use_valuesets(conformance.valueset)
    use_codesystems(conformance.hierarchy)
    return load_topics(conformance)


def version(type: str, id: str, number: int = 1, deleted: bool = False) -> ResourceVersion:
    method = "DELETE" if deleted else "POST" if number == 1 else "PUT"
    return ResourceVersion(type, id, number, AT, method, None if deleted else b"{}")


def fired(
    topics: Topics, type: str, previous: dict[str, Any] | None, current: dict[str, Any] | None
) -> list[str]:
    """The topic names a write fires (a create when previous is None, a delete when current
    is None)."""
    resource = current or previous
    assert resource is not None
    number = 1 if previous is None else 2
    made = version(type, resource.get("id", "x"), number, deleted=current is None)
    return sorted(
        e.topic.removeprefix(T) for e in events_for(topics, type, previous, current, made)
    )


# -- loading -----------------------------------------------------------------------------


def test_every_sip_topic_is_loaded_by_url(loaded: Topics) -> None:
    assert sorted(t.url.removeprefix(T) for t in loaded) == [
        "admission-notice",
        "consent-withdrawn",
        "discharge",
        "invitation",
        "obligation-overdue",
        "ready-for-discharge",
        "sip-plan",
    ]
    topic = loaded.get(T + "admission-notice")
    assert topic is not None
    assert (topic.id, topic.version, topic.name, topic.status) == (
        "sip-topic-admission-notice",
        "0.1.0",
        "AdmissionNotice",
        "draft",
    )
    assert loaded.get(T + "nothing") is None


def test_topics_by_triggering_type(loaded: Topics) -> None:
    def names(type: str) -> list[str]:
        return sorted(t.url.removeprefix(T) for t in loaded.triggered_by(type))

    assert names("Communication") == ["admission-notice", "discharge", "ready-for-discharge"]
    assert names("Encounter") == ["discharge", "ready-for-discharge"]
    assert names("Task") == ["obligation-overdue"]
    assert names("Patient") == []
    assert loaded.triggers("Patient") == []


def test_resource_trigger_is_read(loaded: Topics) -> None:
    topic = loaded.get(T + "consent-withdrawn")
    assert topic is not None
    [trigger] = topic.triggers
    assert trigger.resource == "Consent"  # from http://hl7.org/fhir/StructureDefinition/Consent
    assert trigger.interactions == {"create", "update"}
    assert trigger.query is not None
    assert trigger.query.previous == "status=draft,proposed,active"
    assert trigger.query.current == "status=inactive,rejected"
    assert trigger.query.result_for_create == "test-passes"
    assert trigger.query.result_for_delete == "test-fails"
    assert trigger.query.require_both is True
    assert trigger.fhirpath is not None and trigger.fhirpath.startswith("(%current.status")
    invitation = loaded.get(T + "invitation")
    assert invitation is not None
    assert invitation.triggers[0].interactions == {"create", "update", "delete"}
    overdue = loaded.get(T + "obligation-overdue")
    assert overdue is not None and overdue.triggers[0].query is None


def test_can_filter_by_and_shape_are_read(loaded: Topics) -> None:
    consent = loaded.get(T + "consent-withdrawn")
    invitation = loaded.get(T + "invitation")
    notice = loaded.get(T + "admission-notice")
    assert consent is not None and invitation is not None and notice is not None
    [category] = consent.filters("category", "Consent")
    assert (category.modifiers, category.comparators) == ({"in"}, frozenset())
    [date] = invitation.filters("date")
    assert date.comparators == {"eq", "gt", "lt", "ge", "le"}
    [organisation] = invitation.filters("participant-organization")
    assert organisation.definition == f"{SIP}/SearchParameter/sip-participant-organization"
    assert notice.filters("recipient", "Encounter") == []
    assert [f.parameter for f in notice.can_filter_by] == [
        "recipient",
        "sender",
        "patient",
        "encounter",
    ]
    shape = notice.shape("Communication")
    assert shape is not None
    assert shape.include == (
        "Communication:subject",
        "Communication:encounter",
        "Communication:sender",
    )
    assert shape.rev_include == ()
    assert notice.shape("Encounter") is None


def basic(*elements: dict[str, Any], url: str = T + "x") -> dict[str, Any]:
    """A Basic SubscriptionTopic with these cross-version elements (name -> value/parts)."""
    return {
        "resourceType": "Basic",
        "id": "topic",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}]
        },
        "extension": [{"url": X + "url", "valueUri": url}, *elements],
    }


def trigger(resource: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": X + "resourceTrigger",
        "extension": [{"url": "resource", "valueUri": resource}, *parts],
    }


def query(**parts: Any) -> dict[str, Any]:
    keys = {str: "valueString", bool: "valueBoolean"}
    extension = [
        {"url": name, ("valueCode" if name.startswith("result") else keys[type(v)]): v}
        for name, v in parts.items()
    ]
    return {"url": "queryCriteria", "extension": extension}


def test_a_trigger_without_supported_interaction_takes_every_one() -> None:
    topic = parse_topic(basic(trigger("Patient")))
    assert topic.triggers[0].interactions == {"create", "update", "delete"}


@pytest.mark.parametrize(
    "broken",
    [
        basic(trigger("NoSuchType")),
        basic(
            trigger(
                "http://hl7.org/fhir/StructureDefinition/Patient",
                {"url": "supportedInteraction", "valueCode": "read"},
            )
        ),
        basic(trigger("Patient", query(resultForCreate="maybe"))),
        basic(
            {"url": X + "canFilterBy", "extension": [{"url": "resource", "valueUri": "Patient"}]}
        ),
        {**basic(), "extension": []},
    ],
    ids=["type", "interaction", "result", "filter-parameter", "url"],
)
def test_a_broken_topic_is_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(ConformanceError):
        parse_topic(broken)


def test_a_topic_url_is_unique() -> None:
    with pytest.raises(ConformanceError, match="twice"):
        Topics([parse_topic(basic()), parse_topic(basic())])


# -- the SIP topics on sample writes ---------------------------------------------------------


def notice(code: str, status: str = "completed") -> dict[str, Any]:
    resource = example("Communication-admission-notice")
    resource["status"] = status
    resource["category"][1]["coding"][0]["code"] = code
    return resource


def meeting(purpose: str | None = "sip") -> dict[str, Any]:
    resource = example("Appointment-sip-meeting")
    if purpose is None:
        resource["serviceType"] = [{"coding": [{"system": "urn:other", "code": "x"}]}]
    else:
        resource["serviceType"][0]["coding"][0]["code"] = purpose
    return resource


def stay(status: str, ready: str | None = None) -> dict[str, Any]:
    resource = example("Encounter-inpatient-stay")
    resource["status"] = status
    resource["extension"] = [e for e in resource["extension"] if e["url"] != READY]
    if ready is not None:
        resource["extension"].append({"url": READY, "valueDateTime": ready})
    return resource


def consent(status: str) -> dict[str, Any]:
    return example("Consent-sip") | {"status": status}


def obligation(status: str, deadline: str) -> dict[str, Any]:
    task = example("Task-establish-sip")
    task["status"] = status
    task["restriction"] = {"period": {"end": deadline}}
    return task


def test_admission_notice_fires_on_a_sent_notice(loaded: Topics) -> None:
    """R-DIS-01: the notice is sent (created or updated completed), not drafted."""
    assert fired(loaded, "Communication", None, notice("inskrivningsmeddelande")) == [
        "admission-notice"
    ]
    sent = notice("inskrivningsmeddelande")
    assert fired(loaded, "Communication", sent, sent) == ["admission-notice"]
    draft = notice("inskrivningsmeddelande", "preparation")
    assert fired(loaded, "Communication", None, draft) == []
    assert fired(loaded, "Communication", draft, sent) == ["admission-notice"]
    assert fired(loaded, "Communication", sent, None) == []  # delete is not an interaction


def test_each_notice_fires_its_own_topic(loaded: Topics) -> None:
    assert fired(loaded, "Communication", None, notice("utskrivningsklar")) == [
        "ready-for-discharge"
    ]
    assert fired(loaded, "Communication", None, notice("utskrivningsmeddelande")) == ["discharge"]
    assert fired(loaded, "Communication", None, notice("kallelse")) == []


def test_the_event_names_the_write(loaded: Topics) -> None:
    current = notice("inskrivningsmeddelande")
    made = ResourceVersion("Communication", "n1", 3, AT, "PUT", b"{}")
    [event] = events_for(loaded, "Communication", current, current, made)
    assert event == TopicEvent(T + "admission-notice", "Communication", "n1", 3, "update", AT)
    assert event.seq == 0  # the engine numbers it at commit


def test_invitation_on_create_update_and_delete(loaded: Topics) -> None:
    """R-SIP-04: a SIP meeting created, changed or cancelled; resultForCreate and
    resultForDelete fail, but one side passing suffices (requireBoth false)."""
    assert fired(loaded, "Appointment", None, meeting()) == ["invitation"]
    assert fired(loaded, "Appointment", meeting(), meeting("uppfoljning")) == ["invitation"]
    assert fired(loaded, "Appointment", meeting(), None) == ["invitation"]
    assert fired(loaded, "Appointment", meeting(), meeting(None)) == ["invitation"]
    assert fired(loaded, "Appointment", None, meeting(None)) == []
    assert fired(loaded, "Appointment", meeting(None), None) == []


def test_consent_withdrawn_requires_both_states(loaded: Topics) -> None:
    """R-SIP-10: active -> inactive, or created rejected (resultForCreate passes); a consent
    already inactive, or becoming active, is no withdrawal."""
    assert fired(loaded, "Consent", consent("active"), consent("inactive")) == ["consent-withdrawn"]
    assert fired(loaded, "Consent", None, consent("rejected")) == ["consent-withdrawn"]
    assert fired(loaded, "Consent", consent("inactive"), consent("inactive")) == []
    assert fired(loaded, "Consent", consent("inactive"), consent("rejected")) == []
    assert fired(loaded, "Consent", consent("proposed"), consent("active")) == []
    assert fired(loaded, "Consent", None, consent("active")) == []


def test_discharge_when_the_stay_finishes(loaded: Topics) -> None:
    """R-DIS-12: the stay becomes finished (once)."""
    assert fired(loaded, "Encounter", stay("in-progress"), stay("finished")) == ["discharge"]
    assert fired(loaded, "Encounter", None, stay("finished")) == ["discharge"]
    assert fired(loaded, "Encounter", stay("finished"), stay("finished")) == []
    assert fired(loaded, "Encounter", stay("in-progress"), stay("in-progress")) == []


def test_ready_for_discharge_when_the_date_is_set_or_changed(loaded: Topics) -> None:
    """R-DIS-08: the query criteria pass whenever the date is there; the FHIRPath criteria
    only when it changed, and both must hold."""
    before, ready = stay("in-progress"), stay("in-progress", "2026-11-20T10:00:00+01:00")
    later = stay("in-progress", "2026-11-21T10:00:00+01:00")
    assert fired(loaded, "Encounter", before, ready) == ["ready-for-discharge"]
    assert fired(loaded, "Encounter", None, ready) == ["ready-for-discharge"]
    assert fired(loaded, "Encounter", ready, later) == ["ready-for-discharge"]
    assert fired(loaded, "Encounter", ready, ready) == []
    assert fired(loaded, "Encounter", before, before) == []


def test_two_topics_from_one_write(loaded: Topics) -> None:
    """A stay finished with its ready date set the same write fires both topics."""
    finished = stay("finished", "2026-11-20T10:00:00+01:00")
    assert fired(loaded, "Encounter", stay("in-progress"), finished) == [
        "discharge",
        "ready-for-discharge",
    ]


def test_sip_plan_on_any_change_of_a_sip(loaded: Topics) -> None:
    plan = example("CarePlan-sip")
    assert fired(loaded, "CarePlan", None, plan) == ["sip-plan"]
    assert fired(loaded, "CarePlan", plan, plan | {"status": "completed"}) == ["sip-plan"]
    other = plan | {"category": [{"coding": [{"system": "urn:x", "code": "SIP"}]}]}
    assert fired(loaded, "CarePlan", None, other) == []


def test_obligation_overdue_by_fhirpath_alone(loaded: Topics) -> None:
    """R-DIS-05: an open obligation past its deadline (`now()`)."""
    assert fired(loaded, "Task", None, obligation("requested", "2020-01-01T12:00:00Z")) == [
        "obligation-overdue"
    ]
    assert fired(loaded, "Task", None, obligation("completed", "2020-01-01T12:00:00Z")) == []
    assert fired(loaded, "Task", None, obligation("requested", "2999-01-01T12:00:00Z")) == []


def test_obligation_overdue_reads_the_servers_clock(loaded: Topics) -> None:
    """R-DIS-05: `now()` in a topic's criteria is the server's (injectable) clock: the
    same Task is overdue after its deadline and not before, whatever the wall clock says."""
    task = obligation("requested", "2026-11-03T12:00:00+01:00")
    made = version("Task", "t", 1)

    def at(moment: str) -> list[str]:
        now = datetime.fromisoformat(moment)
        return [
            e.topic.removeprefix(T) for e in events_for(loaded, "Task", None, task, made, now=now)
        ]

    assert at("2026-11-03T11:59:59+01:00") == []
    assert at("2026-11-03T12:00:01+01:00") == ["obligation-overdue"]
    assert at("2026-11-03T11:00:01+00:00") == ["obligation-overdue"]  # 12:00:01 in Stockholm


# -- the criteria's semantics, on a topic of our own ---------------------------------------


def gender_topic(**criteria: Any) -> Topics:
    """A Patient topic with query criteria on gender (previous male, current female)."""
    criteria = {"previous": "gender=male", "current": "gender=female", **criteria}
    return Topics([parse_topic(basic(trigger("Patient", query(**criteria))))])


def person(gender: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p", "gender": gender}


@pytest.mark.parametrize(
    ("require_both", "previous", "current", "expected"),
    [
        (True, "male", "female", True),
        (True, "female", "female", False),
        (True, "male", "male", False),
        (False, "female", "female", True),
        (False, "male", "male", True),
        (False, "female", "male", False),
    ],
)
def test_require_both(require_both: bool, previous: str, current: str, expected: bool) -> None:
    topics = gender_topic(requireBoth=require_both)
    got = fired(topics, "Patient", person(previous), person(current))
    assert got == (["x"] if expected else []), got


@pytest.mark.parametrize(
    ("result", "require_both", "current", "expected"),
    [
        ("test-passes", True, "female", True),
        ("test-fails", True, "female", False),
        ("test-fails", False, "female", True),
        ("test-passes", False, "male", True),
        ("test-fails", False, "male", False),
        (None, True, "female", False),  # no result given: the missing state fails
    ],
)
def test_result_for_create(
    result: str | None, require_both: bool, current: str, expected: bool
) -> None:
    criteria: dict[str, Any] = {"requireBoth": require_both}
    if result is not None:
        criteria["resultForCreate"] = result
    topics = gender_topic(**criteria)
    assert fired(topics, "Patient", None, person(current)) == (["x"] if expected else [])


@pytest.mark.parametrize(
    ("result", "require_both", "previous", "expected"),
    [
        ("test-passes", True, "male", True),
        ("test-fails", True, "male", False),
        ("test-fails", False, "male", True),
        ("test-passes", False, "female", True),
        ("test-fails", False, "female", False),
    ],
)
def test_result_for_delete(result: str, require_both: bool, previous: str, expected: bool) -> None:
    topics = gender_topic(resultForDelete=result, requireBoth=require_both)
    assert fired(topics, "Patient", person(previous), None) == (["x"] if expected else [])


def test_a_side_without_criteria_is_no_test() -> None:
    """Only `current` given: a create is judged on the current state alone (resultForCreate
    answers for a previous criterion, and there is none)."""
    topics = Topics(
        [
            parse_topic(
                basic(
                    trigger(
                        "Patient", query(current="gender=female", resultForCreate="test-passes")
                    )
                )
            )
        ]
    )
    assert fired(topics, "Patient", None, person("female")) == ["x"]
    assert fired(topics, "Patient", None, person("male")) == []
    assert fired(topics, "Patient", person("female"), person("male")) == []


def test_supported_interactions_limit_the_trigger() -> None:
    only_delete = {"url": "supportedInteraction", "valueCode": "delete"}
    topics = Topics([parse_topic(basic(trigger("Patient", only_delete)))])
    assert fired(topics, "Patient", None, person("male")) == []
    assert fired(topics, "Patient", person("male"), person("female")) == []
    assert fired(topics, "Patient", person("male"), None) == ["x"]


def test_fhirpath_and_query_must_both_hold() -> None:
    fhirpath = {"url": "fhirPathCriteria", "valueString": "%current.birthDate.exists()"}
    topics = Topics(
        [parse_topic(basic(trigger("Patient", query(current="gender=female"), fhirpath)))]
    )
    dated = person("female") | {"birthDate": "1912-12-12"}
    assert fired(topics, "Patient", None, dated) == ["x"]
    assert fired(topics, "Patient", None, person("female")) == []
    assert fired(topics, "Patient", None, dated | {"gender": "male"}) == []


def test_fhirpath_sees_previous_and_current() -> None:
    changed = {"url": "fhirPathCriteria", "valueString": "%previous.gender != %current.gender"}
    topics = Topics([parse_topic(basic(trigger("Patient", changed)))])
    assert fired(topics, "Patient", person("male"), person("female")) == ["x"]
    assert fired(topics, "Patient", person("male"), person("male")) == []


def test_query_criteria_see_id_and_last_updated() -> None:
    """`_id` and `_lastUpdated` are the stored version's, as a search would see them."""
    topics = Topics(
        [parse_topic(basic(trigger("Patient", query(current="_id=p&_lastUpdated=ge2026-11-20"))))]
    )
    assert fired(topics, "Patient", None, person("male")) == ["x"]
    other = ResourceVersion("Patient", "q", 1, AT, "POST", b"{}")
    assert events_for(topics, "Patient", None, person("male") | {"id": "q"}, other) == []


def test_one_event_per_topic() -> None:
    """Two triggers of one topic on one type that both fire make one event."""
    topics = Topics(
        [
            parse_topic(
                basic(
                    trigger("Patient"), trigger("http://hl7.org/fhir/StructureDefinition/Patient")
                )
            )
        ]
    )
    assert fired(topics, "Patient", None, person("male")) == ["x"]


def test_a_type_no_topic_watches_costs_nothing(
    loaded: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: Any) -> None:
        raise AssertionError("indexed a write no topic watches")

    monkeypatch.setattr(matching, "index_entries", refuse)
    patient = {"resourceType": "Patient", "id": "p"}
    assert events_for(loaded, "Patient", patient, patient, version("Patient", "p", 2)) == []


def test_the_write_index_is_used(loaded: Topics, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store computed the index for the put already: the criteria reuse it."""
    from fhir_server.search.indexer import index_entries

    current = notice("inskrivningsmeddelande")
    index = index_entries("Communication", current)

    def refuse(*_: Any) -> None:
        raise AssertionError("indexed the current state twice")

    monkeypatch.setattr(matching, "index_entries", refuse)
    made = version("Communication", "admission-notice")
    found = events_for(loaded, "Communication", None, current, made, current_index=index)
    assert [e.topic for e in found] == [T + "admission-notice"]


def test_a_chain_in_topic_criteria_is_refused() -> None:
    topics = Topics([parse_topic(basic(trigger("Patient", query(current="organization.name=x"))))])
    with pytest.raises(ValueError, match="chains"):
        fired(topics, "Patient", None, person("male"))


# -- a subscription's filters ----------------------------------------------------------------


def spec_with(topics: Topics, topic: str, *filters: str) -> Any:
    extension = [
        {
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
            "backport-filter-criteria",
            "valueString": f,
        }
        for f in filters
    ]
    payload = [
        {
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
            "backport-payload-content",
            "valueCode": "id-only",
        }
    ]
    resource = {
        "resourceType": "Subscription",
        "id": "s",
        "status": "requested",
        "reason": "test",
        "criteria": T + topic,
        "_criteria": {"extension": extension},
        "channel": {
            "type": "websocket",
            "payload": "application/fhir+json",
            "_payload": {"extension": payload},
        },
    }
    return parse_subscription(resource, topics, Settings())


def test_filters_match_the_focus(loaded: Topics) -> None:
    spec = spec_with(
        loaded, "admission-notice", "Communication?recipient=Organization/lulea-municipality"
    )
    sent = notice("inskrivningsmeddelande")
    assert filters_match(spec, "Communication", sent)
    elsewhere = copy.deepcopy(sent)
    elsewhere["recipient"] = [{"reference": "Organization/ornaset-health-centre"}]
    assert not filters_match(spec, "Communication", elsewhere)


def test_filters_are_anded(loaded: Topics) -> None:
    sent = notice("inskrivningsmeddelande")
    both = spec_with(
        loaded,
        "admission-notice",
        "recipient=Organization/lulea-municipality",
        "patient=Patient/tolvan-tolvansson",
    )
    assert filters_match(both, "Communication", sent)
    other = spec_with(
        loaded,
        "admission-notice",
        "recipient=Organization/lulea-municipality",
        "patient=Patient/someone-else",
    )
    assert not filters_match(other, "Communication", sent)
    in_one = spec_with(
        loaded,
        "admission-notice",
        "Communication?recipient=Organization/lulea-municipality&patient=Patient/x",
    )
    assert not filters_match(in_one, "Communication", sent)


def test_filters_of_another_type_do_not_apply(loaded: Topics) -> None:
    """R5 filterBy: the conditions applicable to the resource; a Communication filter does
    not hold back the topic's Encounter events, an untyped one applies to both."""
    typed = spec_with(loaded, "ready-for-discharge", "Communication?recipient=Organization/x")
    ready = stay("in-progress", "2026-11-20T10:00:00+01:00")
    assert filters_match(typed, "Encounter", ready)
    assert not filters_match(typed, "Communication", notice("utskrivningsklar"))
    untyped = spec_with(loaded, "ready-for-discharge", "patient=Patient/someone-else")
    assert not filters_match(untyped, "Encounter", ready)
    assert not filters_match(untyped, "Communication", notice("utskrivningsklar"))
    mine = spec_with(loaded, "ready-for-discharge", "patient=Patient/tolvan-tolvansson")
    assert filters_match(mine, "Encounter", ready)


def test_filters_with_modifier_and_comparator(loaded: Topics) -> None:
    kinds = spec_with(
        loaded, "consent-withdrawn", f"Consent?category:in={SIP}/ValueSet/sip-consent-kind"
    )
    assert filters_match(kinds, "Consent", consent("inactive"))
    other = consent("inactive") | {"category": [{"coding": [{"system": "urn:x", "code": "y"}]}]}
    assert not filters_match(kinds, "Consent", other)
    start = meeting()["start"][:10]
    on_or_after = spec_with(loaded, "invitation", f"Appointment?date=ge{start}")
    assert filters_match(on_or_after, "Appointment", meeting())
    later = spec_with(loaded, "invitation", "Appointment?date=gt2099-01-01")
    assert not filters_match(later, "Appointment", meeting())


def test_no_filter_lets_everything_through(loaded: Topics) -> None:
    spec = spec_with(loaded, "admission-notice")
    assert spec.filters == ()
    assert filters_match(spec, "Communication", notice("inskrivningsmeddelande"))


# -- the write path (HTTP), events into the outbox ----------------------------------------


@pytest.fixture
async def client(
    store: Storage, settings: Settings, clock: FixedClock
) -> AsyncIterator[httpx.AsyncClient]:
    """The example case without its acts (the tests send those), no dispatcher."""
    quiet = settings.model_copy(update={"dispatch": False})
    async with case_client(store, quiet, clock) as http:
        yield http


async def new_events(store: Storage, since: int, topic: str | None = None) -> list[TopicEvent]:
    """The outbox's events after `since` (of one topic: the SIP process's own Tasks may fire
    obligation-overdue on the way)."""
    found = await store.outbox.events_after(since)
    return [e for e in found if topic is None or e.topic == T + topic]


async def test_a_sent_notice_is_an_event_in_the_outbox(
    client: httpx.AsyncClient, store: Storage
) -> None:
    since = await store.outbox.last_seq()
    response = await client.put(
        "/Communication/admission-notice", json=example("Communication-admission-notice")
    )
    assert response.status_code == 201, response.text
    body = response.json()
    found = await new_events(store, since, "admission-notice")
    assert len(found) == 1, found
    [event] = found
    assert (event.topic, event.focus_type, event.focus_id, event.focus_version) == (
        T + "admission-notice",
        "Communication",
        "admission-notice",
        1,
    )
    assert (event.interaction, event.at) == ("create", body["meta"]["lastUpdated"])
    assert event.seq > since
    again = await client.put("/Communication/admission-notice", json=body)
    assert again.status_code == 200
    [update] = await new_events(store, event.seq, "admission-notice")
    assert (update.interaction, update.focus_version) == ("update", 2)


async def test_a_write_no_topic_watches_adds_no_event(
    client: httpx.AsyncClient, store: Storage
) -> None:
    since = await store.outbox.last_seq()
    response = await client.post(
        "/Organization", json={"resourceType": "Organization", "name": "Bodens kommun"}
    )
    assert response.status_code == 201
    assert await new_events(store, since) == []


async def test_a_delete_is_an_event(client: httpx.AsyncClient, store: Storage) -> None:
    created = await client.put("/Appointment/sip-meeting", json=example("Appointment-sip-meeting"))
    assert created.status_code == 201, created.text
    since = await store.outbox.last_seq()
    deleted = await client.delete("/Appointment/sip-meeting")
    assert deleted.status_code in (200, 204), deleted.text
    [event] = await new_events(store, since, "invitation")
    assert (event.topic, event.interaction, event.focus_version) == (T + "invitation", "delete", 2)


async def test_a_refused_write_leaves_no_event(client: httpx.AsyncClient, store: Storage) -> None:
    """The event is in the writer's unit of work: a transaction that fails stores neither
    the notice nor its event."""
    since = await store.outbox.last_seq()
    notice_entry = {
        "resource": example("Communication-admission-notice"),
        "request": {"method": "PUT", "url": "Communication/admission-notice"},
    }
    broken = {
        "resource": {"resourceType": "Patient", "id": "p1", "birthDate": "1990-13-40"},
        "request": {"method": "PUT", "url": "Patient/p1"},
    }
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [notice_entry, broken]}
    response = await client.post("", json=bundle)
    assert response.status_code >= 400
    assert await new_events(store, since) == []
    assert (await client.get("/Communication/admission-notice")).status_code == 404


async def test_transaction_writes_are_events(client: httpx.AsyncClient, store: Storage) -> None:
    """Entries of a transaction fire topics like single writes: a create and a delete."""
    created = await client.put("/Appointment/sip-meeting", json=example("Appointment-sip-meeting"))
    assert created.status_code == 201, created.text
    since = await store.outbox.last_seq()
    entries = [
        {
            "resource": example("Communication-admission-notice"),
            "request": {"method": "PUT", "url": "Communication/admission-notice"},
        },
        {"request": {"method": "DELETE", "url": "Appointment/sip-meeting"}},
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await client.post("", json=bundle)
    assert response.status_code == 200, response.text
    found = await new_events(store, since)
    fired = {(e.topic.removeprefix(T), e.interaction) for e in found}
    assert {("admission-notice", "create"), ("invitation", "delete")} <= fired
    assert len({e.seq for e in found}) == len(found)

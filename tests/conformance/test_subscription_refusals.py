"""A Subscription the server cannot honour is refused when written (Backport IG STU 1.1: a
server that accepts a Subscription promises to notify): 422 with an OperationOutcome whose
`expression` names the offending element, and nothing stored. One that it can honour is 201,
stored with status `requested` (the server sets `active` once the handshake succeeds).

R4 JSON keeps a primitive's extensions beside it: the filters are `_criteria.extension`
(FHIRPath `Subscription.criteria.extension[i]`), the content code `channel._payload.extension`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.config import MAPPINGS_DIR, PROFILES_DIR, Settings
from tests.conftest import TEST_PROFILES

SIP = "http://sip-fhir.se/fhir"
TOPIC = f"{SIP}/SubscriptionTopic/admission-notice"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER = BACKPORT + "backport-filter-criteria"
CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Plain http allowed to 127.0.0.1 only; no dispatcher (nothing is delivered here)."""
    return Settings(
        sqlite_path=tmp_path / "fhir.sqlite3",
        profile_dirs=[PROFILES_DIR, MAPPINGS_DIR, TEST_PROFILES],
        subscription_allowed_hosts=["127.0.0.1"],
        dispatch=False,
    )


def subscription(topic: str = TOPIC, *filters: str, content: str = "id-only") -> dict[str, Any]:
    """A Subscription this server honours: admission notices to one municipality."""
    filters = filters or ("Communication?recipient=Organization/lulea-municipality",)
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Inskrivningsmeddelanden till Luleå kommun",
        "criteria": topic,
        "_criteria": {"extension": [{"url": FILTER, "valueString": f} for f in filters]},
        "channel": {
            "extension": [
                {"url": HEARTBEAT, "valueUnsignedInt": 3600},
                {"url": TIMEOUT, "valueUnsignedInt": 5},
                {"url": MAX_COUNT, "valuePositiveInt": 10},
            ],
            "type": "rest-hook",
            "endpoint": "https://mottagare.lulea.se/fhir-hook",
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": CONTENT, "valueCode": content}]},
            "header": ["Authorization: Bearer secret-token"],
        },
    }


def changed(change: Callable[[dict[str, Any]], Any], base: dict[str, Any] | None = None):
    resource = copy.deepcopy(base or subscription())
    change(resource)
    return resource


def set_filters(*filters: str) -> Callable[[dict[str, Any]], Any]:
    def change(resource: dict[str, Any]) -> None:
        resource["_criteria"]["extension"] = [{"url": FILTER, "valueString": f} for f in filters]

    return change


def channel(**values: Any) -> Callable[[dict[str, Any]], Any]:
    """Set (or, with None, remove) channel elements."""

    def change(resource: dict[str, Any]) -> None:
        for key, value in values.items():
            if value is None:
                resource["channel"].pop(key, None)
            else:
                resource["channel"][key] = value

    return change


def channel_extensions(*extensions: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    return channel(extension=list(extensions))


REFUSALS: dict[str, tuple[dict[str, Any], str, str]] = {
    # the topic
    "unknown-topic": (
        subscription(f"{SIP}/SubscriptionTopic/no-such-topic"),
        "not-supported",
        "Subscription.criteria",
    ),
    "r4-query-criteria": (
        changed(lambda r: r.update(criteria="Communication?status=completed")),
        "not-supported",
        "Subscription.criteria",
    ),
    "other-topic-version": (
        subscription(TOPIC + "|9.9.9"),
        "not-supported",
        "Subscription.criteria",
    ),
    # the filters (canFilterBy)
    "filter-on-type-the-topic-does-not-offer": (
        changed(set_filters("Patient?identifier=191212121212")),
        "not-supported",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-parameter-not-offered": (
        changed(set_filters("Communication?status=completed")),
        "not-supported",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-parameter-not-offered-without-type": (
        changed(set_filters("category=http://x|y")),
        "not-supported",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-parameter-of-another-type": (
        subscription(f"{SIP}/SubscriptionTopic/ready-for-discharge", "Encounter?recipient=x"),
        "not-supported",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-modifier-not-offered": (
        changed(set_filters("Communication?recipient:missing=false")),
        "not-supported",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-type-modifier-not-offered": (
        changed(set_filters("Communication?recipient:Organization=lulea-municipality")),
        "not-supported",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-chain": (
        changed(set_filters("Communication?recipient.name=Luleå")),
        "not-supported",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-comparator-not-offered": (
        subscription(f"{SIP}/SubscriptionTopic/invitation", "Appointment?date=ne2026-11-20"),
        "not-supported",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-comparator-in-a-list-of-alternatives": (
        subscription(f"{SIP}/SubscriptionTopic/sip-plan", "follow-up-date=2026-12-01,sa2027-01"),
        "not-supported",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-malformed-value": (
        subscription(f"{SIP}/SubscriptionTopic/invitation", "Appointment?date=tomorrow"),
        "value",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-without-parameter": (
        changed(set_filters("Communication?")),
        "value",
        "Subscription.criteria.extension[0].value",
    ),
    "filter-second-of-two": (
        changed(set_filters("Communication?recipient=Organization/x", "Communication?status=x")),
        "not-supported",
        "Subscription.criteria.extension[1].value",
    ),
    "filter-without-string": (
        changed(
            lambda r: r["_criteria"].update(extension=[{"url": FILTER, "valueCode": "recipient"}])
        ),
        "invalid",
        "Subscription.criteria.extension[0]",
    ),
    "filter-after-another-extension": (
        changed(
            lambda r: r["_criteria"]["extension"].insert(
                0, {"url": "http://example.org/other", "valueString": "x"}
            ),
            changed(set_filters("Communication?sender:missing=true")),
        ),
        "not-supported",
        "Subscription.criteria.extension[1].value",
    ),
    # the channel
    "channel-email": (changed(channel(type="email")), "not-supported", "Subscription.channel.type"),
    "channel-message": (
        changed(channel(type="message")),
        "not-supported",
        "Subscription.channel.type",
    ),
    "channel-custom-type": (
        changed(
            channel(
                _type={
                    "extension": [
                        {
                            "url": BACKPORT + "backport-channel-type",
                            "valueCoding": {"system": "http://example.org/ch", "code": "zulip"},
                        }
                    ]
                }
            )
        ),
        "not-supported",
        "Subscription.channel.type.extension[0]",
    ),
    "rest-hook-without-endpoint": (
        changed(channel(endpoint=None)),
        "invalid",
        "Subscription.channel.endpoint",
    ),
    "endpoint-plain-http": (
        changed(channel(endpoint="http://mottagare.lulea.se/fhir-hook")),
        "value",
        "Subscription.channel.endpoint",
    ),
    "endpoint-other-scheme": (
        changed(channel(endpoint="ftp://mottagare.lulea.se/hook")),
        "value",
        "Subscription.channel.endpoint",
    ),
    "endpoint-relative": (
        changed(channel(endpoint="fhir-hook")),
        "value",
        "Subscription.channel.endpoint",
    ),
    "endpoint-bad-port": (
        changed(channel(endpoint="https://mottagare.lulea.se:99999/hook")),
        "value",
        "Subscription.channel.endpoint",
    ),
    # the payload
    "payload-missing": (
        changed(channel(payload=None, _payload=None)),
        "invalid",
        "Subscription.channel.payload",
    ),
    "payload-xml": (
        changed(channel(payload="application/fhir+xml")),
        "not-supported",
        "Subscription.channel.payload",
    ),
    "payload-content-missing": (
        changed(channel(_payload=None)),
        "invalid",
        "Subscription.channel.payload",
    ),
    "payload-content-unknown": (
        subscription(content="everything"),
        "value",
        "Subscription.channel.payload.extension[0].value",
    ),
    # the channel extensions and headers
    "heartbeat-zero": (
        changed(channel_extensions({"url": HEARTBEAT, "valueUnsignedInt": 0})),
        "value",
        "Subscription.channel.extension[0].value",
    ),
    "heartbeat-as-string": (
        changed(channel_extensions({"url": HEARTBEAT, "valueString": "3600"})),
        "value",
        "Subscription.channel.extension[0].value",
    ),
    "heartbeat-twice": (
        changed(
            channel_extensions(
                {"url": HEARTBEAT, "valueUnsignedInt": 60},
                {"url": HEARTBEAT, "valueUnsignedInt": 120},
            )
        ),
        "invalid",
        "Subscription.channel.extension[1]",
    ),
    "timeout-zero": (
        changed(
            channel_extensions(
                {"url": HEARTBEAT, "valueUnsignedInt": 60}, {"url": TIMEOUT, "valueUnsignedInt": 0}
            )
        ),
        "value",
        "Subscription.channel.extension[1].value",
    ),
    "max-count-wrong-type": (
        changed(channel_extensions({"url": MAX_COUNT, "valueUnsignedInt": 5})),
        "value",
        "Subscription.channel.extension[0].value",
    ),
    "header-without-colon": (
        changed(channel(header=["Authorization Bearer x"])),
        "value",
        "Subscription.channel.header[0]",
    ),
    "header-framing": (
        changed(channel(header=["X-Ok: 1", "Content-Type: text/plain"])),
        "value",
        "Subscription.channel.header[1]",
    ),
    "header-bad-name": (
        changed(channel(header=["Bad Name: x"])),
        "value",
        "Subscription.channel.header[0]",
    ),
}


async def count(client: httpx.AsyncClient) -> int:
    response = await client.get("/Subscription", params={"_total": "accurate"})
    assert response.status_code == 200
    return response.json()["total"]


@pytest.mark.parametrize("name", sorted(REFUSALS))
async def test_refused_with_expression(client: httpx.AsyncClient, name: str) -> None:
    resource, code, expression = REFUSALS[name]
    response = await client.post("/Subscription", json=resource)
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    [issue] = outcome["issue"]
    assert (issue["severity"], issue["code"]) == ("error", code), issue
    assert issue["expression"] == [expression], issue
    assert await count(client) == 0


async def test_refused_on_update_too(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Subscription", json=subscription())).json()
    broken = changed(channel(type="sms"), created)
    response = await client.put(f"/Subscription/{created['id']}", json=broken)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Subscription.channel.type"]
    stored = (await client.get(f"/Subscription/{created['id']}")).json()
    assert (stored["meta"]["versionId"], stored["channel"]["type"]) == ("1", "rest-hook")


async def test_refused_in_a_transaction(client: httpx.AsyncClient) -> None:
    bad = changed(channel(endpoint="http://mottagare.lulea.se/hook"))
    entries = [
        {"resource": subscription(), "request": {"method": "POST", "url": "Subscription"}},
        {"resource": bad, "request": {"method": "POST", "url": "Subscription"}},
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await client.post("", json=bundle)
    assert response.status_code == 422, response.text
    issues = response.json()["issue"]
    assert [i["expression"] for i in issues] == [["Bundle.entry[1].resource.channel.endpoint"]]
    assert await count(client) == 0


async def test_a_valid_subscription_is_created_requested(client: httpx.AsyncClient) -> None:
    sent = subscription()
    response = await client.post("/Subscription", json=sent)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "requested"
    assert body["_criteria"] == sent["_criteria"]
    assert body["channel"] == sent["channel"]
    assert await count(client) == 1


STATUSES = [("active", "requested"), ("error", "requested"), ("requested", "requested")]


@pytest.mark.parametrize(("sent", "stored"), [*STATUSES, ("off", "off")])
async def test_the_server_owns_the_status(
    client: httpx.AsyncClient, sent: str, stored: str
) -> None:
    """A client asking for `active` (HAPI accepts it so) or writing back `error` asks for
    the channel to be negotiated again: stored `requested`; `off` stays off."""
    response = await client.post("/Subscription", json=subscription() | {"status": sent})
    assert response.status_code == 201, response.text
    assert response.json()["status"] == stored
    read = await client.get(f"/Subscription/{response.json()['id']}")
    assert read.json()["status"] == stored


ACCEPTED: dict[str, dict[str, Any]] = {
    "filter-without-type": changed(set_filters("recipient=Organization/lulea-municipality")),
    "several-filters-in-one": changed(
        set_filters("Communication?recipient=Organization/x&patient=Patient/y")
    ),
    "no-filter": changed(lambda r: r.pop("_criteria")),
    "filter-with-offered-modifier": subscription(
        f"{SIP}/SubscriptionTopic/consent-withdrawn",
        f"Consent?category:in={SIP}/ValueSet/sip-consent-kind",
    ),
    "filter-with-offered-comparator": subscription(
        f"{SIP}/SubscriptionTopic/invitation", "Appointment?date=ge2026-11-01"
    ),
    "filter-on-either-type": subscription(
        f"{SIP}/SubscriptionTopic/ready-for-discharge", "patient=Patient/tolvan-tolvansson"
    ),
    "topic-with-its-version": subscription(TOPIC + "|0.1.0"),
    "http-to-an-allowed-host": changed(channel(endpoint="http://127.0.0.1:8099/hook")),
    "websocket-without-endpoint": changed(channel(type="websocket", endpoint=None)),
    "websocket-with-endpoint-ignored": changed(channel(type="websocket")),
    "payload-plain-json": changed(channel(payload="application/json")),
    "empty-payload": subscription(content="empty"),
    "full-resource": subscription(content="full-resource"),
    "no-channel-extensions-or-headers": changed(channel(extension=None, header=None)),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
async def test_accepted(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/Subscription", json=ACCEPTED[name])
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "requested"

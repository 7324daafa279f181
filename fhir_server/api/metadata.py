"""GET /metadata: the CapabilityStatement, generated from the route and search registries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_server import __version__
from fhir_server.api.negotiation import check_response_format
from fhir_server.api.responses import json_response
from fhir_server.api.routes import RESOURCE_FEATURES, ROUTES, context
from fhir_server.resource_types import resource_types
from fhir_server.search.registry import SearchParam, search_params

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
SUBSCRIPTION_PROFILE = f"{BACKPORT}/StructureDefinition/backport-subscription"
# Topic discovery in R4 (Backport IG): one extension per SubscriptionTopic canonical served.
TOPIC_CANONICAL = f"{BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
STARTED = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"


OPERATIONS = {
    "$translate": "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate",
    "$validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "$payment-liability": "http://sip-fhir.se/fhir/OperationDefinition/Encounter-payment-liability",
    "$indicators": "http://sip-fhir.se/fhir/OperationDefinition/indicators",
    "$status": f"{BACKPORT}/OperationDefinition/backport-subscription-status",
    "$events": f"{BACKPORT}/OperationDefinition/backport-subscription-events",
    "$get-ws-binding-token": (
        f"{BACKPORT}/OperationDefinition/backport-subscription-get-ws-binding-token"
    ),
    "$export": f"{BULK_DATA}/OperationDefinition/export",
}
# An operation whose definition differs by the type it is served on.
TYPE_OPERATIONS = {
    ("Patient", "$export"): f"{BULK_DATA}/OperationDefinition/patient-export",
    ("Group", "$export"): f"{BULK_DATA}/OperationDefinition/group-export",
}


def operations_by_type() -> dict[str | None, set[str]]:
    """Operations per resource type, from the routes: a `/{type}/…` route serves every type
    (key None), a `/ConceptMap/…` route only its own; system-level ones are not here."""
    out: dict[str | None, set[str]] = {}
    for route in ROUTES:
        if route.interaction.startswith("$") and route.level != "system":
            first = route.path.split("/")[1]
            out.setdefault(None if first == "{type}" else first, set()).add(route.interaction)
    return out


def system_operations() -> list[str]:
    """Operations on the base URL (`[base]/$name`)."""
    return sorted(
        {r.interaction for r in ROUTES if r.level == "system" and r.interaction[0] == "$"}
    )


def _operations(names: list[str], type: str | None = None) -> list[dict[str, str]]:
    return [
        {"name": op[1:], "definition": TYPE_OPERATIONS.get((type, op), OPERATIONS[op])}
        for op in names
    ]


def capability_statement(
    base_url: str,
    engine: str,
    profiles: dict[str, list[str]] | None = None,
    topics: list[str] | None = None,
) -> dict[str, Any]:
    interactions = {r.interaction for r in ROUTES if not r.interaction.startswith("$")}
    type_interactions = sorted(
        {r.interaction for r in ROUTES if r.level != "system"} & interactions
    )
    system_interactions = {
        r.interaction for r in ROUTES if r.level == "system" and r.interaction[0] != "$"
    }
    if "transaction" in system_interactions:
        system_interactions.add("batch")  # the same POST [base] route answers both
    system_interactions = sorted(system_interactions)
    operations = operations_by_type()
    system = system_operations()
    profiles = dict(profiles or {})
    profiles["Subscription"] = [*profiles.get("Subscription", []), SUBSCRIPTION_PROFILE]
    resources = [
        resource_capability(
            name,
            type_interactions,
            profiles.get(name, []),
            sorted(operations.get(None, set()) | operations.get(name, set())),
        )
        for name in sorted(resource_types())
    ]
    if topics:
        subscription = next(r for r in resources if r["type"] == "Subscription")
        extensions = [{"url": TOPIC_CANONICAL, "valueCanonical": url} for url in sorted(topics)]
        resources[resources.index(subscription)] = {"extension": extensions, **subscription}
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": STARTED,
        "instantiates": [f"{BULK_DATA}/CapabilityStatement/bulk-data"],
        "publisher": "sip-fhir",
        "kind": "instance",
        "software": {"name": "sip-fhir", "version": __version__},
        "implementation": {
            "description": f"sip-fhir FHIR R4 server ({engine} storage)",
            "url": base_url,
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": code} for code in system_interactions],
                "searchParam": [
                    _param_capability(p)
                    for p in search_params("Patient").values()
                    if p.name.startswith("_")  # common to all types (base Resource)
                ],
                **({"operation": _operations(system)} if system else {}),
            }
        ],
    }


def resource_capability(
    name: str, interactions: list[str], profiles: list[str], operations: list[str]
) -> dict[str, Any]:
    capability: dict[str, Any] = {"type": name}
    if profiles:
        capability["supportedProfile"] = sorted(profiles)
    capability["interaction"] = [{"code": code} for code in interactions]
    capability.update(RESOURCE_FEATURES)
    params = [_param_capability(p) for p in search_params(name).values() if p.name[0] != "_"]
    if params:  # FHIR JSON allows no empty arrays
        capability["searchParam"] = params
    if operations:
        capability["operation"] = _operations(operations, name)
    return capability


def _param_capability(param: SearchParam) -> dict[str, Any]:
    capability = {"name": param.name, "type": param.type}
    if param.url:
        capability["definition"] = param.url
    capability["documentation"] = param.documentation
    return capability


def topic_urls(topics: Any) -> list[str]:
    """The canonical urls of the loaded SubscriptionTopics."""
    return sorted(topic.url for topic in topics)


async def metadata(request: Request) -> Response:
    pretty = check_response_format(request)
    ctx = context(request)
    profiles: dict[str, list[str]] = {}
    for profile in ctx.validator.profiles.values():
        profiles.setdefault(profile.type, []).append(profile.url)
    topics = topic_urls(request.app.state.topics)
    statement = capability_statement(ctx.base_url, ctx.storage.name, profiles, topics)
    return json_response(statement, pretty=pretty)

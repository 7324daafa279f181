"""What the SIP modules share: the systems of the SIP vocabulary, codes and local references
in a resource, and reads of other resources through the unit of work (so a rule sees what
the same transaction wrote), plus the form of a gate's refusal."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.config import PROFILES_DIR
from fhir_server.errors import FhirError, error
from fhir_server.search.parser import parse_search
from fhir_server.search.query import AnyOf, Condition, ReferenceMatch, SearchQuery
from fhir_server.search.registry import generation
from fhir_server.storage.port import AccessFilter, ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context

SIP = "http://sip-fhir.se/fhir"
PLAN_TYPE = "https://fhir.inera.se/CodeSystem/typeofcareplan-cs"
CONSENT_KIND = f"{SIP}/CodeSystem/sip-consent-kind"
MESSAGE_TYPE = f"{SIP}/CodeSystem/sip-message-type"
MEETING_PURPOSE = f"{SIP}/CodeSystem/sip-meeting-purpose"
UNIT_TYPE = f"{SIP}/CodeSystem/sip-unit-type"
PRINCIPAL_TYPE = f"{SIP}/CodeSystem/sip-principal-type"
CLOSURE_REASON = f"{SIP}/CodeSystem/sip-plan-closure-reason"
CLOSURE_REASON_URL = f"{SIP}/StructureDefinition/sip-closure-reason"
ESTIMATED_DISCHARGE_URL = f"{SIP}/StructureDefinition/sip-estimated-discharge-date"
PARTICIPANT_ORGANIZATION_URL = f"{SIP}/StructureDefinition/sip-participant-organization"
PARTICIPATING_ORGANIZATION_URL = f"{SIP}/StructureDefinition/sip-participating-organization"
ALL = AccessFilter()  # the server's own reads for the process rules
PLAN_CLOSED = frozenset({"completed", "revoked"})  # a CarePlan's closed statuses (R-SIP-10)


def is_sip_plan(plan: dict[str, Any]) -> bool:
    return "SIP" in codes(plan.get("category"), PLAN_TYPE)


def is_deceased(patient: dict[str, Any]) -> bool:
    """Whether a Patient is recorded as dead (R-DIS-13)."""
    return patient.get("deceasedBoolean") is True or "deceasedDateTime" in patient


def coding(system: str, code: str) -> dict[str, str]:
    """A Coding of one of the SIP's own code systems, its display as `profiles/` has it."""
    return {"system": system, "code": code, "display": _displays(system)[code]}


@cache
def _displays(system: str) -> dict[str, str]:
    """The displays of the CodeSystem at `system`, read once from `profiles/`."""
    for path in sorted(PROFILES_DIR.glob("CodeSystem-*.json")):
        found = orjson.loads(path.read_bytes())
        if found.get("url") == system:
            return {c["code"]: c["display"] for c in found.get("concept") or []}
    raise LookupError(f"no CodeSystem {system} in {PROFILES_DIR}")


def refused(rule: str, message: str, expression: str) -> FhirError:
    """A gate's refusal: 422 business-rule, the message led by the rule id."""
    return error(422, "business-rule", f"{rule}: {message}", expression)


def codes(concepts: Any, system: str) -> set[str]:
    """The codes of `system` in a CodeableConcept or a list of them."""
    if isinstance(concepts, dict):
        concepts = [concepts]
    if not isinstance(concepts, list):
        return set()
    return {
        coding["code"]
        for concept in concepts
        if isinstance(concept, dict)
        for coding in concept.get("coding") or []
        if isinstance(coding, dict) and coding.get("system") == system and "code" in coding
    }


def reference(value: Any) -> str | None:
    """`Reference.reference` as written, or None."""
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return value["reference"]
    return None


def local_id(value: Any, type: str) -> str | None:
    """The id of a relative reference `type/id` (absolute and other types: None)."""
    ref = reference(value)
    if ref is None or not ref.startswith(f"{type}/"):
        return None
    id = ref[len(type) + 1 :].split("/_history/")[0]
    return id or None


def references(values: Any) -> set[str]:
    return {r for r in (reference(v) for v in values or []) if r is not None}


async def current(uow: UnitOfWork, type: str, id: str | None) -> dict[str, Any] | None:
    """The current, not deleted, resource `type/id` as this unit of work sees it."""
    if id is None:
        return None
    version = await uow.current(type, id)
    return resource_of(version) if version is not None and not version.deleted else None


def resource_of(version: ResourceVersion) -> dict[str, Any]:
    """A stored (not deleted) version's resource."""
    assert version.json is not None
    return orjson.loads(version.json)  # type: ignore[no-any-return]


async def stored_patient(uow: UnitOfWork, subject: Any) -> dict[str, Any] | None:
    """The Patient a literal `subject` reference names, if this server holds it. The consent
    rules apply to the persons held here; the Patient's own write re-checks (gate_person)."""
    return await current(uow, "Patient", local_id(subject, "Patient"))


async def find(
    ctx: Context, uow: UnitOfWork, type: str, params: Iterable[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Every current resource of `type` matching the search `params`, in this unit of work."""
    versions = await uow.find(query_of(type, params), ctx.access)
    return [resource_of(v) for v in versions if v.json]


async def find_versions(
    uow: UnitOfWork, type: str, criteria: Iterable[tuple[str, str]]
) -> list[ResourceVersion]:
    """Current versions matching `criteria`, as this unit of work sees them (the server's own
    reads for the process: no access filter)."""
    return await uow.find(query_of(type, criteria), ALL)


def query_of(type: str, criteria: Iterable[tuple[str, str]]) -> SearchQuery:
    """The search the process rules ask, parsed once per shape: the rules ask the same
    questions of every patient and stay, and parsing costs more than the answer. A local
    reference's id is a slot in the parsed shape, filled in here."""
    return _query(generation(), type, tuple(criteria))


@lru_cache(maxsize=256)  # a bundle's entries ask the same questions of the same patient
def _query(_generation: int, type: str, criteria: tuple[tuple[str, str], ...]) -> SearchQuery:
    shape, ids = [], []
    for name, value in criteria:
        target, slash, id = value.partition("/")
        if slash and _ID.fullmatch(id) and target.isalpha():
            shape.append((name, f"{target}/{_SLOT}{len(ids)}"))
            ids.append(id)
        else:
            shape.append((name, value))
    query = _parsed(_generation, type, tuple(shape))
    if not ids:
        return query
    where = tuple(_filled(c, ids) for c in query.where)
    if _SLOT in repr(where):  # the slot landed elsewhere than a reference's id: parse as is
        return _parsed(_generation, type, criteria)
    return replace(query, where=where)


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_SLOT = "slot-"


def _filled(condition: Condition, ids: list[str]) -> Condition:
    match condition:
        case ReferenceMatch(id=str(id)) if id.startswith(_SLOT) and id[5:].isdigit():
            return replace(condition, id=ids[int(id[5:])])
        case AnyOf(terms=terms):
            return AnyOf(tuple(_filled(t, ids) for t in terms))
    return condition


@lru_cache(maxsize=512)
def _parsed(_generation: int, type: str, criteria: tuple[tuple[str, str], ...]) -> SearchQuery:
    return replace(parse_search(type, list(criteria)).query, total=False)

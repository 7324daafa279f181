"""`Encounter/[id]/$payment-liability` (R-DIS-09): the municipality's payment liability for
one inpatient stay, as a Parameters resource.

The facts come from the stay's own resources: its admission and ready-for-discharge notices
(Communications of the stay, by their `sent` time) and whether a recipient of each is a
municipality (an Organization whose principal type is `kommun`, a unit or the municipality
itself); the discharge date is `Encounter.period.end`; the stay's newest planning basis says
whether the patient needs only social services; the extension `sip-awaiting-outpatient-care`
on the Encounter gives the days spent waiting for region-financed outpatient interventions.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from fhir_server.interactions import crud
from fhir_server.interactions.context import Context
from fhir_server.search.parser import parse_search
from fhir_server.sip.agreements import agreement
from fhir_server.sip.clock import moment
from fhir_server.sip.liability import Liability, Period, StayFacts, payment_liability
from fhir_server.sip.planning_basis import QUESTIONNAIRE, latest
from fhir_server.sip.resources import MESSAGE_TYPE, PRINCIPAL_TYPE, SIP, codes, resource_of

AWAITING_OUTPATIENT_CARE_URL = f"{SIP}/StructureDefinition/sip-awaiting-outpatient-care"


async def liability_of_stay(ctx: Context, encounter_id: str) -> dict[str, Any]:
    encounter = resource_of(await crud.read(ctx, "Encounter", encounter_id))
    terms = agreement(ctx.settings.payment_agreement)
    end = moment((encounter.get("period") or {}).get("end"))
    facts = StayFacts(
        await _first_to_municipality(ctx, encounter_id, "inskrivningsmeddelande"),
        await _first_to_municipality(ctx, encounter_id, "utskrivningsklar"),
        end.date() if end is not None else None,
        await _only_social_services(ctx, encounter_id),
        _awaiting_outpatient_care(encounter),
    )
    result = payment_liability(facts, terms, ctx.clock.now().date())
    return _parameters(result, terms.id)


async def _first_to_municipality(ctx: Context, encounter_id: str, code: str) -> datetime | None:
    """When the first notice of this type that a municipality received was sent."""
    criteria = [
        ("encounter", f"Encounter/{encounter_id}"),
        ("category", f"{MESSAGE_TYPE}|{code}"),
        ("status:not", "entered-in-error"),
        ("_sort", "sent"),
        ("_count", "100"),
    ]
    page = await ctx.storage.search(parse_search("Communication", criteria).query, ctx.access)
    for version in page.items:
        notice = resource_of(version)
        sent = moment(notice.get("sent"))
        if sent is not None and await _reaches_municipality(ctx, notice):
            return sent
    return None


async def _reaches_municipality(ctx: Context, notice: dict[str, Any]) -> bool:
    for recipient in notice.get("recipient") or []:
        type, _, id = str((recipient or {}).get("reference") or "").partition("/")
        if type != "Organization" or not id:
            continue
        stored = await ctx.storage.read("Organization", id, ctx.access)
        if stored is not None and not stored.deleted and _is_municipal(resource_of(stored)):
            return True
    return False


async def _only_social_services(ctx: Context, encounter_id: str) -> bool:
    criteria = [
        ("encounter", f"Encounter/{encounter_id}"),
        ("questionnaire", QUESTIONNAIRE),
        ("_count", "100"),
    ]
    page = await ctx.storage.search(
        parse_search("QuestionnaireResponse", criteria).query, ctx.access
    )
    return latest([resource_of(v) for v in page.items]).only_social_services


def _awaiting_outpatient_care(encounter: dict[str, Any]) -> tuple[Period, ...]:
    """The days of each `sip-awaiting-outpatient-care` period, in Stockholm time."""
    periods: list[Period] = []
    for extension in encounter.get("extension") or []:
        if extension.get("url") != AWAITING_OUTPATIENT_CARE_URL:
            continue
        value = extension.get("valuePeriod") or {}
        first, last = _day(value.get("start")), _day(value.get("end"))
        if first is not None:
            periods.append((first, last))
    return tuple(periods)


def _day(value: Any) -> date | None:
    found = moment(value)
    return found.date() if found is not None else None


def _sek(amount: int) -> dict[str, Any]:
    return {"value": amount, "currency": "SEK"}


def _is_municipal(organization: dict[str, Any]) -> bool:
    return "kommun" in codes(organization.get("type"), PRINCIPAL_TYPE)


def _parameters(result: Liability, agreement_id: str) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [{"name": "liable", "valueBoolean": result.liable}]
    if result.start is not None:
        parameters.append({"name": "liabilityStart", "valueDate": result.start.isoformat()})
    if result.liable:
        parameters += [
            {"name": "liableDays", "valueInteger": result.days},
            {"name": "dailyAmount", "valueMoney": _sek(result.daily_amount)},
            {"name": "amount", "valueMoney": _sek(result.amount)},
        ]
    parameters.append({"name": "agreement", "valueString": agreement_id})
    if result.reason is not None:
        parameters.append({"name": "reason", "valueString": result.reason})
    return {"resourceType": "Parameters", "parameter": parameters}

"""`$indicators` (R-IND-01): the follow-up indicators as a Bundle of MeasureReports.

`GET [base]/$indicators` reports over everything the principal may see;
`GET Organization/[id]/$indicators` over one organisation, as the report's `reporter`:
- the Tasks it owns: `owner` the Organization, or a PractitionerRole of it;
- the stays it took part in: its `serviceProvider`, or a sender or recipient of one of the
  stay's admission, ready-for-discharge or discharge notices.
The cases are read here through storage search (so the Tasks the rules opened and the
notices they came from are counted as stored); `fhir_server/sip/indicators.py` decides what
counts and computes each report. SIP invitations are counted only for the
`skicka-sip-kallelse` Tasks of a ready-for-discharge notice (R-DIS-10), not those of an
outpatient need (R-SIP-02, 3 working days). Plans followed up count every `folja-upp-plan`
Task: the yearly follow-up (R-SIP-08) and that of an existing plan after discharge (R-DIS-14).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from fhir_server.interactions import crud
from fhir_server.interactions.bundles import bundle
from fhir_server.interactions.context import Context
from fhir_server.search.parser import parse_search
from fhir_server.sip.clock import instant, moment
from fhir_server.sip.indicators import (
    Case,
    Indicator,
    Observation,
    Period,
    admission_case,
    continuous_report,
    discharge_observation,
    proportion_report,
    task_case,
)
from fhir_server.sip.resources import MESSAGE_TYPE, codes, reference, resource_of

from .indicator_request import IndicatorRequest

OBLIGATION_TYPE = "http://sip-fhir.se/fhir/CodeSystem/sip-obligation-type"
NOTICES = ("inskrivningsmeddelande", "utskrivningsklar", "utskrivningsmeddelande")
PAGE = 500
CHUNK = 100  # references per search term list


async def indicator_reports(
    ctx: Context, ask: IndicatorRequest, organization_id: str | None
) -> dict[str, Any]:
    """The collection Bundle: one MeasureReport per indicator asked for, in that order."""
    owner = None
    if organization_id is not None:
        await crud.read(ctx, "Organization", organization_id)  # 404 / 410 as a read
        owner = f"Organization/{organization_id}"
    now = ctx.clock.now()
    stays = _Stays(ctx, ask.period, owner)
    entries = []
    for indicator in ask.indicators:
        report = await _report(ctx, indicator, ask.period, now, owner, stays)
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": report})
    body = bundle("collection", None, {}, entries)
    body["timestamp"] = now.isoformat(timespec="seconds")
    return body


async def _report(
    ctx: Context,
    indicator: Indicator,
    period: Period,
    now: datetime,
    owner: str | None,
    stays: _Stays,
) -> dict[str, Any]:
    if indicator.source == "discharged-stays":
        observations, initial = await stays.discharge_observations()
        return continuous_report(indicator, observations, period, now, owner, initial)
    cases = await _task_cases(ctx, indicator, period, owner)
    if indicator.source == "admission-stays":
        cases += await stays.admission_cases()
    return proportion_report(indicator, cases, period, now, owner)


async def _task_cases(
    ctx: Context, indicator: Indicator, period: Period, owner: str | None
) -> list[Case]:
    """The indicator's obligation Tasks due in the period (of `owner`, when given)."""
    criteria = [
        ("code", f"{OBLIGATION_TYPE}|{indicator.obligation}"),
        ("deadline", f"ge{instant(period.begins)}"),
        ("deadline", f"lt{instant(period.ends_before)}"),
    ]
    if indicator.focus_message is not None:
        category = f"{MESSAGE_TYPE}|{indicator.focus_message}"
        criteria.append(("focus:Communication.category", category))
    searches = [criteria]
    if owner is not None:  # the organisation's own Tasks, and those of its people
        searches = [
            [*criteria, ("owner", owner)],
            [*criteria, ("owner:PractitionerRole.organization", owner)],
        ]
    found: dict[str, dict[str, Any]] = {}
    for search in searches:
        for task in await every(ctx, "Task", search):
            found[task["id"]] = task
    return [c for c in map(task_case, found.values()) if c is not None]


@dataclass(slots=True)
class _Stays:
    """The inpatient stays around the period and their notices, read once per request.

    Fetched: stays whose period overlaps the day before the period up to its end (an
    admission 24 h before the period can be due in it), then their notices."""

    ctx: Context
    period: Period
    owner: str | None
    _loaded: list[tuple[dict[str, Any], list[dict[str, Any]]]] | None = field(default=None)

    async def load(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        if self._loaded is None:
            begins = self.period.begins - timedelta(hours=24)
            criteria = [
                ("date", f"ge{instant(begins)}"),
                ("date", f"lt{instant(self.period.ends_before)}"),
            ]
            stays = await every(self.ctx, "Encounter", criteria)
            notices = await _notices(self.ctx, [f"Encounter/{s['id']}" for s in stays])
            both = [(s, notices.get(f"Encounter/{s['id']}", [])) for s in stays]
            self._loaded = [(s, n) for s, n in both if _took_part(s, n, self.owner)]
        return self._loaded

    async def admission_cases(self) -> list[Case]:
        """R-DIS-01 for each stay with an admission notice and no `skicka-inskrivningsmeddelande`
        Task of its own (that Task is counted instead)."""
        loaded = await self.load()
        tasked = await _stays_with_task(self.ctx, [f"Encounter/{s['id']}" for s, _ in loaded])
        cases = []
        for stay, notices in loaded:
            if f"Encounter/{stay['id']}" in tasked:
                continue
            case = admission_case(stay, _first_sent(notices, "inskrivningsmeddelande"))
            if case is not None:
                cases.append(case)
        return cases

    async def discharge_observations(self) -> tuple[list[Observation], int]:
        """Stays discharged in the period with a ready-for-discharge notice, and how many."""
        observations, initial = [], 0
        for stay, notices in await self.load():
            end = moment((stay.get("period") or {}).get("end"))
            ready = _first_sent(notices, "utskrivningsklar")
            if end is None or ready is None or not self.period.holds(end):
                continue
            initial += 1
            observation = discharge_observation(stay, ready)
            if observation is not None:
                observations.append(observation)
        return observations, initial


async def _notices(ctx: Context, stays: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The completed notices of the stays, per stay."""
    kinds = ",".join(f"{MESSAGE_TYPE}|{code}" for code in NOTICES)
    by_stay: dict[str, list[dict[str, Any]]] = {}
    for chunk in _chunks(stays):
        criteria = [("encounter", ",".join(chunk)), ("category", kinds), ("status", "completed")]
        for notice in await every(ctx, "Communication", criteria):
            stay = reference(notice.get("encounter"))
            if stay is not None:
                by_stay.setdefault(stay, []).append(notice)
    return by_stay


async def _stays_with_task(ctx: Context, stays: list[str]) -> set[str]:
    """The stays that have a `skicka-inskrivningsmeddelande` Task, whoever owns it."""
    found: set[str] = set()
    code = f"{OBLIGATION_TYPE}|skicka-inskrivningsmeddelande"
    for chunk in _chunks(stays):
        criteria = [("code", code), ("encounter", ",".join(chunk))]
        for task in await every(ctx, "Task", criteria):
            stay = reference(task.get("encounter"))
            if stay is not None:
                found.add(stay)
    return found


def _took_part(stay: dict[str, Any], notices: list[dict[str, Any]], owner: str | None) -> bool:
    if owner is None:
        return True
    parties = {reference(stay.get("serviceProvider"))}
    for notice in notices:
        parties.add(reference(notice.get("sender")))
        parties.update(reference(r) for r in notice.get("recipient") or [])
    return owner in parties


def _first_sent(notices: list[dict[str, Any]], kind: str) -> datetime | None:
    sent = [
        moment(n.get("sent")) for n in notices if kind in codes(n.get("category"), MESSAGE_TYPE)
    ]
    return min((s for s in sent if s is not None), default=None)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


async def every(ctx: Context, type: str, criteria: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every current resource matching the search, page by page (keyset, stable while data
    changes)."""
    query = replace(parse_search(type, criteria).query, count=PAGE, total=False)
    found: list[dict[str, Any]] = []
    while True:
        page = await ctx.storage.search(query, ctx.access)
        found += [resource_of(v) for v in page.items if v.json is not None]
        if not page.has_more or not page.items:
            return found
        if page.keyed and page.last_key is not None:
            query = replace(query, after_key=tuple(page.last_key), offset=0)
        else:
            query = replace(query, after=page.items[-1].id)

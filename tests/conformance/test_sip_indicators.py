"""`$indicators` (R-IND-01): the follow-up indicators as MeasureReports, on both engines, over
HTTP.

The example case (examples/sip-case) without its Tasks, messages, meetings and plans is
loaded; each test sends the acts (notices, acknowledgements on time and late, more stays),
moves the fixed clock and runs the overdue sweep, then reads the reports: the populations'
counts, the share on time, the late cases in `evaluatedResource`, per organisation, and the
median days from ready-for-discharge to discharge.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from fhir_server.api.metadata import OPERATIONS
from fhir_server.sip.clock import STOCKHOLM, FixedClock
from fhir_server.sip.indicators import INDICATORS
from fhir_server.sip.obligations import sweep
from fhir_server.storage.port import Storage
from tests.sip_case import (
    HEALTH_CENTRE,
    HOME_CARE,
    MUNICIPALITY,
    OBLIGATION,
    WARD,
    case_without_acts,  # noqa: F401 (the `client` fixture)
    example,
    put,
)

MEASURE = "http://sip-fhir.se/fhir/Measure"
REGION = "Organization/region-norrbotten"
NOVEMBER = {"periodStart": "2026-11-01", "periodEnd": "2026-11-30"}
ADMISSION = "Communication/admission-notice"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(STOCKHOLM)


def message(name: str, **changes: Any) -> dict[str, Any]:
    """An example message, `sent` (and `received`) and other elements changed."""
    resource = example(name) | changes
    if "sent" in changes:
        resource["received"] = changes["sent"]
    return resource


def acknowledgement(id: str, notice: str, sender: str, sent: str) -> dict[str, Any]:
    return message(
        "Communication-admission-notice-acknowledgement",
        id=id,
        inResponseTo=[{"reference": f"Communication/{notice}"}],
        sender={"reference": sender},
        sent=sent,
    )


def stay(id: str, start: str, end: str) -> dict[str, Any]:
    """Another finished inpatient stay of the example patient at the ward."""
    encounter = example("Encounter-inpatient-stay") | {"id": id}
    encounter["period"] = {"start": start, "end": end}
    return encounter


def obligation(
    id: str, code: str, owner: str, deadline: str, done: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An obligation Task as a client records it (profile sip-obligation)."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": id,
        "status": "completed" if done else "requested",
        "intent": "order",
        "code": {"coding": [{"system": OBLIGATION, "code": code}]},
        "focus": {"reference": ADMISSION},
        "for": {"reference": "Patient/tolvan-tolvansson"},
        "authoredOn": "2026-11-01T08:00:00+01:00",
        "owner": {"reference": owner},
        "restriction": {"period": {"start": "2026-11-01T08:00:00+01:00", "end": deadline}},
    }
    if done:
        task["executionPeriod"] = {"start": task["authoredOn"], "end": done}
    return task | extra


async def task_of(client: httpx.AsyncClient, code: str, owner: str, focus: str) -> str:
    params = {"code": f"{OBLIGATION}|{code}", "owner": owner, "focus": focus}
    response = await client.get("/Task", params=params)
    [entry] = response.json()["entry"]
    return f"Task/{entry['resource']['id']}"


async def reports(
    client: httpx.AsyncClient, path: str = "/$indicators", **params: str
) -> list[dict[str, Any]]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "collection"
    return [e["resource"] for e in body.get("entry", [])]


async def report(
    client: httpx.AsyncClient, indicator: str, path: str = "/$indicators", **params: str
) -> dict[str, Any]:
    [found] = await reports(client, path, indicator=indicator, **params)
    assert found["measure"] == f"{MEASURE}/sip-{indicator}"
    return found


def counts(found: dict[str, Any]) -> dict[str, int]:
    [group] = found["group"]
    return {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}


def score(found: dict[str, Any]) -> Any:
    return found["group"][0].get("measureScore", {}).get("value")


def late(found: dict[str, Any]) -> set[str]:
    return {r["reference"] for r in found.get("evaluatedResource", [])}


async def acknowledgement_case(
    client: httpx.AsyncClient, store: Storage, clock: FixedClock
) -> None:
    """Admission notice (due 3 Nov 12:00): the health centre acknowledges on time, the
    municipality never. Ready for discharge (due 9 Nov 12:00): health centre on time,
    municipality late, home care never. Discharge notice: due 11 Nov 12:00, after the
    clock's now (10 Nov 14:00), when the sweep has marked the open ones overdue."""
    await put(client, example("Communication-admission-notice"))
    await put(client, example("Communication-admission-notice-acknowledgement"))
    await put(client, example("Communication-ready-for-discharge"))
    for id, sender, sent in [
        ("ack-ready-hc", HEALTH_CENTRE, "2026-11-09T11:00:00+01:00"),
        ("ack-ready-mun", MUNICIPALITY, "2026-11-09T13:00:00+01:00"),
    ]:
        await put(client, acknowledgement(id, "ready-for-discharge", sender, sent))
    clock.moment = at("2026-11-10T14:00:00+01:00")
    await sweep(store, clock)
    await put(client, example("Communication-discharge-notice"))


async def test_r_ind_01_acknowledgements_by_12_00(
    client: httpx.AsyncClient, store: Storage, clock: FixedClock
) -> None:
    """R-IND-01, R-DIS-05: of the eight acknowledgements due in November, five were due by
    now, two of them were on time: 0.4; the late one and the two never sent are listed."""
    await acknowledgement_case(client, store, clock)
    found = await report(client, "acknowledgement-on-time", **NOVEMBER)
    assert found["status"] == "complete" and found["type"] == "summary"
    assert found["period"] == {"start": "2026-11-01", "end": "2026-11-30"}
    assert "reporter" not in found
    assert counts(found) == {"initial-population": 8, "denominator": 5, "numerator": 2}
    assert score(found) == 0.4
    ready = "Communication/ready-for-discharge"
    never = await task_of(client, "kvittera-meddelande", MUNICIPALITY, ADMISSION)
    assert late(found) == {
        never,
        await task_of(client, "kvittera-meddelande", MUNICIPALITY, ready),
        await task_of(client, "kvittera-meddelande", HOME_CARE, ready),
    }
    overdue = (await client.get(f"/{never}")).json()  # as the sweep marked it
    assert overdue["businessStatus"]["coding"][0]["code"] == "overdue"


async def test_r_ind_01_a_task_counts_in_the_period_of_its_deadline(
    client: httpx.AsyncClient, store: Storage, clock: FixedClock
) -> None:
    """R-IND-01: a one-day period holds the Tasks due that Stockholm day; a day without any
    has empty populations and no score."""
    await acknowledgement_case(client, store, clock)
    day = {"periodStart": "2026-11-03", "periodEnd": "2026-11-03"}
    found = await report(client, "acknowledgement-on-time", **day)
    assert counts(found) == {"initial-population": 2, "denominator": 2, "numerator": 1}
    assert score(found) == 0.5
    quiet = {"periodStart": "2026-11-04", "periodEnd": "2026-11-08"}
    found = await report(client, "acknowledgement-on-time", **quiet)
    assert counts(found) == {"initial-population": 0, "denominator": 0, "numerator": 0}
    assert "measureScore" not in found["group"][0] and "evaluatedResource" not in found


async def test_r_ind_01_an_organisation_counts_the_tasks_it_owns(
    client: httpx.AsyncClient, store: Storage, clock: FixedClock
) -> None:
    """R-IND-01: `Organization/[id]/$indicators` counts that organisation's Tasks, also
    those owned by a PractitionerRole of it (the example's `uppratta-sip`, done on time), and
    names it as the reporter."""
    await acknowledgement_case(client, store, clock)
    path = f"/{MUNICIPALITY}/$indicators"
    found = await report(client, "acknowledgement-on-time", path, **NOVEMBER)
    assert found["reporter"] == {"reference": MUNICIPALITY}
    assert counts(found) == {"initial-population": 3, "denominator": 2, "numerator": 0}
    assert score(found) == 0.0 and len(late(found)) == 2
    found = await report(
        client, "acknowledgement-on-time", f"/{HEALTH_CENTRE}/$indicators", **NOVEMBER
    )
    assert counts(found) == {"initial-population": 3, "denominator": 2, "numerator": 2}
    assert score(found) == 1.0 and "evaluatedResource" not in found

    await put(client, example("Task-establish-sip"))  # owner the health centre's fast vårdkontakt
    december = {"periodStart": "2026-12-01", "periodEnd": "2026-12-31"}
    found = await report(
        client, "plan-established-21-days", f"/{HEALTH_CENTRE}/$indicators", **december
    )
    # and the health centre's own, opened by the discharge notice: not due yet
    assert counts(found) == {"initial-population": 2, "denominator": 1, "numerator": 1}
    assert score(found) == 1.0
    found = await report(client, "plan-established-21-days", path, **december)
    assert counts(found)["initial-population"] == 0


async def two_more_stays(client: httpx.AsyncClient) -> None:
    """The example stay (admitted 2 Nov 09:45, notice 15:05: on time) and two more: one
    whose admission notice came 25 h after the start, one whose notice came late but whose
    own `skicka-inskrivningsmeddelande` Task was done on time; and a stay with no notice."""
    await put(client, example("Communication-admission-notice"))
    await put(client, stay("late-stay", "2026-11-05T08:00:00+01:00", "2026-11-20T10:00:00+01:00"))
    notice = message(
        "Communication-admission-notice",
        id="late-notice",
        encounter={"reference": "Encounter/late-stay"},
        sent="2026-11-06T09:00:00+01:00",
    )
    await put(client, notice)
    await put(client, stay("tasked-stay", "2026-11-12T08:00:00+01:00", "2026-11-14T12:00:00+01:00"))
    notice = message(
        "Communication-admission-notice",
        id="tasked-notice",
        encounter={"reference": "Encounter/tasked-stay"},
        sent="2026-11-14T08:00:00+01:00",
    )
    await put(client, notice)
    task = obligation(
        "send-admission-notice",
        "skicka-inskrivningsmeddelande",
        WARD,
        "2026-11-13T20:00:00+01:00",
        "2026-11-13T19:00:00+01:00",
        encounter={"reference": "Encounter/tasked-stay"},
    )
    await put(client, task)
    await put(client, stay("quiet-stay", "2026-11-15T08:00:00+01:00", "2026-11-16T12:00:00+01:00"))


async def test_r_ind_01_admission_notices_within_24_hours(client: httpx.AsyncClient) -> None:
    """R-IND-01, R-DIS-01: a stay with an admission notice counts, on time when the first
    notice was sent within 24 h of `Encounter.period.start`; a stay with its own Task counts
    by the Task instead; a stay without a notice does not count."""
    await two_more_stays(client)
    found = await report(client, "admission-notice-24h", **NOVEMBER)
    assert counts(found) == {"initial-population": 3, "denominator": 3, "numerator": 2}
    assert score(found) == 0.6667
    assert late(found) == {"Encounter/late-stay"}
    path = f"/{MUNICIPALITY}/$indicators"  # received both notices, owns no Task
    found = await report(client, "admission-notice-24h", path, **NOVEMBER)
    assert counts(found) == {"initial-population": 2, "denominator": 2, "numerator": 1}
    found = await report(client, "admission-notice-24h", f"/{WARD}/$indicators", **NOVEMBER)
    assert counts(found)["initial-population"] == 3
    found = await report(client, "admission-notice-24h", f"/{REGION}/$indicators", **NOVEMBER)
    assert counts(found)["initial-population"] == 0 and "measureScore" not in found["group"][0]


async def test_r_ind_01_median_days_from_ready_for_discharge_to_discharge(
    client: httpx.AsyncClient,
) -> None:
    """R-IND-01: days (Stockholm dates) from the first ready-for-discharge notice to
    `Encounter.period.end` of the stays discharged in the period: 1 and 4, median 2.5; a
    notice sent after the discharge is counted but not measured; a stay discharged in
    December is not in November."""
    await two_more_stays(client)
    await put(client, example("Communication-ready-for-discharge"))  # 9 Nov → 10 Nov
    for id, encounter, sent in [
        ("late-ready", "late-stay", "2026-11-16T09:00:00+01:00"),  # → 20 Nov: 4 days
        ("late-ready-again", "late-stay", "2026-11-18T09:00:00+01:00"),  # not the first
        ("tasked-ready", "tasked-stay", "2026-11-15T09:00:00+01:00"),  # after 14 Nov
    ]:
        notice = message(
            "Communication-ready-for-discharge",
            id=id,
            sent=sent,
            encounter={"reference": f"Encounter/{encounter}"},
        )
        await put(client, notice)
    await put(
        client, stay("december-stay", "2026-11-25T08:00:00+01:00", "2026-12-02T12:00:00+01:00")
    )
    notice = message(
        "Communication-ready-for-discharge",
        id="december-ready",
        sent="2026-11-29T09:00:00+01:00",
        encounter={"reference": "Encounter/december-stay"},
    )
    await put(client, notice)
    found = await report(client, "days-ready-to-discharge", **NOVEMBER)
    assert counts(found) == {
        "initial-population": 3,
        "measure-population": 2,
        "measure-observation": 2,
    }
    assert found["group"][0]["measureScore"] == {
        "value": 2.5,
        "unit": "d",
        "system": "http://unitsofmeasure.org",
        "code": "d",
    }
    assert found["improvementNotation"]["coding"][0]["code"] == "decrease"
    assert late(found) == {"Encounter/inpatient-stay", "Encounter/late-stay"}
    december = await report(
        client, "days-ready-to-discharge", periodStart="2026-12-01", periodEnd="2026-12-31"
    )
    assert score(december) == 3  # 29 Nov → 2 Dec
    found = await report(client, "days-ready-to-discharge", f"/{REGION}/$indicators", **NOVEMBER)
    assert counts(found)["initial-population"] == 0 and "measureScore" not in found["group"][0]


async def test_r_ind_01_sip_invitations_of_ready_for_discharge_notices_only(
    client: httpx.AsyncClient, store: Storage, clock: FixedClock
) -> None:
    """R-IND-01, R-DIS-10: the health centre's invitation Task of the ready-for-discharge
    notice (due 12 Nov) is still open on 13 Nov: 0 of 1; an invitation Task about another
    message is not this indicator's."""
    await put(client, example("Communication-admission-notice"))
    await put(client, example("Communication-ready-for-discharge"))
    other = obligation(
        "other-invitation",
        "skicka-sip-kallelse",
        HEALTH_CENTRE,
        "2026-11-05T23:59:59+01:00",
        "2026-11-04T10:00:00+01:00",
    )
    await put(client, other)
    clock.moment = at("2026-11-13T08:00:00+01:00")
    found = await report(client, "invitation-3-days", **NOVEMBER)
    assert counts(found) == {"initial-population": 1, "denominator": 1, "numerator": 0}
    ready = "Communication/ready-for-discharge"
    assert late(found) == {await task_of(client, "skicka-sip-kallelse", HEALTH_CENTRE, ready)}


async def test_r_ind_01_plans_documented_within_3_days_and_followed_up(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """R-IND-01, R-SIP-06, R-SIP-08: done on time counts; done late (`businessStatus` late),
    or open past the deadline, is late; cancelled does not count; not yet due is only in
    the initial population. Both indicators in one request, in the order asked."""
    due = "2026-11-20T23:59:59+01:00"
    late_status = {
        "coding": [
            {"system": "http://sip-fhir.se/fhir/CodeSystem/sip-obligation-status", "code": "late"}
        ]
    }
    documenting = "dokumentera-plan"
    for task in [
        obligation("doc-on-time", documenting, HEALTH_CENTRE, due, "2026-11-19T10:00:00+01:00"),
        obligation("doc-late", documenting, MUNICIPALITY, due, "2026-11-22T10:00:00+01:00",
                   businessStatus=late_status),
        obligation("doc-open", documenting, WARD, due),
        obligation("doc-cancelled", documenting, HOME_CARE, due, status="cancelled"),
        obligation("doc-not-due", documenting, WARD, "2026-11-30T23:59:59+01:00"),
        obligation("follow-up", "folja-upp-plan", HEALTH_CENTRE, "2026-11-25T23:59:59+01:00",
                   "2026-11-24T15:00:00+01:00"),
    ]:  # fmt: skip
        await put(client, task)
    clock.moment = at("2026-11-28T09:00:00+01:00")
    documented, followed = await reports(
        client, indicator="plan-documented-3-days,plan-followed-up", **NOVEMBER
    )
    assert documented["measure"] == f"{MEASURE}/sip-plan-documented-3-days"
    assert counts(documented) == {"initial-population": 4, "denominator": 3, "numerator": 1}
    assert score(documented) == 0.3333
    assert late(documented) == {"Task/doc-late", "Task/doc-open"}
    assert followed["measure"] == f"{MEASURE}/sip-plan-followed-up"
    assert counts(followed) == {"initial-population": 1, "denominator": 1, "numerator": 1}


async def test_r_ind_01_every_indicator_by_default_over_the_last_30_days(
    client: httpx.AsyncClient, clock: FixedClock
) -> None:
    """R-IND-01: without parameters every indicator, over the 30 days ending on the clock's
    today; each MeasureReport is valid R4 and measures a Measure the server publishes, with
    the populations its scoring names; POST with a Parameters body answers the same."""
    clock.moment = at("2026-11-10T14:00:00+01:00")
    found = await reports(client)
    assert [r["measure"] for r in found] == [i.measure for i in INDICATORS]
    for measure_report in found:
        assert measure_report["period"] == {"start": "2026-10-12", "end": "2026-11-10"}
        response = await client.post("/MeasureReport/$validate", json=measure_report)
        errors = [i for i in response.json()["issue"] if i["severity"] in ("error", "fatal")]
        assert errors == [], errors
        listed = (await client.get("/Measure", params={"url": measure_report["measure"]})).json()
        [entry] = listed["entry"]
        measure = entry["resource"]
        assert measure["status"] == "active"
        wanted = [p["code"]["coding"][0]["code"] for p in measure["group"][0]["population"]]
        assert list(counts(measure_report)) == wanted
    month = await reports(client, periodStart="2026-11", periodEnd="2026-11")
    assert {r["period"]["end"] for r in month} == {"2026-11-30"}
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "periodStart", "valueDate": "2026-11-01"},
            {"name": "indicator", "valueCode": "acknowledgement-on-time"},
            {"name": "indicator", "valueString": f"{MEASURE}/sip-plan-followed-up"},
        ],
    }
    response = await client.post(f"/{WARD}/$indicators", json=body)
    assert response.status_code == 200, response.text
    posted = [e["resource"] for e in response.json()["entry"]]
    assert [r["measure"].rsplit("/", 1)[1] for r in posted] == [
        "sip-acknowledgement-on-time",
        "sip-plan-followed-up",
    ]
    assert posted[0]["period"] == {"start": "2026-11-01", "end": "2026-11-10"}
    assert posted[0]["reporter"] == {"reference": WARD}


@pytest.mark.parametrize(
    ("params", "expression"),
    [
        ({"periodEnd": "9999"}, ["periodEnd"]),  # a day after it would overflow
        ({"periodStart": "0001-01-01"}, ["periodStart"]),
        ({"periodStart": "2026-13-01"}, ["periodStart"]),
        ({"periodStart": "2026-11-31"}, ["periodStart"]),
        ({"periodEnd": "2026-11-30T12:00:00+01:00"}, ["periodEnd"]),
        ({"periodStart": "2026-11-10", "periodEnd": "2026-11-01"}, ["periodStart", "periodEnd"]),
        ({"periodStart": "2027-01-01"}, ["periodStart"]),  # after the clock's today
        ({"indicator": "acknowledgement-on-time,waiting-times"}, ["indicator"]),
        ({"patient": "Patient/tolvan-tolvansson"}, ["patient"]),
    ],
)
async def test_r_ind_01_bad_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, str], expression: list[str]
) -> None:
    """R-IND-01: a parameter that is not a date, an unknown indicator or parameter, or a
    period that ends before it starts is 400 naming it."""
    response = await client.get("/$indicators", params=params)
    assert response.status_code == 400, response.text
    [issue] = response.json()["issue"]
    assert issue["severity"] == "error" and issue["code"] == "invalid"
    assert issue["expression"] == expression


async def test_r_ind_01_bad_requests_in_a_body_or_for_an_unknown_organisation(
    client: httpx.AsyncClient,
) -> None:
    """R-IND-01: a parameter given twice or unknown in a body is 400 at its place; an
    organisation the server does not hold is 404."""
    response = await client.get("/$indicators?periodStart=2026-11-01&periodStart=2026-11-02")
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["periodStart"]
    body = {"resourceType": "Parameters", "parameter": [{"name": "owner", "valueString": "x"}]}
    response = await client.post("/$indicators", json=body)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Parameters.parameter[0]"]
    body = {"resourceType": "Parameters", "parameter": [{"name": "periodEnd", "valueString": "x"}]}
    response = await client.post("/$indicators", json=body)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Parameters.parameter[0]"]
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "periodEnd", "valueDate": "2026-13"}],
    }
    response = await client.post("/$indicators", json=body)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Parameters.parameter[0].valueDate"]
    response = await client.post("/$indicators", json={"resourceType": "Patient"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["resourceType"]
    response = await client.get("/Organization/no-such-unit/$indicators")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_r_ind_01_operation_definitions_are_published_and_listed(
    client: httpx.AsyncClient,
) -> None:
    """R-IND-01, R-DIS-09: the OperationDefinitions of `$indicators` and `$payment-liability`
    are readable at the urls the CapabilityStatement names (system level and Organization
    for `$indicators`, Encounter for `$payment-liability`); the latter's out parameters are
    those the operation answers with."""
    statement = (await client.get("/metadata")).json()
    [rest] = statement["rest"]
    indicators = {"name": "indicators", "definition": OPERATIONS["$indicators"]}
    assert [o for o in rest["operation"] if o["name"] != "export"] == [indicators]  # $export: bulk
    assert "$indicators" not in {i["code"] for i in rest["interaction"]}
    resources = {r["type"]: r for r in rest["resource"]}
    assert indicators in resources["Organization"]["operation"]
    assert indicators not in resources["Patient"]["operation"]
    liability = {"name": "payment-liability", "definition": OPERATIONS["$payment-liability"]}
    assert liability in resources["Encounter"]["operation"]
    for url, code, types in [
        (OPERATIONS["$indicators"], "indicators", ["Organization"]),
        (OPERATIONS["$payment-liability"], "payment-liability", ["Encounter"]),
    ]:
        listed = (await client.get("/OperationDefinition", params={"url": url})).json()
        [entry] = listed["entry"]
        definition = entry["resource"]
        assert (definition["code"], definition["resource"]) == (code, types)
        assert definition["status"] == "active" and definition["instance"] is True
    definition = (await client.get("/OperationDefinition/Encounter-payment-liability")).json()
    outputs = {p["name"]: p["type"] for p in definition["parameter"] if p["use"] == "out"}
    assert outputs == {
        "liable": "boolean",
        "liabilityStart": "date",
        "liableDays": "integer",
        "dailyAmount": "Money",
        "amount": "Money",
        "agreement": "string",
        "reason": "string",
    }
    answer = (await client.get("/Encounter/inpatient-stay/$payment-liability")).json()
    for parameter in answer["parameter"]:
        kind = outputs[parameter["name"]]
        assert f"value{kind[0].upper()}{kind[1:]}" in parameter


async def test_r_ind_01_each_indicator_has_its_measure(client: httpx.AsyncClient) -> None:
    """R-IND-01: every indicator the server computes has a published Measure (profiles/) of
    the same scoring whose description names the indicator's rule."""
    for indicator in INDICATORS:
        listed = (await client.get("/Measure", params={"url": indicator.measure})).json()
        [entry] = listed["entry"]
        measure = entry["resource"]
        assert measure["id"] == f"sip-{indicator.code}"
        assert measure["scoring"]["coding"][0]["code"] == indicator.scoring
        assert measure["description"].startswith(f"{indicator.rule}:")

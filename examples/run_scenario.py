"""Play a scenario of the discharge and SIP process and print its timeline.

    python examples/run_scenario.py NAME [--base URL]

A scenario (`examples/scenarios/NAME.json`, format in `examples/scenarios/README.md`) is
a timed sequence of acts, each a transaction Bundle. Without `--base` it plays on a server
of its own, in this process (SQLite in a temporary directory), whose clock is set to each
step's `at` before the step is posted and which runs the overdue sweep after it. With
`--base` it posts to a running server, whose clock it cannot set: that server counts
"now" by its own clock.

After each act it prints the obligations (Tasks) the act opened, completed, moved or
cancelled and those the sweep found overdue; at the end the open and late obligations, the
stay's payment liability (`Encounter/[id]/$payment-liability`) and the indicators
(`$indicators`). The tests (`tests/test_scenarios.py`) play every scenario with `play`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import itertools
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx

if TYPE_CHECKING:
    from fhir_server.storage.port import Storage

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
SIP_CASE = HERE / "sip-case"
SUFFIX = ".json"
STOCKHOLM = ZoneInfo("Europe/Stockholm")
OBLIGATIONS = "http://sip-fhir.se/fhir/ValueSet/sip-obligation-type"
OBLIGATION_STATUS = "http://sip-fhir.se/fhir/CodeSystem/sip-obligation-status"
FHIR_JSON = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
Print = Callable[[str], None]


class ScenarioError(Exception):
    """A step did not go as the scenario says (refused when it should pass, or the reverse)."""


# -- the scenario file --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    at: datetime
    title: str
    bundle: dict[str, Any] | None  # None: only time passes (the sweep runs)
    refused: str | None = None  # the rule id the server must refuse the bundle with
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    description: str
    patient: str
    stay: str | None  # the Encounter whose payment liability is asked for at the end
    period: tuple[str, str]  # indicator period (periodStart, periodEnd)
    steps: tuple[Step, ...]


def names() -> list[str]:
    return sorted(p.name.removesuffix(SUFFIX) for p in SCENARIOS.glob(f"*{SUFFIX}"))


def load(name: str) -> Scenario:
    raw = json.loads((SCENARIOS / f"{name}{SUFFIX}").read_text(encoding="utf-8"))
    period = raw["indicatorPeriod"]
    steps = tuple(_step(s) for s in raw["steps"])
    for earlier, later in itertools.pairwise(steps):
        if later.at < earlier.at:
            raise ScenarioError(f"{name}: '{later.title}' comes before '{earlier.title}'")
    return Scenario(
        raw["name"],
        raw["title"],
        raw["description"],
        raw["patient"],
        raw.get("stay"),
        (period["start"], period["end"]),
        steps,
    )


def _step(raw: dict[str, Any]) -> Step:
    bundle = raw.get("bundle")
    if raw.get("reuse"):
        bundle = bundle or {"resourceType": "Bundle", "type": "transaction", "entry": []}
        bundle = {**bundle, "entry": reused(raw["reuse"]) + bundle["entry"]}
    at = datetime.fromisoformat(raw["at"]).astimezone(STOCKHOLM)
    return Step(at, raw["title"], bundle, raw.get("refused"), raw.get("note"))


def reused(patterns: list[str]) -> list[dict[str, Any]]:
    """PUT entries for the `examples/sip-case/` files whose names match `patterns`."""
    entries = []
    for path in sorted(SIP_CASE.glob("*.json")):
        if any(fnmatch.fnmatch(path.stem, p) for p in patterns):
            resource = json.loads(path.read_text(encoding="utf-8"))
            url = f"{resource['resourceType']}/{resource['id']}"
            entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
    return entries


# -- what happened ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One obligation Task's change in a step: opened, completed, late, moved, overdue,
    cancelled."""

    kind: str
    task: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Played:
    step: Step
    changes: list[Change]
    refusal: str | None = None


@dataclass(slots=True)
class Outcome:
    scenario: Scenario
    steps: list[Played] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # the patient's obligations
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)  # EpisodeOfCare by id
    liability: dict[str, Any] | None = None
    indicators: dict[str, dict[str, Any]] | None = None

    @property
    def open(self) -> list[dict[str, Any]]:
        return sorted((t for t in self.tasks.values() if t["status"] == "requested"), key=due)

    @property
    def overdue(self) -> list[dict[str, Any]]:
        return [t for t in self.open if business_status(t) == "overdue"]

    @property
    def late(self) -> list[dict[str, Any]]:
        done = sorted((t for t in self.tasks.values() if t["status"] == "completed"), key=due)
        return [t for t in done if business_status(t) == "late"]


def code(task: dict[str, Any]) -> str:
    return str(task["code"]["coding"][0]["code"])


def owner(task: dict[str, Any]) -> str:
    return str(task["owner"]["reference"])


def deadline(task: dict[str, Any]) -> str:
    return str(task["restriction"]["period"]["end"])


def due(task: dict[str, Any]) -> datetime:
    """The deadline as a moment (offsets differ across summer time)."""
    return datetime.fromisoformat(deadline(task))


def business_status(task: dict[str, Any]) -> str | None:
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == OBLIGATION_STATUS:
            return str(coding.get("code"))
    return None


ORDER = ("opened", "moved", "completed", "late", "overdue", "cancelled", "changed")


def changes(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[Change]:
    """What a step did to the obligations: a diff of the Task set before and after it, in
    the order of ORDER, then by deadline."""
    found = []
    for id, task in after.items():
        old = before.get(id)
        if old is None:
            found.append(Change("opened", task))
        elif deadline(old) != deadline(task) and task["status"] == "requested":
            found.append(Change("moved", task))
        if task["status"] != (old or {}).get("status", "requested"):
            found.append(Change(_status_change(task), task))
        elif business_status(task) == "overdue" and business_status(old or {}) != "overdue":
            found.append(Change("overdue", task))
    return sorted(found, key=lambda c: (ORDER.index(c.kind), due(c.task), owner(c.task)))


def _status_change(task: dict[str, Any]) -> str:
    if task["status"] == "completed":
        return "late" if business_status(task) == "late" else "completed"
    return "cancelled" if task["status"] == "cancelled" else "changed"


# -- talking to the server ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """A FHIR server to play on; `set_clock` and `sweep` exist only for one in this process."""

    http: httpx.AsyncClient
    set_clock: Callable[[datetime], None] | None = None
    sweep: Callable[[], Awaitable[int]] | None = None


async def obligations(http: httpx.AsyncClient, patient: str) -> dict[str, dict[str, Any]]:
    """The patient's obligation Tasks by id."""
    params = {"code:in": OBLIGATIONS, "patient": patient}
    return await search(http, "Task", params)


async def processes(http: httpx.AsyncClient, patient: str) -> dict[str, dict[str, Any]]:
    """The patient's processes (EpisodeOfCare) by id."""
    return await search(http, "EpisodeOfCare", {"patient": patient})


async def search(
    http: httpx.AsyncClient, type: str, criteria: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Every match of a search, by id, following the `next` links."""
    params: dict[str, str] | None = {**criteria, "_count": "500"}
    url, found = f"/{type}", {}
    while url:
        response = await http.get(url, params=params)
        response.raise_for_status()
        body = response.json()
        matches = [e["resource"] for e in body.get("entry", [])]
        found |= {r["id"]: r for r in matches if r["resourceType"] == type}
        url = next((link["url"] for link in body.get("link", []) if link["relation"] == "next"), "")
        params = None  # the next link carries them
    return found


async def post(http: httpx.AsyncClient, step: Step) -> str | None:
    """Post the step's transaction; the refusal message when the scenario expects one."""
    assert step.bundle is not None
    response = await http.post("", content=json.dumps(step.bundle), headers=FHIR_JSON)
    message = "; ".join(
        str(issue.get("diagnostics", ""))
        for issue in response.json().get("issue", [])
        if issue.get("severity") in ("error", "fatal")
    )
    if step.refused is None and response.status_code != 200:
        raise ScenarioError(f"{step.title}: {response.status_code} {message}")
    if step.refused is not None and not (response.status_code == 422 and step.refused in message):
        raise ScenarioError(
            f"{step.title}: expected a refusal by {step.refused}, got "
            f"{response.status_code} {message}"
        )
    return message if step.refused else None


async def play_step(server: Server, patient: str, step: Step) -> Played:
    """Set the clock to the step, post its act, sweep, and diff the obligations."""
    before = await obligations(server.http, patient)
    if server.set_clock is not None:
        server.set_clock(step.at)
    refusal = await post(server.http, step) if step.bundle is not None else None
    if server.sweep is not None:
        await server.sweep()
    return Played(step, changes(before, await obligations(server.http, patient)), refusal)


async def payment_liability(http: httpx.AsyncClient, stay: str) -> dict[str, Any]:
    """`$payment-liability` of the stay as {parameter name: value}."""
    response = await http.get(f"/{stay}/$payment-liability")
    if response.status_code != 200:
        return {"error": f"{response.status_code} {response.text[:200]}"}
    values = {}
    for parameter in response.json().get("parameter", []):
        value = next(v for k, v in parameter.items() if k.startswith("value"))
        values[parameter["name"]] = value.get("value") if isinstance(value, dict) else value
    return values


async def indicators(http: httpx.AsyncClient, period: tuple[str, str]) -> dict[str, dict[str, Any]]:
    """`$indicators` for the period: per Measure (its last path segment) the population
    counts, the score and the late cases (`evaluatedResource`)."""
    params = {"periodStart": period[0], "periodEnd": period[1]}
    response = await http.get("/$indicators", params=params)
    if response.status_code != 200:
        return {"error": {"status": response.status_code, "text": response.text[:200]}}
    found = {}
    for entry in response.json().get("entry", []):
        report = entry["resource"]
        group = (report.get("group") or [{}])[0]
        figures: dict[str, Any] = {
            p["code"]["coding"][0]["code"]: p.get("count", 0) for p in group.get("population", [])
        }
        figures["score"] = (group.get("measureScore") or {}).get("value")
        figures["evaluated"] = [r["reference"] for r in report.get("evaluatedResource", [])]
        found[str(report["measure"]).rsplit("/", 1)[-1]] = figures
    return found


async def play(scenario: Scenario, server: Server, out: Print = print) -> Outcome:
    """Every step in order, then the summary; prints the timeline as it goes."""
    outcome = Outcome(scenario)
    names: dict[str, str] = {}
    print_heading(scenario, server, out)
    for step in scenario.steps:
        played = await play_step(server, scenario.patient, step)
        outcome.steps.append(played)
        await learn_names(server.http, {owner(c.task) for c in played.changes}, names)
        print_step(played, names, out)
    await conclude(outcome, server.http)
    await learn_names(server.http, {owner(t) for t in outcome.tasks.values()}, names)
    print_summary(outcome, names, out)
    return outcome


async def conclude(outcome: Outcome, http: httpx.AsyncClient) -> None:
    """Where the scenario ended: obligations, processes, payment liability, indicators."""
    scenario = outcome.scenario
    outcome.tasks = await obligations(http, scenario.patient)
    outcome.processes = await processes(http, scenario.patient)
    if scenario.stay:
        outcome.liability = await payment_liability(http, scenario.stay)
    outcome.indicators = await indicators(http, scenario.period)


async def learn_names(http: httpx.AsyncClient, owners: set[str], names: dict[str, str]) -> None:
    """Add to `names` the `name` of each owner not in it yet (an Organization's; anything
    else stays its reference)."""
    for reference in owners - names.keys():
        response = await http.get(f"/{reference}")
        body = response.json() if response.status_code == 200 else {}
        names[reference] = str(body.get("name") or reference)


# -- printing -----------------------------------------------------------------------------


def local(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(STOCKHOLM).strftime("%Y-%m-%d %H:%M")


def print_heading(scenario: Scenario, server: Server, out: Print) -> None:
    out(f"{scenario.name}: {scenario.title}")
    out(scenario.description)
    if server.set_clock is None:
        out(
            "NOTE: playing on a running server, whose clock this script cannot set: acts with "
            "no recorded time of their own and the overdue sweep use that server's clock."
        )
    out("")


LABELS = {
    "opened": "opened   ",
    "completed": "done     ",
    "late": "done LATE",
    "moved": "moved    ",
    "overdue": "OVERDUE  ",
    "cancelled": "cancelled",
    "changed": "changed  ",
}


def describe(kind: str, task: dict[str, Any], names: dict[str, str]) -> str:
    what = task["code"]["coding"][0].get("display") or code(task)
    who = names.get(owner(task), owner(task))
    line = f"{LABELS[kind]}  {what} — {who}, senast {local(deadline(task))}"
    done = (task.get("executionPeriod") or {}).get("end")
    if kind in ("completed", "late") and done:
        line += f", utförd {local(done)}"
    return line


def describe_process(id: str, episode: dict[str, Any]) -> str:
    kinds = "+".join(c["code"] for t in episode.get("type", []) for c in t.get("coding", []))
    period = episode.get("period") or {}
    since = " – ".join(local(period[k]) for k in ("start", "end") if k in period)
    return f"EpisodeOfCare/{id} ({kinds}): {episode['status']}, {since}"


def print_step(played: Played, names: dict[str, str], out: Print) -> None:
    step = played.step
    out(f"{step.at:%Y-%m-%d %H:%M}  {step.title}")
    if step.note:
        out(f"      ({step.note})")
    if played.refusal is not None:
        out(f"      refused, as the scenario expects: {played.refusal}")
    for change in played.changes:
        out(f"      {describe(change.kind, change.task, names)}")


def print_summary(outcome: Outcome, names: dict[str, str], out: Print) -> None:
    out("")
    out(f"Open obligations: {len(outcome.open)} (overdue: {len(outcome.overdue)})")
    for task in outcome.open:
        kind = "overdue" if task in outcome.overdue else "opened"
        out(f"      {describe(kind, task, names)}")
    out(f"Completed late: {len(outcome.late)}")
    for task in outcome.late:
        out(f"      {describe('late', task, names)}")
    out("Processes:")
    for id, episode in outcome.processes.items():
        out(f"      {describe_process(id, episode)}")
    if outcome.liability is not None:
        out(f"Payment liability of {outcome.scenario.stay}:")
        for name, value in outcome.liability.items():
            out(f"      {name}: {value}")
    out(f"Indicators {outcome.scenario.period[0]} – {outcome.scenario.period[1]}:")
    for measure, figures in (outcome.indicators or {}).items():
        counts = ", ".join(f"{k} {v}" for k, v in figures.items() if k != "evaluated")
        out(f"      {measure}: {counts}")


# -- where to play ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def in_process(start: datetime, storage: Storage | None = None) -> AsyncIterator[Server]:
    """The server's ASGI app in this process, its clock fixed at `start` and set by each
    step; SQLite in a temporary directory unless a `storage` is given (the tests pass each
    engine). The timed sweep is left to `Server.sweep`, run after each step."""
    from fhir_server.api.app import create_app
    from fhir_server.config import Settings
    from fhir_server.sip.clock import FixedClock
    from fhir_server.sip.obligations import sweep
    from fhir_server.storage.sqlite import SqliteStorage

    with tempfile.TemporaryDirectory(prefix="sip-scenario-") as tmp:
        settings = Settings(sqlite_path=Path(tmp) / "fhir.sqlite3", obligation_sweep_interval=1e6)
        store = storage or SqliteStorage(settings.sqlite_path)
        clock = FixedClock(start)
        app = create_app(settings, store, clock)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://scenario/fhir", headers=FHIR_JSON
            ) as http:

                def set_clock(moment: datetime) -> None:
                    clock.moment = moment

                yield Server(http, set_clock, lambda: sweep(store, clock))


@contextlib.asynccontextmanager
async def remote(base: str) -> AsyncIterator[Server]:
    async with httpx.AsyncClient(base_url=base.rstrip("/"), headers=FHIR_JSON, timeout=60) as http:
        yield Server(http)


async def run(name: str, base: str | None, out: Print = print) -> Outcome:
    scenario = load(name)
    where = remote(base) if base else in_process(scenario.steps[0].at)
    async with where as server:
        return await play(scenario, server, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=names(), help="the scenario (examples/scenarios/)")
    parser.add_argument(
        "--base", help="base URL of a running server, e.g. http://localhost:8000/fhir"
    )
    arguments = parser.parse_args(argv)
    try:
        asyncio.run(run(arguments.name, arguments.base))
    except (ScenarioError, httpx.HTTPError) as error:
        print(f"scenario failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

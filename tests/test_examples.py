"""The shipped example data and the benchmark data set are valid R4 that the server accepts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.dataset import mixed_resources

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


SCENARIOS = EXAMPLES / "scenarios"  # timed transaction Bundles, played by test_scenarios.py


def example_files() -> list[Path]:
    """Every example resource: one resource per `*.json` file, outside `scenarios/`."""
    return sorted(p for p in EXAMPLES.rglob("*.json") if SCENARIOS not in p.parents)


def references(node: Any) -> set[str]:
    """Every `Reference.reference` value inside `node`."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            found.add(node["reference"])
        for value in node.values():
            found |= references(value)
    elif isinstance(node, list):
        for value in node:
            found |= references(value)
    return found


def in_dependency_order(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Referenced resources before the ones that reference them (cycles broken by file order)."""
    by_key = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(key: str) -> None:
        if key in seen or key not in by_key:
            return
        seen.add(key)
        for target in sorted(references(by_key[key])):
            visit(target)
        ordered.append(by_key[key])

    for key in by_key:
        visit(key)
    return ordered


def error_issues(body: dict[str, Any]) -> list[dict[str, Any]]:
    if body.get("resourceType") != "OperationOutcome":
        return []
    return [i for i in body.get("issue", []) if i.get("severity") in ("error", "fatal")]


def test_example_files_are_named_type_dash_id() -> None:
    files = example_files()
    assert files, "no example files found"
    for path in files:
        resource = json.loads(path.read_text(encoding="utf-8"))
        assert path.name == f"{resource['resourceType']}-{resource['id']}.json"


def test_example_references_all_resolve_within_the_examples() -> None:
    resources = [json.loads(p.read_text(encoding="utf-8")) for p in example_files()]
    keys = {f"{r['resourceType']}/{r['id']}" for r in resources}
    dangling = {
        (f"{r['resourceType']}/{r['id']}", target)
        for r in resources
        for target in references(r)
        if target not in keys
    }
    assert not dangling


async def test_every_example_is_accepted_by_put_without_error_issues(
    client: httpx.AsyncClient,
) -> None:
    resources = in_dependency_order(
        [json.loads(p.read_text(encoding="utf-8")) for p in example_files()]
    )
    for resource in resources:
        path = f"/{resource['resourceType']}/{resource['id']}"
        response = await client.put(path, json=resource)
        body = response.json()
        assert response.status_code in (200, 201), (path, response.status_code, body)
        assert not error_issues(body), (path, body)
        assert body["resourceType"] == resource["resourceType"], (path, body)
        assert body["id"] == resource["id"]
    for resource in resources:
        read = await client.get(f"/{resource['resourceType']}/{resource['id']}")
        assert read.status_code == 200


def test_mixed_resources_is_deterministic_and_keeps_the_mix() -> None:
    first = mixed_resources(200, seed=7)
    assert first == mixed_resources(200, seed=7)
    assert first != mixed_resources(200, seed=8)
    counts = Counter(r["resourceType"] for r in first)
    assert counts == {
        "Patient": 50,
        "Observation": 40,
        "CarePlan": 30,
        "Encounter": 20,
        "Organization": 20,
        "Practitioner": 20,
        "Goal": 10,
        "Appointment": 10,
    }
    assert all("id" not in r for r in first)


async def test_200_mixed_benchmark_resources_are_each_created(client: httpx.AsyncClient) -> None:
    for resource in mixed_resources(200):
        response = await client.post(f"/{resource['resourceType']}", json=resource)
        assert response.status_code == 201, (resource, response.json())

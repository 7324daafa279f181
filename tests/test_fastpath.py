"""The fast invariant evaluator agrees with fhirpathpy on every expression it accepts.

For each base-specification invariant (and the SIP profile rules) that `compile_simple`
takes, elements are built with every combination of the paths the expression names, the
leaves set to the expression's own string literals or to another value; the fast verdict
must equal fhirpathpy's (true, false or empty) wherever fhirpathpy gives one.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models

from fhir_server.validation.definitions import invariants
from fhir_server.validation.fastpath import _TOKEN, compile_simple
from fhir_server.validation.invariants import type_names

PROFILES = Path(__file__).resolve().parent.parent / "profiles"


def _expressions() -> list[str]:
    found = {
        rule.expression for rules in invariants().values() for rule in rules if "." in rule.path
    } | {
        rule.expression.replace(f"{rule.path}.", "")
        for rules in invariants().values()
        for rule in rules
        if "." not in rule.path
    }
    for path in PROFILES.glob("StructureDefinition-*.json"):
        sd = json.loads(path.read_text(encoding="utf-8"))
        for element in sd.get("differential", {}).get("element", []):
            found.update(c["expression"] for c in element.get("constraint", []))
        found.update(e["valueString"] for e in sd.get("extension", []) if "valueString" in e)
    return sorted(e for e in found if compile_simple(e, type_names()) is not None)


def _parts(expression: str) -> tuple[list[str], list[str]]:
    paths, literals = [], []
    for match in _TOKEN.finditer(expression):
        if match["path"] and match["path"] not in ("and", "or", "xor", "implies"):
            paths.append(match["path"])
        if match["string"]:
            literals.append(match["string"][1:-1])
    return sorted(set(paths))[:5], literals


def _element(paths: tuple[str, ...], leaf: Any) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for path in paths:
        *parents, last = path.split(".")
        current = node
        for name in parents:
            current = current.setdefault(name, {})
            if not isinstance(current, dict):
                break
        else:
            current[last] = leaf
    return node


def _fhirpath_verdict(expression: str, node: dict[str, Any]) -> bool | str | None:
    try:
        result = fhirpathpy.evaluate(node, expression)
    except Exception:
        return "no verdict"
    if result == []:
        return None
    return result[0] if len(result) == 1 and isinstance(result[0], bool) else "no verdict"


FAST = _expressions()


def test_the_fast_path_takes_over_half_of_the_distinct_invariants() -> None:
    assert len(FAST) >= 110, len(FAST)  # of 196 distinct expressions in R4


@pytest.mark.parametrize("expression", FAST)
def test_fast_path_equals_fhirpathpy(expression: str) -> None:
    fast = compile_simple(expression, type_names())
    assert fast is not None
    paths, literals = _parts(expression)
    compared = 0
    for size in range(len(paths) + 1):
        for chosen in itertools.combinations(paths, size):
            for leaf in [*literals[:2], "other", True]:
                node = _element(chosen, leaf)
                expected = _fhirpath_verdict(expression, node)
                try:
                    got: bool | str | None = fast(node)
                except ValueError:
                    got = "no verdict"
                if expected == "no verdict" or got == "no verdict":
                    continue
                compared += 1
                assert got == expected, (expression, node)
    assert compared > 0


# -- subscription topics' fhirPathCriteria (`%previous`, `%current`, `now()`) --------------

TOPIC_VARIABLES = frozenset({"previous", "current", "now"})
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "sip-case"


def _topic_criteria() -> list[tuple[str, str]]:
    """(resource type, expression) of every fhirPathCriteria in profiles/topics."""
    found = []
    for path in sorted((PROFILES / "topics").glob("*.json")):
        for trigger in json.loads(path.read_text(encoding="utf-8")).get("extension", []):
            parts = {e["url"]: e for e in trigger.get("extension", [])}
            if "fhirPathCriteria" in parts and "resource" in parts:
                kind = parts["resource"]["valueUri"].rsplit("/", 1)[-1]
                found.append((kind, parts["fhirPathCriteria"]["valueString"]))
    return found


def _variants(kind: str, literals: list[str]) -> list[dict[str, Any]]:
    """The examples of `kind`, each also with its status set to each of the expression's
    literals, without its category, extensions or code, and with a deadline past or to come."""
    out = []
    for path in sorted(EXAMPLES.glob(f"{kind}-*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        out.append(resource)
        out += [{**resource, "status": literal} for literal in literals]
        out += [{k: v for k, v in resource.items() if k != drop} for drop in _DROPPED]
        for end in ("2020-01-01T12:00:00+01:00", "2999-01-01T12:00:00Z"):
            out.append({**resource, "restriction": {"period": {"end": end}}})
    return out


_DROPPED = ("category", "extension", "code", "serviceType", "status")


def test_every_topic_criterion_is_taken_by_the_fast_path() -> None:
    criteria = _topic_criteria()
    assert len(criteria) >= 7, criteria
    for _, expression in criteria:
        assert compile_simple(expression, type_names(), None, TOPIC_VARIABLES), expression


@pytest.mark.parametrize(("kind", "expression"), _topic_criteria())
def test_topic_criteria_fast_path_equals_fhirpathpy(kind: str, expression: str) -> None:
    """On the example resources and their variants, as create and as update."""
    fast = compile_simple(expression, type_names(), None, TOPIC_VARIABLES)
    assert fast is not None
    _, literals = _parts(expression)
    variants = _variants(kind, literals)
    assert variants, kind
    slow = fhirpathpy.compile(expression, models["r4"])
    now = datetime.now(UTC)  # fhirpathpy's now() is the wall clock
    compared, outcomes = 0, set()
    for previous in [None, *variants[:: max(1, len(variants) // 12)]]:
        for current in variants:
            env = {"previous": previous or {}, "current": current}
            expected = slow(current, env) == [True]
            root = {**current, "%previous": previous or {}, "%current": current, "%now": now}
            try:
                got = fast(root) is True
            except ValueError:
                continue
            compared += 1
            outcomes.add(got)
            assert got == expected, (expression, previous, current)
    assert compared >= len(variants) * 6, compared
    assert outcomes == {True, False}, outcomes  # the variants reach both verdicts

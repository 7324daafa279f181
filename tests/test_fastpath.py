"""The fast invariant evaluator agrees with fhirpathpy on every expression it accepts.

For each base-specification invariant (and the SIP profile rules) that `compile_simple`
takes, elements are built with every combination of the paths the expression names, the
leaves set to the expression's own string literals or to another value; the fast verdict
must equal fhirpathpy's (true, false or empty) wherever fhirpathpy gives one.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import fhirpathpy
import pytest

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

"""Terminology bindings: required codes are errors, extensible ones warnings.

Why: `fhir.resources` accepts `CarePlan.status = "bogus"`; the R4 definitions bind such
elements to value sets whose codes the importer expanded.  A binding is compiled once per
element; the check is a set lookup.  Value sets whose codes live outside the R4 package
(SNOMED CT, BCP-47, MIME types) are marked incomplete and not judged offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .definitions import ValueSetCodes, bindings, core_valueset

_SHOWN = 12  # list the allowed codes in the message when there are this few


@dataclass(frozen=True, slots=True)
class Binding:
    """A compiled binding of one element: `check_*` return a message, or None if fine."""

    element: str
    strength: str  # required | extensible
    valueset: ValueSetCodes

    @property
    def severity(self) -> str:
        return "error" if self.strength == "required" else "warning"

    def _allowed(self) -> str:
        codes = sorted(self.valueset.bare_codes)
        if len(codes) <= _SHOWN:
            return f" (allowed: {', '.join(codes)})"
        return ""

    def check_code(self, value: str) -> str | None:
        if value in self.valueset.bare_codes:
            return None
        return (
            f"The code '{value}' is not in the {self.strength} value set "
            f"{self.valueset.url}{self._allowed()} [{self.element}]"
        )

    def _coding_ok(self, coding: Any) -> bool | None:
        """True/False if the coding is judged in/out of the value set; None if it has no code."""
        if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
            return None
        system = coding.get("system")
        if isinstance(system, str):
            return (system, coding["code"]) in self.valueset.codes
        return coding["code"] in self.valueset.bare_codes

    def check_coding(self, coding: dict[str, Any]) -> str | None:
        if self._coding_ok(coding) is not False:
            return None
        shown = f"{coding.get('system', '')}#{coding.get('code')}"
        return (
            f"The coding '{shown}' is not in the {self.strength} value set "
            f"{self.valueset.url} [{self.element}]"
        )

    def check_concept(self, concept: dict[str, Any]) -> str | None:
        codings = concept.get("coding")
        verdicts = [self._coding_ok(c) for c in codings] if isinstance(codings, list) else []
        if any(verdicts):
            return None
        if not any(v is False for v in verdicts) and self.strength != "required":
            return None  # text only: acceptable where the binding is extensible
        return (
            f"None of the codings is in the {self.strength} value set "
            f"{self.valueset.url}{self._allowed()} [{self.element}]"
        )


def core_binding(path: str) -> Binding | None:
    """The base specification's binding of an element, if it can be judged offline."""
    bound = bindings().get(path)
    if bound is None:
        return None
    valueset = core_valueset(bound[1])
    if valueset is None or not valueset.complete:
        return None
    return Binding(path, bound[0], valueset)

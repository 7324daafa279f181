"""FHIR errors: every failure leaves the server as an OperationOutcome with an HTTP status.

Any layer raises `FhirError`; the API layer renders it. `expression` is the FHIRPath location
of the problem, so a client can point at the offending element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue; `code` is from the FHIR issue-type value set."""

    severity: Severity
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


@dataclass(slots=True)
class FhirError(Exception):
    """A request that cannot be honoured, with the HTTP status that says why."""

    status: int
    issues: list[Issue]
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)


def error(status: int, code: str, message: str, *expression: str) -> FhirError:
    """The common case: one error issue."""
    return FhirError(status, [Issue("error", code, message, tuple(expression))])


def clipped(text: str, limit: int = 40) -> str:
    """Request text quoted in a message, cut short: a 5,000-digit header is not echoed."""
    return text if len(text) <= limit else text[:limit] + "…"


def internal_error(exc: BaseException) -> FhirError:
    """A defect of ours, as the client sees it: the exception's type, never its text."""
    message = f"Internal server error: {type(exc).__name__}"
    return FhirError(500, [Issue("fatal", "exception", message)])


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}

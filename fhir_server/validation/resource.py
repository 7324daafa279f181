"""The write-path check of one resource: the seam where the full validation engine plugs in.

Today: the R4 structure (official definitions: elements, types, cardinality, choice types),
then, for the types where `fhir.resources` R4B equals R4, its typed model (formats of
primitives). Problems that make the JSON not a well-formed resource are 400; a resource that
is well-formed but breaks a rule (cardinality) is 422, as the FHIR HTTP page says.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from fhir_server.errors import FhirError, Issue, error
from fhir_server.resource_types import is_resource_type
from fhir_server.validation.r4b_models import r4b_model
from fhir_server.validation.structure import check_structure

RULE_CODES = frozenset({"required"})


def check_resource(resource: dict[str, Any], expected_type: str | None = None) -> str:
    """Raise a FhirError unless `resource` is a valid R4 resource; return its type."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise error(400, "required", "Resource has no resourceType", "resourceType")
    if not is_resource_type(resource_type):
        raise error(
            400, "not-supported", f"'{resource_type}' is not an R4 resource type", "resourceType"
        )
    if expected_type is not None and resource_type != expected_type:
        raise error(
            400,
            "invalid",
            f"Resource type {resource_type} does not match the URL's {expected_type}",
            "resourceType",
        )
    issues = [Issue("error", i.code, i.message, (i.expression,)) for i in check_structure(resource)]
    if not issues:
        issues = _model_issues(resource_type, resource)
    if issues:
        status = 422 if all(i.code in RULE_CODES for i in issues) else 400
        raise FhirError(status, issues)
    return resource_type


def _model_issues(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    model = r4b_model(resource_type)
    if model is None:
        return []
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [
            Issue(
                "error", _issue_code(e["type"]), e["msg"], (_expression(resource_type, e["loc"]),)
            )
            for e in exc.errors(include_url=False)
        ]
    return []


def _issue_code(pydantic_type: str) -> str:
    if pydantic_type == "missing" or pydantic_type.endswith(".missing"):
        return "required"
    if pydantic_type == "extra_forbidden":
        return "structure"
    return "value"


def _expression(resource_type: str, loc: tuple[int | str, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith("__"):
            path += f".{part}"
    return path

"""The base-specification part of a resource's check, and the HTTP status its issues imply.

The R4 structure walk (elements, types, cardinality, primitive formats, bindings, reference
targets, invariants); `validator.py` adds the profiles and is what writes and `$validate`
call.  JSON that is not a well-formed resource is 400; a well-formed resource that breaks a
rule (cardinality, a required binding, an invariant, a profile) is 422, as the FHIR HTTP page
says.  Warnings never block a write; `$validate` reports them.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import Issue
from fhir_server.resource_types import is_resource_type
from fhir_server.validation.structure import check_structure

RULE_CODES = frozenset({"required", "code-invalid", "invariant", "invalid", "processing"})


def validate(
    resource: Any,
    expected_type: str | None = None,
    extensions: list[tuple[str, dict[str, Any]]] | None = None,
) -> list[Issue]:
    """Every issue found in `resource` (errors and warnings), as OperationOutcome issues.

    `extensions` collects the Extension objects met (see `check_structure`)."""
    if not isinstance(resource, dict):
        return [Issue("error", "structure", "A resource must be a JSON object", ())]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return [Issue("error", "required", "Resource has no resourceType", ("resourceType",))]
    if not is_resource_type(resource_type):
        message = f"'{resource_type}' is not an R4 resource type"
        return [Issue("error", "not-supported", message, ("resourceType",))]
    if expected_type is not None and resource_type != expected_type:
        message = f"Resource type {resource_type} does not match the URL's {expected_type}"
        return [Issue("error", "invalid", message, ("resourceType",))]
    return [
        Issue(i.severity, i.code, i.message, (i.expression,))  # type: ignore[arg-type]
        for i in check_structure(resource, extensions)
    ]


def status_for(issues: list[Issue]) -> int | None:
    """The HTTP status a write gets for these issues: None if nothing blocks it."""
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if not errors:
        return None
    return 422 if all(i.code in RULE_CODES for i in errors) else 400

"""`$validate` (Resource-validate): the write path's verdict without the write.

Why: EHR vendors check a resource while the user edits it.  The same `Validator` judges a
create or update here as on the write path, so "valid" means "would be stored".  The
result is always an OperationOutcome with status 200; 4xx means the request itself was
unusable (no resource, unknown mode), as the specification and Medplum do.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import Issue, error

from .context import Context
from .crud import read
from .swedish_ids import normalise_identifiers

MODES = ("create", "update", "delete", "profile")


def unpack(body: dict[str, Any], query: list[tuple[str, str]]) -> tuple[Any, str, str | None]:
    """(resource, mode, profile) from a resource body or a Parameters body plus the query."""
    params = dict(query)
    mode, profile = params.get("mode"), params.get("profile")
    resource: Any = body
    if body.get("resourceType") == "Parameters":
        resource = None
        parameters = body.get("parameter") or []
        if not isinstance(parameters, list):
            raise error(400, "structure", "Parameters.parameter must be an array", "Parameters")
        for i, parameter in enumerate(parameters):
            name = parameter.get("name") if isinstance(parameter, dict) else None
            where = f"Parameters.parameter[{i}]"
            if name == "resource":
                resource = parameter.get("resource")
            elif name == "mode":
                mode = parameter.get("valueCode")
            elif name == "profile":
                profile = parameter.get("valueUri") or parameter.get("valueCanonical")
            else:
                raise error(400, "invalid", f"Unknown $validate parameter '{name}'", where)
    mode = mode or "create"
    if profile is not None and not isinstance(profile, str):
        raise error(400, "invalid", "profile must be a canonical URL", "profile")
    if not isinstance(mode, str) or mode not in MODES:
        raise error(400, "invalid", f"mode must be one of {', '.join(MODES)}", "mode")
    if resource is None and mode != "delete":
        raise error(400, "required", "$validate needs a 'resource' parameter", "resource")
    return resource, mode, profile


async def validate(
    ctx: Context, type: str, id: str | None, resource: Any, mode: str, profile: str | None
) -> list[Issue]:
    """Issues for validating `resource` as a `mode` of type (and instance `id`)."""
    if mode == "delete":
        if id is None:
            raise error(400, "required", "mode=delete needs an instance: [type]/[id]/$validate")
        await read(ctx, type, id)  # 404/410 if there is nothing to delete
        message = f"{type}/{id} may be deleted (no referential integrity is enforced)"
        return [Issue("information", "informational", message)]
    if isinstance(resource, dict):
        normalise_identifiers(resource)  # judged as a write would store it
    issues = ctx.validator.validate(resource, type, profile)
    if mode == "update":
        body_id = resource.get("id") if isinstance(resource, dict) else None
        if body_id is None:
            issues.append(
                Issue("error", "required", "An update needs the resource id", (f"{type}.id",))
            )
        elif id is not None and body_id != id:
            message = f"Resource id '{body_id}' must equal the URL's id '{id}'"
            issues.append(Issue("error", "invalid", message, (f"{type}.id",)))
    if not issues:
        issues = [Issue("information", "informational", "Validation successful: no issues")]
    return issues

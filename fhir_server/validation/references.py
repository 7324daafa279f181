"""Reference checks: the target type must be one the element definition allows.

Why: `CarePlan.subject` may point at a Patient or a Group, not at an Organization; the R4
definitions list the targets (`targetProfile`) and the importer kept them per element.
Contained (`#id`) references are judged by `ref-1`; `urn:uuid:` references (transaction
bundles) must be well-formed UUIDs; conditional references (`Patient?identifier=…`) are
left to the bundle that resolves them.
"""

from __future__ import annotations

import re
from typing import Any

from .definitions import resource_types

_LITERAL = re.compile(
    r"(?:(?:https?://\S+/)?)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_UUID = re.compile(
    r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_CONDITIONAL = re.compile(r"[A-Z][A-Za-z]+\?\S*")


def reference_type(ref: str) -> str | None:
    """The resource type a literal reference (`Type/id`, `…/Type/id/_history/v`) names."""
    match = _LITERAL.fullmatch(ref)
    return match.group(1) if match else None


def _allowed(targets: frozenset[str]) -> str:
    return ", ".join(sorted(targets))


def reference_problem(
    reference: dict[str, Any], targets: frozenset[str], contained: dict[str, str]
) -> str | None:
    """Why this Reference is not acceptable here, or None (`contained`: id -> type)."""
    declared = reference.get("type")
    if isinstance(declared, str) and declared in resource_types():
        if targets and declared not in targets:
            return f"Reference.type '{declared}' is not allowed here (allowed: {_allowed(targets)})"
    else:
        declared = None
    ref = reference.get("reference")
    if isinstance(ref, str) and ref.startswith("#") and targets:
        rtype = contained.get(ref[1:])
        if rtype is not None and rtype not in targets:
            return f"A reference to {rtype} is not allowed here (allowed: {_allowed(targets)})"
    if not isinstance(ref, str) or ref.startswith("#") or ref.startswith("urn:oid:"):
        return None
    if ref.startswith("urn:uuid:"):
        return None if _UUID.fullmatch(ref) else f"'{ref}' is not a valid urn:uuid reference"
    match = _LITERAL.fullmatch(ref)
    if match is None:
        if _CONDITIONAL.fullmatch(ref) or re.match(r"[a-z][a-z0-9+.-]*:", ref):
            return None  # conditional (resolved in bundles) or an external absolute URL
        return f"'{ref}' is not a valid reference (expected Type/id, an absolute URL or #id)"
    rtype = match.group(1)
    if rtype not in resource_types():
        if ref.startswith(("http://", "https://")):
            return None  # some other server's URL whose last segments only look like Type/id
        return f"'{rtype}' in reference '{ref}' is not a resource type"
    if targets and rtype not in targets:
        return f"A reference to {rtype} is not allowed here (allowed: {_allowed(targets)})"
    if declared is not None and declared != rtype:
        return f"Reference.type '{declared}' does not match the reference '{ref}'"
    return None

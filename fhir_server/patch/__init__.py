"""PATCH documents (R4 http.html#patch), applied to a resource as pure functions.

The media type says what the body is: `application/json-patch+json` a JSON Patch (RFC 6902),
FHIR JSON a FHIRPath Patch `Parameters` resource. A document is parsed (and judged: 400 when
malformed) before any storage is touched, then applied to the current version; an operation
the resource cannot take is 422, and so is one whose result would be larger than a body
may be (`cost.py`). Nothing here does I/O, so bundles can patch too.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any, Protocol

from fhir_server import fhirjson
from fhir_server.errors import error
from fhir_server.patch.cost import DEFAULT_LIMIT
from fhir_server.patch.fhirpath_patch import apply_fhirpath_patch, parse_fhirpath_patch
from fhir_server.patch.json_patch import apply_json_patch, parse_json_patch

JSON_PATCH = "application/json-patch+json"
FHIRPATH_PATCH_TYPES = frozenset({"application/fhir+json", "application/json"})
MEDIA_TYPES = frozenset({JSON_PATCH, *FHIRPATH_PATCH_TYPES})


class Patch(Protocol):
    """A parsed patch: `resource` to its patched copy, whose size may not pass `limit`."""

    def __call__(self, resource: dict[str, Any], *, limit: int = ...) -> dict[str, Any]: ...


def parse_patch(body: bytes | dict[str, Any] | list[Any], media_type: str) -> Patch:
    """The patch a body holds, as a function from a resource to its patched copy.

    `body` is the request's bytes, or a document parsed already (a bundle entry's resource).
    """
    if media_type == JSON_PATCH:
        document = loads_json(body) if isinstance(body, bytes) else body
        return partial(apply_json_patch, operations=parse_json_patch(document))
    if media_type in FHIRPATH_PATCH_TYPES:
        document = fhirjson.loads_resource(body) if isinstance(body, bytes) else body
        return partial(apply_fhirpath_patch, operations=parse_fhirpath_patch(document))
    accepted = ", ".join(sorted(MEDIA_TYPES))
    raise error(415, "not-supported", f"PATCH takes {accepted}, not '{media_type}'")


def apply_patch(
    resource: dict[str, Any],
    body: bytes | dict[str, Any] | list[Any],
    media_type: str,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """`resource` with the patch applied (a new dict; `resource` is left as it was)."""
    return parse_patch(body, media_type)(resource, limit=limit)


def loads_json(body: bytes) -> Any:
    """Any JSON value (a JSON Patch is an array), parsed as `fhirjson` parses resources:
    decimals keep their text, repeated keys and NaN are errors (400)."""
    try:
        return json.loads(
            body.decode("utf-8"),
            parse_float=fhirjson.Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
    except UnicodeDecodeError as exc:
        raise error(400, "invalid", f"Body is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise error(400, "invalid", f"Body is not valid JSON: {exc.msg} ({where})") from None
    except RecursionError:
        raise error(400, "invalid", "Body is nested too deeply") from None
    except ValueError as exc:
        raise error(400, "invalid", f"Body is not valid JSON: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")

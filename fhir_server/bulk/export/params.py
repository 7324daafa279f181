"""The `$export` kick-off parameters (Bulk Data Access IG v2), read from the query (GET) or a
`Parameters` body (POST), checked as strictly as a search.

Why strict: an export runs for minutes and its files are kept for hours, so a parameter the
server would silently ignore (a misspelt `_typeFilter`, an unknown type) costs the client far
more than a 400 at once. `Prefer: handling=lenient` drops the parameters this server does not
offer (`_elements`, `includeAssociatedData`, unknown names), reporting them as warnings; a
malformed value is always a 400. Every error names where it was: the query parameter, or
`Parameters.parameter[i]` of the body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from fhir_server.errors import FhirError, Issue, clipped, error
from fhir_server.interactions.versions import INSTANT_FORMAT
from fhir_server.resource_types import is_resource_type, resource_types
from fhir_server.search.parser import parse_search
from fhir_server.search.registry import RESULT_PARAMS
from fhir_server.validation.definitions import compartments

Level = Literal["system", "patient", "group"]
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
NDJSON = "application/fhir+ndjson"
MAX_TYPE_FILTERS = 100
MAX_PATIENTS = 10_000
INSTANT = re.compile(
    r"(?P<main>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?(?P<zone>Z|[+-][0-9]{2}:[0-9]{2})"
)
PATIENT_REFERENCE = re.compile(r"Patient/(?P<id>[A-Za-z0-9\-.]{1,64})")
UNSUPPORTED = {
    "_elements": "_elements is not offered: whole resources are exported",
    "includeAssociatedData": "includeAssociatedData is not offered",
}
IGNORED = frozenset({"_format", "_pretty"})  # the kick-off response's own format


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter as the client sent it; `where` is the expression an error names."""

    name: str
    value: Any
    where: str


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export: `types` in order, each bounded by `since` and, when given, by its
    `_typeFilter` queries (kept as written: the job parses them again when it runs)."""

    level: Level
    types: tuple[str, ...]
    since: str | None = None  # fixed-width UTC instant, as lastUpdated is stored
    type_filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    output_format: str = NDJSON
    patients: tuple[str, ...] | None = None  # `patient` (POST): ids of Patients to cover
    warnings: tuple[Issue, ...] = ()


def read_params(query: list[tuple[str, str]], body: dict[str, Any] | None) -> list[Param]:
    """The query's pairs and, for a POST, the body's `Parameters.parameter`s."""
    found = [Param(name, value, name) for name, value in query if name not in IGNORED]
    if body is None:
        return found
    if body.get("resourceType") != "Parameters":
        raise error(400, "invalid", "The body of $export must be a Parameters resource")
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list):
        raise error(400, "invalid", "Parameters.parameter must be a list", "Parameters.parameter")
    for index, parameter in enumerate(parameters):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            raise error(400, "invalid", "A parameter needs a name", where)
        values = [(k, v) for k, v in parameter.items() if k.startswith("value")]
        if len(values) != 1:
            raise error(400, "invalid", f"Parameter '{parameter['name']}' needs one value", where)
        key, value = values[0]
        found.append(Param(parameter["name"], value, f"{where}.{key}"))
    return found


def parse_request(level: Level, params: list[Param], *, lenient: bool) -> ExportRequest:
    """The request the parameters make at `level`; 400 naming the first fault."""
    warnings: list[Issue] = []
    types: list[str] | None = None
    since: str | None = None
    output_format = NDJSON
    filters: list[tuple[str, str, Param]] = []
    patients: list[str] | None = None
    seen: set[str] = set()
    for param in params:
        name = param.name
        if name in ("_since", "_outputFormat") and name in seen:
            raise error(400, "invalid", f"{name} may be given once", param.where)
        seen.add(name)
        if name == "_type":
            types = [*(types or []), *_types(level, param)]
        elif name == "_since":
            since = _since(param)
        elif name == "_outputFormat":
            output_format = _output_format(param)
        elif name == "_typeFilter":
            filters.append((*_type_filter(param), param))
            if len(filters) > MAX_TYPE_FILTERS:
                message = f"More than {MAX_TYPE_FILTERS} _typeFilter values"
                raise error(400, "too-costly", message, param.where)
        elif name == "patient":
            patients = [*(patients or []), _patient(level, param)]
            if len(patients) > MAX_PATIENTS:
                message = f"More than {MAX_PATIENTS} patient values"
                raise error(400, "too-costly", message, param.where)
        else:
            message = UNSUPPORTED.get(name, f"Unknown $export parameter '{clipped(name)}'")
            if not lenient:
                raise error(400, "not-supported", message, param.where)
            warnings.append(Issue("warning", "not-supported", message + " (ignored)", (name,)))
    chosen = sorted(set(types)) if types is not None else default_types(level)
    by_type: dict[str, list[str]] = {}
    for type, query, param in filters:
        if type not in chosen:
            message = f"_typeFilter names {type}, which this export leaves out (see _type)"
            raise error(400, "invalid", message, param.where)
        by_type.setdefault(type, []).append(query)
    return ExportRequest(
        level,
        tuple(chosen),
        since,
        {type: tuple(queries) for type, queries in by_type.items()},
        output_format,
        None if patients is None else tuple(sorted(set(patients))),
        tuple(warnings),
    )


def default_types(level: Level) -> list[str]:
    """Every type at system level; the Patient compartment's types (and Patient) otherwise."""
    if level == "system":
        return sorted(resource_types())
    return sorted({*compartments()["Patient"], "Patient"})


def _text(param: Param) -> str:
    if not isinstance(param.value, str):
        raise error(400, "invalid", f"{param.name} must be a string", param.where)
    return param.value


def _types(level: Level, param: Param) -> list[str]:
    names = [t.strip() for t in _text(param).split(",")]
    unknown = [clipped(t) for t in names if not is_resource_type(t)]
    if unknown:
        raise error(400, "invalid", f"_type: not resource types: {unknown}", param.where)
    allowed = set(default_types(level))
    outside = [t for t in names if t not in allowed]
    if outside:
        message = f"_type: {outside} are never in a Patient compartment ({level}-level export)"
        raise error(400, "invalid", message, param.where)
    return names


def _since(param: Param) -> str:
    """A FHIR instant (seconds and a zone required) as a UTC instant with microseconds."""
    text = _text(param)
    match = INSTANT.fullmatch(text)
    if match is None:
        message = f"_since '{clipped(text)}' is not a FHIR instant like 2026-01-31T12:00:00Z"
        raise error(400, "invalid", message, param.where)
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    try:
        moment = datetime.fromisoformat(f"{match['main']}.{fraction}{zone}").astimezone(UTC)
    except (ValueError, OverflowError):
        message = f"_since '{text}' is not a valid instant"
        raise error(400, "invalid", message, param.where) from None
    return moment.strftime(INSTANT_FORMAT)


def _output_format(param: Param) -> str:
    text = _text(param)
    # `application/fhir+ndjson` unencoded in a URL arrives with a space for its `+`.
    if text.split(";")[0].strip().replace(" ", "+") not in OUTPUT_FORMATS:
        message = f"_outputFormat '{clipped(text)}' is not offered; use {NDJSON}"
        raise error(400, "not-supported", message, param.where)
    return NDJSON


def _type_filter(param: Param) -> tuple[str, str]:
    """`Type?criteria`, parsed now by the search parser so a bad one fails the kick-off."""
    text = _text(param)
    type, mark, query = text.partition("?")
    if not mark or not query:
        message = f"_typeFilter '{clipped(text)}' is not Type?criteria"
        raise error(400, "invalid", message, param.where)
    if not is_resource_type(type):
        message = f"_typeFilter '{clipped(text)}': {clipped(type)} is not a resource type"
        raise error(400, "invalid", message, param.where)
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise error(400, "invalid", f"_typeFilter '{clipped(text)}' has no criteria", param.where)
    for name, _ in pairs:
        if name in RESULT_PARAMS or name.startswith(("_include", "_revinclude")):
            message = f"_typeFilter takes search criteria, not the result parameter '{name}'"
            raise error(400, "invalid", message, param.where)
    try:
        parse_search(type, pairs)
    except FhirError as exc:
        prefix = f"_typeFilter '{clipped(text)}': "
        issues = [
            Issue(i.severity, i.code, prefix + i.diagnostics, (param.where,)) for i in exc.issues
        ]
        raise FhirError(exc.status, issues) from None
    return type, query


def _patient(level: Level, param: Param) -> str:
    if level == "system" or param.where == "patient":
        message = "patient is taken in a POSTed Parameters body at Patient or Group level"
        raise error(400, "invalid", message, param.where)
    reference = param.value.get("reference") if isinstance(param.value, dict) else None
    match = PATIENT_REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    if match is None or not param.where.endswith(".valueReference"):
        message = "patient must be a valueReference to Patient/[id]"
        raise error(400, "invalid", message, param.where)
    return match["id"]

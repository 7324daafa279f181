"""The entries of a batch or transaction Bundle, read into requests the server can run.

Why a module of its own: both bundle types share the checks (methods, urls, resource types,
duplicate fullUrls, two entries writing one resource) and every failure must name the entry
(`Bundle.entry[3].request.url`), so a client can find it in a bundle of thousands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import FhirError, Issue, clipped, error
from fhir_server.interactions.crud import check_id
from fhir_server.interactions.versions import version_of_etag
from fhir_server.resource_types import is_resource_type

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The order a transaction runs its entries in (R4 http.html#trules); GET/HEAD come last.
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass(slots=True)
class Entry:
    """One `Bundle.entry`: what it asks for, its target, and the parts of its request."""

    index: int
    method: str
    type: str
    id: str | None = None  # `Type/id` urls
    version: str | None = None  # GET `Type/id/_history/vid`
    criteria: list[tuple[str, str]] | None = None  # `Type?…` urls (search, conditional)
    full_url: str | None = None
    resource: dict[str, Any] | None = None
    if_match: int | None = None
    if_none_exist: list[tuple[str, str]] | None = None

    @property
    def at(self) -> str:
        return f"Bundle.entry[{self.index}]"


def read_entries(bundle: dict[str, Any], base_url: str, limit: int) -> list[Entry | FhirError]:
    """Every entry, or the error that entry alone has (a batch answers it in place)."""
    raw = bundle.get("entry", [])
    if not isinstance(raw, list):
        raise error(400, "structure", "Bundle.entry must be an array", "Bundle.entry")
    if len(raw) > limit:
        raise error(
            413, "too-costly", f"The bundle has {len(raw)} entries; the limit is {limit}",
            "Bundle.entry",
        )  # fmt: skip
    out: list[Entry | FhirError] = []
    for index, entry in enumerate(raw):
        try:
            out.append(_entry(index, entry, base_url))
        except FhirError as failure:
            out.append(failure)
    _no_duplicates([e for e in out if isinstance(e, Entry)])
    return out


def at_entry(index: int, failure: FhirError) -> FhirError:
    """The same failure, its message and locations placed in `Bundle.entry[index]`."""
    prefix = f"Bundle.entry[{index}]"
    issues = []
    for issue in failure.issues:
        where = tuple(_within(prefix, e) for e in issue.expression) or (prefix,)
        message = issue.diagnostics
        if not message.startswith(prefix):
            message = f"{prefix}: {message}"
        issues.append(Issue(issue.severity, issue.code, message, where))
    return FhirError(failure.status, issues, dict(failure.headers))


def _within(prefix: str, expression: str) -> str:
    """`Patient.gender`, in the entry's resource -> `Bundle.entry[2].resource.gender`."""
    if expression.startswith("Bundle.entry["):
        return expression
    head, dot, rest = expression.partition(".")
    if is_resource_type(head):
        return f"{prefix}.resource" + (f".{rest}" if dot else "")
    return f"{prefix}.{expression}"


def _entry(index: int, raw: Any, base_url: str) -> Entry:
    at = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise error(400, "structure", f"{at} must be an object", at)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise error(400, "required", f"{at}.request is required", f"{at}.request")
    method, url = request.get("method"), request.get("url")
    if method not in METHODS:
        raise error(
            400, "code-invalid", f"{at}.request.method must be one of {', '.join(METHODS)}",
            f"{at}.request.method",
        )  # fmt: skip
    if not isinstance(url, str) or not url:
        raise error(400, "required", f"{at}.request.url is required", f"{at}.request.url")
    entry = _target(index, method, url, base_url)
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise error(400, "structure", f"{at}.fullUrl must be a string", f"{at}.fullUrl")
    entry.full_url = full_url
    resource = raw.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise error(400, "structure", f"{at}.resource must be a resource", f"{at}.resource")
    if method in ("POST", "PUT", "PATCH"):
        if resource is None:
            raise error(
                400, "required", f"{at}.resource is required for {method}", f"{at}.resource"
            )
        if method != "PATCH" and resource.get("resourceType") != entry.type:
            raise error(
                400, "invalid",
                f"{at}.resource is a {resource.get('resourceType')}, the url names {entry.type}",
                f"{at}.resource.resourceType",
            )  # fmt: skip
    entry.resource = resource
    entry.if_match = _if_match(request.get("ifMatch"), f"{at}.request.ifMatch")
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None:
        if method != "POST" or not isinstance(if_none_exist, str) or not if_none_exist:
            raise error(400, "invalid", f"{at}.request.ifNoneExist: criteria for a POST only")
        entry.if_none_exist = parse_qsl(if_none_exist.partition("?")[2] or if_none_exist, True)
    return entry


def _target(index: int, method: str, url: str, base_url: str) -> Entry:
    """What `request.url` names: `Type`, `Type/id`, `Type/id/_history/vid`, `Type?criteria`."""
    where = f"Bundle.entry[{index}].request.url"
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    path, question, query = url.partition("?")
    parts = path.split("/")
    if not is_resource_type(parts[0]):
        raise error(400, "not-supported", f"'{url}' does not name a resource type here", where)
    entry = Entry(index, method, parts[0])
    if question:
        entry.criteria = parse_qsl(query, keep_blank_values=True)
    if len(parts) == 1:
        if method in ("POST", "GET", "HEAD") or entry.criteria:
            return entry
        raise error(400, "invalid", f"{method} {url}: needs an id or search criteria", where)
    if question and method != "GET" and method != "HEAD":
        raise error(400, "invalid", f"'{url}' has both an id and criteria", where)
    entry.id = parts[1]
    check_id(entry.id, where)
    if method == "POST":
        raise error(400, "invalid", f"POST {url}: a create names no id (use PUT)", where)
    if len(parts) == 2:
        return entry
    if method in ("GET", "HEAD") and len(parts) == 4 and parts[2] == "_history":
        entry.version = parts[3]
        return entry
    raise error(400, "not-supported", f"{method} {url} is not offered in a bundle", where)


def _if_match(value: Any, where: str) -> int | None:
    """`W/"3"` (or `"3"`) -> 3."""
    if value is None:
        return None
    version = version_of_etag(str(value))
    if version is None:
        message = f"'{clipped(str(value))}' is not a version ETag such as W/\"3\""
        raise error(400, "invalid", message, where)
    return version


def _no_duplicates(entries: list[Entry]) -> None:
    full_urls: dict[str, int] = {}
    targets: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.full_url:
            first = full_urls.setdefault(entry.full_url, entry.index)
            if first != entry.index:
                raise error(
                    400, "invalid",
                    f"Bundle.entry[{first}] and [{entry.index}] have the same fullUrl "
                    f"'{entry.full_url}'",
                    f"Bundle.entry[{entry.index}].fullUrl",
                )  # fmt: skip
        if entry.method in WRITES and entry.id is not None:
            first = targets.setdefault((entry.type, entry.id), entry.index)
            if first != entry.index:
                raise error(
                    400, "invalid",
                    f"Bundle.entry[{first}] and [{entry.index}] both write "
                    f"{entry.type}/{entry.id}",
                    f"Bundle.entry[{entry.index}].request.url",
                )  # fmt: skip

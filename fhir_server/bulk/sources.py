"""The files an import reads, and the items in them.

Why a module of its own: the importer thinks in items (one resource each) at positions in a
file it knows by content, whatever the format. NDJSON (`.ndjson`, `.ndjson.gz`) yields its
lines as raw bytes, parsed later (in a worker process when there are several); a `.json`
file holds one resource or a Bundle (batch, transaction, collection) whose entries are
items, their `urn:uuid:` fullUrls already rewritten to the ids the entries will have.

A file's identity is the SHA-256 of its bytes: a checkpoint, and every id minted for a
resource without one, belong to the content, so moving or renaming a file changes nothing
and an edited file is a new one.
"""

from __future__ import annotations

import gzip
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_server import fhirjson
from fhir_server.errors import FhirError, error
from fhir_server.interactions.crud import check_id
from fhir_server.interactions.rewrite import PLACEHOLDERS, is_conditional
from fhir_server.resource_types import is_resource_type

SUFFIXES = (".ndjson", ".ndjson.gz", ".json")
BUNDLE_TYPES = frozenset({"batch", "transaction", "collection"})
# uuid5 namespace of the ids an import mints: the same file and position give the same id.
MINTED = uuid.UUID("6f1c2e0a-5d0b-4f43-9a55-3f0e8a1b7c21")


@dataclass(frozen=True, slots=True)
class Source:
    """One input file: where it is, what it is (by content), and how it is read."""

    path: Path
    digest: str  # SHA-256 of the file's bytes
    kind: str  # "ndjson" or "json"

    @property
    def name(self) -> str:
        return str(self.path)


@dataclass(slots=True)
class Item:
    """One resource to import: a raw NDJSON line, a parsed Bundle entry, or what is wrong
    with it. `position` counts from 1 (the line number; the entry index + 1 in a Bundle)."""

    position: int
    raw: bytes | None = None
    resource: dict[str, Any] | None = None
    failure: FhirError | None = None
    entry: int | None = None  # Bundle.entry index, for the report

    def minted_id(self, source: Source) -> str:
        return str(uuid.uuid5(MINTED, f"{source.digest}:{self.position}"))


def discover(paths: list[Path]) -> list[Source]:
    """The files named and those under the directories named (recursively, sorted), once
    each; refuses what is neither."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.name.endswith(SUFFIXES):
                    found[child.resolve()] = None
        elif path.is_file():
            found[path.resolve()] = None
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return [
        Source(p, digest_of(p), "json" if p.name.endswith(".json") else "ndjson") for p in found
    ]


def digest_of(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def items(source: Source) -> Iterator[Item]:
    """Every item of the file in order."""
    if source.kind == "ndjson":
        yield from _lines(source)
    else:
        yield from _json_items(source)


def _lines(source: Source) -> Iterator[Item]:
    opener = gzip.open if source.path.name.endswith(".gz") else open
    with opener(source.path, "rb") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if line:  # blank lines are allowed and skipped
                yield Item(number, raw=line)


def _json_items(source: Source) -> Iterator[Item]:
    try:
        body = fhirjson.loads_resource(source.path.read_bytes())
    except FhirError as failure:
        yield Item(1, failure=failure)
        return
    if body.get("resourceType") != "Bundle":
        yield Item(1, resource=body)
        return
    kind = body.get("type")
    if kind not in BUNDLE_TYPES:
        message = f"Bundle.type '{kind}': import reads batch, transaction and collection Bundles"
        yield Item(1, failure=error(400, "not-supported", message, "Bundle.type"))
        return
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        yield Item(
            1, failure=error(400, "structure", "Bundle.entry must be an array", "Bundle.entry")
        )
        return
    yield from bundle_items(source, entries)


def bundle_items(source: Source, entries: list[Any]) -> Iterator[Item]:
    """The entries with their targets settled first (as a transaction settles identities),
    then their fullUrls rewritten to `Type/id` in every entry's references."""
    planned: list[Item] = []
    mapping: dict[str, str] = {}
    for index, raw in enumerate(entries):
        item = Item(index + 1, entry=index)
        try:
            resource = _entry_resource(raw, index)
            if resource is not None:
                resource["id"] = resource.get("id") or _url_id(raw) or item.minted_id(source)
                full_url = raw.get("fullUrl")
                if isinstance(full_url, str) and full_url:
                    mapping[full_url] = f"{resource['resourceType']}/{resource['id']}"
            item.resource = resource
        except FhirError as failure:
            item.failure = failure  # placed in the entry when reported
        planned.append(item)
    for item in planned:
        if item.resource is not None:
            try:
                rewrite(item.resource, mapping)
            except FhirError as failure:
                item.resource, item.failure = None, failure
        if item.resource is not None or item.failure is not None:
            yield item


def _entry_resource(raw: Any, index: int) -> dict[str, Any] | None:
    """The resource an entry writes; None for a read (GET/HEAD), which import skips."""
    at = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise error(400, "structure", f"{at} must be an object", at)
    request = raw.get("request")
    method = request.get("method") if isinstance(request, dict) else None
    if method in ("GET", "HEAD"):
        return None
    if method not in (None, "POST", "PUT"):
        raise error(
            400, "not-supported", f"{at}.request.method {method}: import stores resources "
            "(POST, PUT); deletes and patches belong to the transaction endpoint",
            f"{at}.request.method",
        )  # fmt: skip
    if isinstance(request, dict) and request.get("ifNoneExist") is not None:
        raise error(
            400, "not-supported", f"{at}.request.ifNoneExist: import keeps ids and does not "
            "run conditional creates", f"{at}.request.ifNoneExist",
        )  # fmt: skip
    resource = raw.get("resource")
    if not isinstance(resource, dict):
        raise error(400, "required", f"{at}.resource is required", f"{at}.resource")
    type = resource.get("resourceType")
    if not isinstance(type, str) or not is_resource_type(type):
        raise error(
            400, "invalid", f"{at}.resource has no known resourceType",
            f"{at}.resource.resourceType",
        )  # fmt: skip
    url = request.get("url") if isinstance(request, dict) else None
    if isinstance(url, str) and url.partition("?")[0].split("/")[0] != type:
        raise error(
            400, "invalid", f"{at}.resource is a {type}, the url names '{url}'",
            f"{at}.request.url",
        )  # fmt: skip
    if isinstance(url, str) and "?" in url:
        raise error(
            400, "not-supported", f"{at}.request.url '{url}': import keeps ids and does not "
            "run conditional updates", f"{at}.request.url",
        )  # fmt: skip
    url_id = _url_id(raw)
    if url_id is not None:
        check_id(url_id, f"{at}.request.url")
        if resource.get("id") not in (None, url_id):
            raise error(
                400, "invalid", f"Resource id '{resource.get('id')}' must equal the url's id "
                f"'{url_id}'", f"{at}.resource.id",
            )  # fmt: skip
    return dict(resource)


def _url_id(raw: dict[str, Any]) -> str | None:
    """The id of a `PUT Type/id` entry's url."""
    request = raw.get("request")
    url = request.get("url") if isinstance(request, dict) else None
    if isinstance(url, str) and request.get("method") == "PUT":
        parts = url.partition("?")[0].split("/")
        if len(parts) == 2 and parts[1]:
            return parts[1]
    return None


def rewrite(resource: dict[str, Any], mapping: dict[str, str]) -> None:
    """Every reference to another entry's fullUrl becomes `Type/id` (in place); a
    placeholder naming no entry, or a conditional reference, is refused at its element."""
    for holder, where in references(resource, str(resource.get("resourceType"))):
        reference = holder["reference"]
        if reference in mapping:
            holder["reference"] = mapping[reference]
        elif reference.startswith(PLACEHOLDERS):
            raise error(
                400, "not-found", f"Reference '{reference}' names no entry of this Bundle "
                "(fullUrl)", f"{where}.reference",
            )  # fmt: skip
        elif is_conditional(reference):
            raise error(
                400, "not-supported", f"Conditional reference '{reference}': import keeps ids "
                "and does not search", f"{where}.reference",
            )  # fmt: skip


def references(value: Any, path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every object holding a `reference` string, with its FHIRPath location."""
    if type(value) is dict:
        if type(value.get("reference")) is str:
            yield value, path
        for key, child in value.items():
            if type(child) is dict or type(child) is list:
                yield from references(child, f"{path}.{key}")
    elif type(value) is list:
        for index, child in enumerate(value):
            yield from references(child, f"{path}[{index}]")

"""What an import does to each resource before storing it, apart from the database: parse,
the write path's acceptance (`crud.accept`: Swedish person numbers to 12 digits, the
server's `Validator`, a Subscription's checks) and its search values
(`search.indexer.index_entries`).

Why apart: it is most of the work and needs nothing but the resource, so it runs in worker
processes (`prepare_chunk`, picklable in and out) while the importer's process writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from fhir_server import fhirjson
from fhir_server.config import Settings
from fhir_server.errors import FhirError, Issue, error
from fhir_server.interactions import crud
from fhir_server.interactions.context import Context
from fhir_server.resource_types import is_resource_type
from fhir_server.search.indexer import index_entries
from fhir_server.search.registry import use_conformance
from fhir_server.security.principal import ANONYMOUS
from fhir_server.storage.port import IndexEntry, Storage
from fhir_server.validation.validator import Validator

# (position, raw NDJSON line or parsed resource, the id to give a resource without one)
Work = tuple[int, bytes | dict[str, Any], str]


@dataclass(slots=True)
class Prepared:
    """A resource accepted as a write would accept it, with its search values."""

    position: int
    type: str
    id: str
    resource: dict[str, Any]
    index: list[IndexEntry]


@dataclass(slots=True)
class Refused:
    """A resource the server would refuse, and why (its OperationOutcome's issues)."""

    position: int
    issues: list[Issue]


_context: Context | None = None


def start_worker(settings: Settings) -> None:
    """A worker process's set-up (the pool's initializer): the validator and the search
    parameters the server would use."""
    global _context
    _context = context_for(settings)


def context_for(settings: Settings) -> Context:
    """The context `crud.accept` needs: a validator and the settings; it never reaches
    storage, so none is given."""
    validator = Validator.from_directories(settings.profile_dirs)
    use_conformance(validator.conformance)
    return Context(cast(Storage, None), settings, ANONYMOUS, "", validator)


def use_context(ctx: Context) -> None:
    """Prepare in this process (no workers) with `ctx`."""
    global _context
    _context = ctx


def prepare_chunk(chunk: list[Work]) -> list[Prepared | Refused]:
    assert _context is not None, "start_worker first"
    return [prepare(_context, *work) for work in chunk]


def prepare(
    ctx: Context, position: int, body: bytes | dict[str, Any], id: str
) -> Prepared | Refused:
    try:
        resource = fhirjson.loads_resource(body) if isinstance(body, bytes) else body
        type = resource.get("resourceType")
        if not isinstance(type, str) or not is_resource_type(type):
            message = f"'{type}' is not a FHIR R4 resource type"
            raise error(400, "invalid", message, "resourceType")
        if resource.get("id") is None:
            resource["id"] = id
        crud.check_id(str(resource["id"]), f"{type}.id")
        crud.accept(ctx, resource, type)
        return Prepared(position, type, resource["id"], resource, index_entries(type, resource))
    except FhirError as failure:
        return Refused(position, failure.issues)

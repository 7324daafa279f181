"""What the process does when one of its resources is written, in the same unit of work:
gates that refuse the write (422 naming the rule), the process (EpisodeOfCare) it opens or
finishes, the obligations that open and close, and the closures a death or a withdrawn
consent makes (in that order: a Task links the process its act opened).

Why one entry point: every write path (create, update, patch, transaction entries) stores
through `crud.store`, which calls `on_write` first, so no path can skip a rule. Resources
outside the process cost one set lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from fhir_server.sip import closure, gates, obligations, process_state
from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context

PROCESS_TYPES = frozenset(
    {
        "Appointment",
        "CarePlan",
        "Communication",
        "Consent",
        "Encounter",
        "EpisodeOfCare",
        "Patient",
        "QuestionnaireResponse",
        "Task",
    }
)


async def on_write(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, resource: dict[str, Any]
) -> None:
    """Run the process rules for `resource`, about to be stored as `version`."""
    if version.type not in PROCESS_TYPES:
        return
    pending = _deferred.get()
    if pending is not None:
        pending.append((version, resource))
    else:
        await gates.check(ctx, uow, version, resource)
    await process_state.follow(ctx, uow, version, resource)
    await obligations.apply(ctx, uow, version, resource)
    await closure.apply(ctx, uow, version, resource)


Written = list[tuple[ResourceVersion, dict[str, Any]]]
_deferred: ContextVar[Written | None] = ContextVar("deferred_gates", default=None)


@contextmanager
def gates_deferred() -> Iterator[Written]:
    """Inside a transaction the order of entries means nothing (a CarePlan may come before
    the Consent it needs), so its gates run once every entry is written: collect them here,
    then `check_gates` before the commit."""
    pending: Written = []
    token = _deferred.set(pending)
    try:
        yield pending
    finally:
        _deferred.reset(token)


async def check_gates(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, resource: dict[str, Any]
) -> None:
    """The gates on the bundle's end state. A death or a withdrawn consent closes again what
    later entries opened (closure is idempotent), so it wins whatever the entries' order."""
    await closure.apply(ctx, uow, version, resource)
    await gates.check(ctx, uow, version, resource)

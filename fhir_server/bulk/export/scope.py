"""Which resources of one type an export job writes: its searches, as query trees.

Each type is read by one or more passes (one per `_typeFilter` of the type, ORed; one pass
when it has none). Every pass is bounded by `_lastUpdated <= transactionTime`, so a resource
changed after the kick-off is left out as the IG asks, and `_since` when given. Patient and
Group level add the Patient compartment (R4 `compartments.json`): a resource is in it when
one of its compartment parameters refers to a Patient that exists, or, for a Group, to one of
the Group's members (`Chain` to `Patient` with `_id` in the members: one query term however
many members, on both engines).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fhir_server.search.parser import parse_search
from fhir_server.search.query import AnyOf, Chain, Condition, IdIn, LastUpdated
from fhir_server.validation.definitions import compartments

# A condition every Patient meets: `_lastUpdated=le9999…`, an ordinary search term.
ANY_PATIENT = LastUpdated("le", "9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z")


def passes(
    type: str,
    *,
    transaction_time: str,
    since: str | None,
    patients: list[str] | None,
    level: str,
    type_filters: list[str],
) -> list[tuple[Condition, ...]]:
    """The conjunctions whose union is what the job exports of `type` ([] for nothing)."""
    base: list[Condition] = [LastUpdated("le", transaction_time, transaction_time)]
    if since is not None:
        base.append(LastUpdated("gt", since, since))
    if level != "system":
        scope = compartment_condition(type, patients)
        if scope is False:
            return []
        if scope is not True:
            base.append(scope)
    if not type_filters:
        return [tuple(base)]
    return [(*base, *criteria(type, query)) for query in type_filters]


def criteria(type: str, query: str) -> tuple[Condition, ...]:
    """A `_typeFilter`'s conditions (checked at kick-off, so it parses)."""
    return parse_search(type, parse_qsl(query, keep_blank_values=True)).query.where


def compartment_condition(type: str, patients: list[str] | None) -> Condition | bool:
    """True: every resource of `type`; False: none; else the condition that selects them."""
    if patients is not None and not patients:
        return False
    members: Condition = ANY_PATIENT if patients is None else IdIn(tuple(patients))
    params = compartments()["Patient"].get(type, ())
    terms: list[Condition] = [Chain(p, "Patient", (members,)) for p in params]
    if type == "Patient":
        if patients is None:
            return True  # every Patient is in its own compartment
        terms.append(members)
    if not terms:
        return False
    return terms[0] if len(terms) == 1 else AnyOf(tuple(terms))

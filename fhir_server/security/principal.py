"""Who is asking. Every request carries a principal, and storage queries take its access filter.

Until the security stage brings tokens and access by invitation, every request is the
anonymous principal with access to all resource types; the plumbing is already real, so the
security stage changes what the filter says, not where it is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.storage.port import AccessFilter


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    organization: str | None = None
    resource_types: frozenset[str] | None = None  # None: every type

    def access_filter(self) -> AccessFilter:
        return AccessFilter(resource_types=self.resource_types)


ANONYMOUS = Principal(subject="anonymous")

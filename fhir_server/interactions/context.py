"""What every interaction needs to know about the request it serves, free of HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_server.config import Settings
from fhir_server.security.principal import Principal
from fhir_server.sip.clock import Clock, SystemClock
from fhir_server.storage.port import AccessFilter, Storage
from fhir_server.validation.validator import Validator


@dataclass(frozen=True, slots=True)
class Context:
    storage: Storage
    settings: Settings
    principal: Principal
    base_url: str  # e.g. http://127.0.0.1:8080/fhir, for fullUrl, Location and paging links
    validator: Validator
    clock: Clock = field(default_factory=SystemClock)  # process time (fhir_server.sip.clock)

    @property
    def access(self) -> AccessFilter:
        return self.principal.access_filter()

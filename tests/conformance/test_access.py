"""A principal's access filter limits writes as it limits reads (the security stage fills it).

HTTP has only the anonymous principal until tokens arrive, so these drive the interactions
with a restricted principal directly, on every engine.
"""

from __future__ import annotations

import pytest

from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.interactions import crud
from fhir_server.interactions.context import Context
from fhir_server.security.principal import ANONYMOUS, Principal
from fhir_server.storage.port import Storage
from fhir_server.validation.validator import Validator
from tests.resources import patient

CARE_PLANS_ONLY = Principal("kommun-x", resource_types=frozenset({"CarePlan"}))


def context(storage: Storage, principal: Principal) -> Context:
    validator = Validator.from_directories([])
    return Context(storage, Settings(), principal, "http://testserver/fhir", validator)


async def test_writes_outside_the_filter_are_403_and_change_nothing(storage: Storage) -> None:
    restricted = context(storage, CARE_PLANS_ONLY)
    created = await crud.create(context(storage, ANONYMOUS), "Patient", patient())
    id = created.version.id
    attempts = [
        crud.create(restricted, "Patient", patient()),
        crud.update(restricted, "Patient", id, {**patient(), "id": id}, None),
        crud.delete(restricted, "Patient", id, None),
    ]
    for attempt in attempts:
        with pytest.raises(FhirError) as refused:
            await attempt
        assert refused.value.status == 403
    with pytest.raises(FhirError) as hidden:
        await crud.read(restricted, "Patient", id)
    assert hidden.value.status == 404
    current = await crud.read(context(storage, ANONYMOUS), "Patient", id)
    assert current.version == 1

"""The order an import loads resources in, so that the order of its files does not matter.

Why: the SIP process's gates (`sip/gates.py`) judge a write by what is stored already: an
active SIP CarePlan needs its Patient's active SIP Consent (R-SIP-01), a meeting needs the
Organization calling it (R-MTG-01), a message needs the consent to information transfer
(R-DIS-04), a ready-for-discharge or discharge notice goes to every recipient of the stay's
admission notices (R-DIS-08, R-DIS-12). So an import reads its files once per pass and loads
in each pass only the resources of that pass:

1. every resource no gate judges (Patient, Consent, Encounter, EpisodeOfCare,
   Organization, …): what the gates read;
2. Appointments, CarePlans and admission notices: gated, reading only pass 1;
3. the other process messages (Communication), which also read the admission notices.

Within pass 1 order cannot matter (nothing there reads another resource); the Patient's own
gate (an active plan needs consent) finds no plans yet, and each plan is judged in pass 2
against the stored Patient instead, which is the same rule.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.sip.resources import MESSAGE_TYPE, codes

PASSES = (1, 2, 3)
_GATED = (b'"Appointment"', b'"CarePlan"', b'"Communication"')
ADMISSION = "inskrivningsmeddelande"


def pass_of(resource: dict[str, Any]) -> int:
    type = resource.get("resourceType")
    if type in ("Appointment", "CarePlan"):
        return 2
    if type == "Communication":
        return 2 if ADMISSION in codes(resource.get("category"), MESSAGE_TYPE) else 3
    return 1


def pass_of_line(raw: bytes) -> int:
    """The pass of an NDJSON line, parsing it only when it may be gated; a line that does
    not parse belongs to pass 1, which reports it."""
    if not any(name in raw for name in _GATED):
        return 1
    try:
        resource = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 1
    return pass_of(resource) if isinstance(resource, dict) else 1

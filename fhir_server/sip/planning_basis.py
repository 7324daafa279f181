"""What the planning basis (planeringsunderlag, a QuestionnaireResponse of the stay) says
about the patient's needs after discharge.

Why here: three rules read the same answers. R-DIS-10 opens no SIP invitation for a patient
who needs only social services or has no need of coordination; R-DIS-09 starts a patient
who needs only social services 3 days after the ready-for-discharge notice. One reading of
the form keeps them agreeing. The link ids are those of
examples/sip-case/Questionnaire-planeringsunderlag.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.sip.clock import STOCKHOLM, local_moment

QUESTIONNAIRE = "http://sip-fhir.se/fhir/Questionnaire/planeringsunderlag"
# Needs met by municipal social services (socialtjänstlagen), not health care.
SOCIAL_SERVICES = frozenset({"home-care", "short-term-stay", "special-housing"})
# Needs of health care: municipal home health care or region-financed care.
HEALTH_CARE = frozenset(
    {"home-health-care", "rehabilitation", "assistive-devices", "medication-changes"}
)
SIP_NEEDED = "sip-needed"


@dataclass(frozen=True, slots=True)
class Needs:
    """The yes-answers of a planning basis, and whether a SIP was judged needed."""

    yes: frozenset[str]
    sip_needed: bool | None  # None: not answered

    @property
    def only_social_services(self) -> bool:
        return bool(self.yes & SOCIAL_SERVICES) and not self.yes & HEALTH_CARE


NOT_KNOWN = Needs(frozenset(), None)


def is_planning_basis(response: dict[str, Any]) -> bool:
    questionnaire = str(response.get("questionnaire") or "")
    return questionnaire.split("|")[0] == QUESTIONNAIRE and response.get("status") in (
        "completed",
        "amended",
    )


def needs(response: dict[str, Any]) -> Needs:
    """The answers of one planning basis (QuestionnaireResponse)."""
    answers: dict[str, bool] = {}
    for group in response.get("item") or []:
        for item in (group or {}).get("item") or []:
            link = str((item or {}).get("linkId") or "")
            if not link.endswith(".answer"):
                continue
            values = [a.get("valueBoolean") for a in item.get("answer") or [] if a]
            if values and isinstance(values[0], bool):
                answers[link.removesuffix(".answer")] = values[0]
    yes = frozenset(link for link, answer in answers.items() if answer)
    return Needs(yes, answers.get(SIP_NEEDED))


def latest(responses: list[dict[str, Any]]) -> Needs:
    """The needs of the newest planning basis (by `authored`) among a stay's responses."""
    bases = [r for r in responses if is_planning_basis(r)]
    if not bases:
        return NOT_KNOWN
    return needs(max(bases, key=_authored))


def _authored(response: dict[str, Any]) -> datetime:
    moment = local_moment(str(response.get("authored") or ""))
    return moment or datetime.min.replace(tzinfo=STOCKHOLM)

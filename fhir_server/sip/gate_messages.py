"""Gates on the process's messages (Communication with a sip-message-type).

R-DIS-04: without an active consent to information transfer only the admission and
discharge notices may be sent, carrying nothing but the patient reference (name,
personnummer and registered address live on the Patient), the stay, senders, recipients,
times and the estimated discharge date: the extension sip-estimated-discharge-date and
`payload` as text only (the discharge notice's profile requires one, for the date of going
home; text itself cannot be checked). Refused: a payload attachment or reference,
reasonCode, reasonReference, note, about, any other extension. An acknowledgement
(kvittens) is always allowed: R-DIS-05 requires it whatever the consent.
R-DIS-08 / R-DIS-12: the ready-for-discharge and the discharge notice go to every recipient
of the stay's admission notices. R-MTG-04: a general message about a meeting is short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.sip.resources import (
    CONSENT_KIND,
    ESTIMATED_DISCHARGE_URL,
    MESSAGE_TYPE,
    codes,
    find,
    local_id,
    reference,
    references,
    refused,
    stored_patient,
)
from fhir_server.storage.port import ResourceVersion, UnitOfWork

if TYPE_CHECKING:
    from fhir_server.interactions.context import Context

ADMISSION = "inskrivningsmeddelande"
READY = "utskrivningsklar"
DISCHARGE = "utskrivningsmeddelande"
GENERAL = "generellt-meddelande"
ACKNOWLEDGEMENT = "kvittens"
WITHOUT_CONSENT = frozenset({ADMISSION, DISCHARGE})
NOT_ALLOWED_WITHOUT_CONSENT = ("reasonCode", "reasonReference", "note", "about")
MEETING_NOTE_MAX = 1000  # characters (R-MTG-04)
SAME_RECIPIENTS = {READY: "R-DIS-08", DISCHARGE: "R-DIS-12"}


async def check_message(
    ctx: Context, uow: UnitOfWork, version: ResourceVersion, message: dict[str, Any]
) -> None:
    kinds = codes(message.get("category"), MESSAGE_TYPE)
    if not kinds or message.get("status") == "entered-in-error":
        return
    if not kinds <= {ACKNOWLEDGEMENT} and not await may_transfer(ctx, uow, message):
        content_without_consent(kinds, message)
    for kind in sorted(kinds & SAME_RECIPIENTS.keys()):
        await to_admission_recipients(ctx, uow, SAME_RECIPIENTS[kind], message)
    if GENERAL in kinds:
        meeting_note_is_short(message)


async def may_transfer(ctx: Context, uow: UnitOfWork, message: dict[str, Any]) -> bool:
    """Whether the person consents to information transfer; a message whose subject is not a
    Patient stored here is not checked (the consent rules apply to the persons held here)."""
    patient = await stored_patient(uow, message.get("subject"))
    if patient is None:
        return True
    consents = await find(
        ctx, uow, "Consent",
        [("patient", f"Patient/{patient.get('id')}"), ("status", "active"),
         ("category", f"{CONSENT_KIND}|informationsoverforing")],
    )  # fmt: skip
    return bool(consents)


def content_without_consent(kinds: set[str], message: dict[str, Any]) -> None:
    """R-DIS-04: what a message may be and carry without consent to information transfer."""
    why = "without the person's active consent to information transfer"
    others = kinds - WITHOUT_CONSENT
    if others:
        raise refused(
            "R-DIS-04",
            f"{why} only an admission or a discharge notice may be sent, not '{sorted(others)[0]}'",
            "Communication.category",
        )
    for name in NOT_ALLOWED_WITHOUT_CONSENT:
        if message.get(name):
            raise refused(
                "R-DIS-04", f"{why} a notice may not carry {name}", f"Communication.{name}"
            )
    for i, extension in enumerate(message.get("extension") or []):
        if extension.get("url") != ESTIMATED_DISCHARGE_URL:
            raise refused(
                "R-DIS-04",
                f"{why} a notice carries no extension but the estimated discharge date "
                f"({extension.get('url')})",
                f"Communication.extension[{i}]",
            )
    for i, payload in enumerate(message.get("payload") or []):
        if "contentString" not in payload:
            raise refused(
                "R-DIS-04",
                f"{why} a notice's payload is only text (the estimated discharge date or the "
                "date of going home), no attachment or reference",
                f"Communication.payload[{i}]",
            )


async def to_admission_recipients(
    ctx: Context, uow: UnitOfWork, rule: str, message: dict[str, Any]
) -> None:
    """Every recipient of the stay's admission notices must be among this notice's."""
    encounter = reference(message.get("encounter"))
    if encounter is None or local_id(message.get("encounter"), "Encounter") is None:
        return
    notices = await find(
        ctx, uow, "Communication",
        [("encounter", encounter), ("category", f"{MESSAGE_TYPE}|{ADMISSION}")],
    )  # fmt: skip
    expected: set[str] = set()
    for notice in notices:
        if notice.get("status") != "entered-in-error":
            expected |= references(notice.get("recipient"))
    missing = expected - references(message.get("recipient"))
    if missing:
        raise refused(
            rule,
            f"the notice goes to those who got the admission notice of {encounter}; "
            f"missing: {', '.join(sorted(missing))}",
            "Communication.recipient",
        )


def meeting_note_is_short(message: dict[str, Any]) -> None:
    """R-MTG-04 for a general message `about` an Appointment: each text at most
    MEETING_NOTE_MAX characters (no element marks "not record content"; length only)."""
    if not any(local_id(r, "Appointment") for r in message.get("about") or []):
        return
    for i, payload in enumerate(message.get("payload") or []):
        brief_note(payload.get("contentString"), f"Communication.payload[{i}].contentString")


def brief_note(text: Any, expression: str) -> None:
    """R-MTG-04: a meeting note (`text` at `expression`) is at most MEETING_NOTE_MAX long."""
    if isinstance(text, str) and len(text) > MEETING_NOTE_MAX:
        raise refused(
            "R-MTG-04",
            f"a meeting note is brief (at most {MEETING_NOTE_MAX} characters, this one "
            f"{len(text)}) and never medical-record content",
            expression,
        )

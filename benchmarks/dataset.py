"""Synthetic, valid FHIR R4 resources for load tests and benchmarks (Swedish care content).

`mixed_resources(n, seed)` returns `n` resources of a realistic mix: about 25 % Patient,
20 % vital-sign Observation, 15 % SIP CarePlan, 10 % each Encounter, Organization and
Practitioner, 5 % each Goal and Appointment. Output depends only on `n` and `seed`
(`random.Random(seed)`), so a benchmark run can be repeated exactly.

The resources carry no ids: the server assigns them on create. References between them are
logical (`Reference.type` + `Reference.identifier`: personnummer, HSA-id), so every resource
is valid on its own and can be posted in any order.

Stdlib only on purpose: benchmark scripts and tests import this without the server's
dependencies, and the data stays the same whatever `fhir.resources` version is installed.

    .venv/bin/python benchmarks/dataset.py [N] [SEED]   # prints the count per resource type
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from html import escape
from typing import Any

PNR = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER = "http://electronichealth.se/identifier/samordningsnummer"
HSA = "urn:oid:1.2.752.29.4.19"
ORGNR = "urn:oid:2.5.4.97"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
SIP = "http://sip-fhir.se/fhir"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SIP_CATEGORY = {
    "system": "https://fhir.inera.se/CodeSystem/typeofcareplan-cs",
    "code": "SIP",
    "display": "Samordnad individuell plan",
}
VITAL_SIGNS = {
    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "vital-signs",
    "display": "Vital Signs",
}
CET = timezone(timedelta(hours=1))

# (weight in %, resource type); the builders are looked up by type below.
MIX = [
    (25, "Patient"),
    (20, "Observation"),
    (15, "CarePlan"),
    (10, "Encounter"),
    (10, "Organization"),
    (10, "Practitioner"),
    (5, "Goal"),
    (5, "Appointment"),
]

FAMILY = [
    "Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson",
    "Persson", "Svensson", "Gustafsson", "Lindberg", "Öberg", "Åström", "Lindqvist",
    "Nyström", "Lundberg", "Berglund", "Sandström", "Holmgren", "Jakobsson",
]  # fmt: skip
GIVEN_F = ["Anna", "Maria", "Karin", "Eva", "Elsa", "Ingrid", "Märta", "Astrid", "Lena", "Sara"]
GIVEN_M = ["Erik", "Lars", "Karl", "Anders", "Nils", "Olof", "Gösta", "Åke", "Johan", "Per"]
CITIES = [
    ("Luleå", "972"), ("Piteå", "941"), ("Boden", "961"), ("Kiruna", "981"),
    ("Gällivare", "982"), ("Kalix", "952"), ("Haparanda", "953"), ("Älvsbyn", "942"),
]  # fmt: skip
STREETS = ["Storgatan", "Skolgatan", "Kyrkogatan", "Norrvägen", "Backgatan", "Sjövägen"]
MUNICIPALITIES = ["Luleå", "Piteå", "Boden", "Kiruna", "Gällivare", "Kalix", "Haparanda"]
REGION_UNITS = [
    "Sunderby sjukhus, medicinavdelning 5B",
    "Sunderby sjukhus, geriatrisk avdelning",
    "Piteå älvdals sjukhus, vårdavdelning 1",
    "Gällivare sjukhus, medicinavdelning",
    "Hälsocentralen Örnäset",
    "Hälsocentralen Bergnäset",
    "Hälsocentralen Kalix",
    "Psykiatriska öppenvården Luleå",
]
# LOINC code, display, Swedish text, UCUM unit, low, high, decimals
VITALS = [
    ("8867-4", "Heart rate", "Puls", "/min", 48, 120, 0),
    ("9279-1", "Respiratory rate", "Andningsfrekvens", "/min", 10, 28, 0),
    ("8310-5", "Body temperature", "Kroppstemperatur", "Cel", 35.8, 39.4, 1),
    ("29463-7", "Body weight", "Kroppsvikt", "kg", 42, 118, 1),
    ("8302-2", "Body height", "Kroppslängd", "cm", 148, 196, 0),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "Syremättnad", "%",
     86, 100, 0),
]  # fmt: skip
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional", "Blodtryck")
GOALS = [
    "Huvudmål: bo kvar hemma tryggt",
    "Huvudmål: klara vardagen med stöd",
    "Delmål: gå ut på egen hand varje dag",
]
ACTIVITIES = [
    ("Hemtjänst: personlig omvårdnad", "municipality"),
    ("Hemsjukvård: läkemedelsadministration", "municipality"),
    ("Trygghetslarm", "municipality"),
    ("Matdistribution", "municipality"),
    ("Uppföljande besök hos distriktssköterska", "region"),
    ("Läkemedelsgenomgång", "region"),
    ("Rehabilitering med fysioterapeut", "region"),
    ("Egenvård: daglig promenad", "patient"),
    ("Egenvård: blodsockerkontroll", "patient"),
]
GOALS = [
    "Bo kvar i egen bostad och känna sig trygg",
    "Gå själv med rollator till affären",
    "Klara sin personliga hygien själv",
    "Delta i dagverksamhet två dagar i veckan",
    "Minska antalet akuta sjukhusbesök",
]


def luhn_digit(nine: str) -> str:
    total = 0
    for i, ch in enumerate(nine):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


SIP_PROFILES = "http://sip-fhir.se/fhir/StructureDefinition"


def follow_up_extension(when: date, responsible: str) -> dict[str, Any]:
    """The SIP follow-up (R-SIP-08): its date and who answers for it."""
    return {
        "url": f"{SIP_PROFILES}/sip-follow-up",
        "extension": [
            {"url": "date", "valueDate": when.isoformat()},
            {"url": "responsible", "valueReference": {"reference": responsible}},
        ],
    }


def closure_extension(code: str, display: str) -> dict[str, Any]:
    """Why a SIP was closed (R-SIP-10)."""
    system = "http://sip-fhir.se/fhir/CodeSystem/sip-plan-closure-reason"
    return {
        "url": f"{SIP_PROFILES}/sip-closure-reason",
        "valueCodeableConcept": {"coding": [coding(system, code, display)]},
    }


def narrative(*lines: str) -> dict[str, str]:
    body = "".join(f"<p>{escape(line, quote=False)}</p>" for line in lines)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


class _Builder:
    """Builds one resource of each kind from a shared random stream."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.hsa_serial = 0

    # -- shared pieces --------------------------------------------------------------
    def person(self) -> tuple[str, str, str, date, str]:
        rng = self.rng
        gender = rng.choice(["female", "male"])
        given = rng.choice(GIVEN_F if gender == "female" else GIVEN_M)
        family = rng.choice(FAMILY)
        birth = date(1925, 1, 1) + timedelta(days=rng.randrange(365 * 80))
        serial = rng.randrange(0, 100) * 10 + rng.choice(
            [0, 2, 4, 6, 8] if gender == "female" else [1, 3, 5, 7, 9]
        )
        nine = f"{birth:%y%m%d}{serial:03d}"
        return given, family, gender, birth, f"{birth:%Y}{nine[2:]}{luhn_digit(nine)}"

    def hsa_id(self, prefix: str = "SE2321000230") -> str:
        self.hsa_serial += 1
        return f"{prefix}-{self.rng.choice('ABCDEFGHKLMNPRST')}{self.hsa_serial:04d}"

    def moment(self, start: date = date(2025, 1, 1), days: int = 700) -> datetime:
        rng = self.rng
        day = start + timedelta(days=rng.randrange(days))
        return datetime(
            day.year,
            day.month,
            day.day,
            rng.randrange(7, 20),
            rng.randrange(60),
            rng.randrange(60),
            tzinfo=CET,
        )

    def telecom(self, low: int, high: int) -> list[dict[str, str]]:
        rng = self.rng
        items = []
        for _ in range(rng.randint(low, high)):
            kind = rng.choice(["phone", "phone", "email"])
            if kind == "phone":
                use = rng.choice(["home", "mobile", "work"])
                prefix = "+4670" if use == "mobile" else "+46920"
                items.append(
                    {
                        "system": "phone",
                        "value": f"{prefix}{rng.randrange(10**6, 10**7)}",
                        "use": use,
                    }
                )
            else:
                items.append(
                    {
                        "system": "email",
                        "value": f"person{rng.randrange(10**6)}@example.se",
                        "use": rng.choice(["home", "work"]),
                    }
                )
        return items

    def address(self, use: str) -> dict[str, Any]:
        rng = self.rng
        city, postal = rng.choice(CITIES)
        return {
            "use": use,
            "type": rng.choice(["physical", "postal", "both"]),
            "line": [f"{rng.choice(STREETS)} {rng.randint(1, 80)}"],
            "city": city,
            "postalCode": f"{postal}{rng.randrange(10, 99)}",
            "country": "SE",
        }

    def patient_ref(self) -> dict[str, Any]:
        given, family, _, _, pnr = self.person()
        return {
            "type": "Patient",
            "identifier": {"system": PNR, "value": pnr},
            "display": f"{given} {family}",
        }

    def unit_ref(self, kind: str) -> dict[str, Any]:
        if kind == "municipality":
            name = f"{self.rng.choice(MUNICIPALITIES)} kommun, hemtjänst och hemsjukvård"
            hsa = self.hsa_id("SE2120002726")
        else:
            name = self.rng.choice(REGION_UNITS)
            hsa = self.hsa_id()
        return {
            "type": "Organization",
            "identifier": {"system": HSA, "value": hsa},
            "display": name,
        }

    # -- resources ------------------------------------------------------------------
    def patient(self) -> dict[str, Any]:
        rng = self.rng
        given, family, gender, birth, pnr = self.person()
        identifiers: list[dict[str, Any]] = [{"use": "official", "system": PNR, "value": pnr}]
        if rng.random() < 0.15:
            nine = f"{birth:%y%m}{birth.day + 60:02d}{rng.randrange(1000):03d}"
            identifiers.append(
                {
                    "use": "old",
                    "system": SAMORDNINGSNUMMER,
                    "value": f"{birth:%Y}{nine[2:]}{luhn_digit(nine)}",
                }
            )
        names: list[str] = [given]
        if rng.random() < 0.4:
            names.append(rng.choice(GIVEN_F if gender == "female" else GIVEN_M))
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "text": narrative(f"{' '.join(names)} {family}, född {birth.isoformat()}"),
            "identifier": identifiers,
            "active": True,
            "name": [{"use": "official", "family": family, "given": names}],
            "gender": gender,
            "birthDate": birth.isoformat(),
            "address": [self.address("home") for _ in range(rng.choice([1, 1, 1, 2]))],
        }
        telecom = self.telecom(0, 3)
        if telecom:
            resource["telecom"] = telecom
        if rng.random() < 0.1:
            resource["deceasedBoolean"] = False
        return resource

    def observation(self) -> dict[str, Any]:
        rng = self.rng
        when = self.moment()
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [VITAL_SIGNS], "text": "Vitalparametrar"}],
            "subject": self.patient_ref(),
            "effectiveDateTime": when.isoformat(),
            "issued": (when + timedelta(minutes=rng.randrange(1, 90))).isoformat(),
        }
        if rng.random() < 1 / 7:
            code, display, text = BP_PANEL
            systolic = rng.randint(95, 185)
            resource["code"] = {"coding": [coding(LOINC, code, display)], "text": text}
            resource["component"] = [
                self._component(
                    "8480-6", "Systolic blood pressure", "Systoliskt blodtryck", systolic
                ),
                self._component(
                    "8462-4",
                    "Diastolic blood pressure",
                    "Diastoliskt blodtryck",
                    systolic - rng.randint(30, 70),
                ),
            ]
            resource["text"] = narrative(f"Blodtryck {systolic} mm[Hg] systoliskt")
            return resource
        code, display, text, unit, low, high, decimals = rng.choice(VITALS)
        value = round(rng.uniform(low, high), decimals) if decimals else rng.randint(low, high)
        resource["code"] = {"coding": [coding(LOINC, code, display)], "text": text}
        resource["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
        resource["text"] = narrative(f"{text}: {value} {unit}")
        return resource

    @staticmethod
    def _component(code: str, display: str, text: str, value: int) -> dict[str, Any]:
        return {
            "code": {"coding": [coding(LOINC, code, display)], "text": text},
            "valueQuantity": {"value": value, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
        }

    def care_plan(self) -> dict[str, Any]:
        rng = self.rng
        subject = self.patient_ref()
        start = self.moment().date()
        status = rng.choice(["active", "active", "active", "completed", "draft", "on-hold"])
        activities = []
        for title, kind in rng.sample(ACTIVITIES, rng.randint(1, 4)):
            detail_status = {
                "active": rng.choice(["not-started", "scheduled", "in-progress"]),
                "completed": "completed",
                "draft": "not-started",
                "on-hold": "on-hold",
            }[status]
            performer = subject if kind == "patient" else self.unit_ref(kind)
            activities.append(
                {
                    "detail": {
                        "code": {"text": title},
                        "status": detail_status,
                        "performer": [performer],
                    }
                }
            )
        period: dict[str, str] = {"start": start.isoformat()}
        if status == "completed" or rng.random() < 0.5:
            period["end"] = (start + timedelta(days=rng.choice([90, 180, 365]))).isoformat()
        extensions = []
        if status != "draft":  # R-SIP-08: decided when the plan is made
            follow_up = start + timedelta(days=rng.choice([30, 90, 180]))
            extensions.append(
                follow_up_extension(follow_up, f"Organization/unit-{rng.randrange(40)}")
            )
        if status == "completed":  # R-SIP-10
            extensions.append(closure_extension("mal-uppfyllda", "Mål uppfyllda"))
        return {
            "resourceType": "CarePlan",
            "text": narrative(
                f"SIP för {subject['display']}", *[a["detail"]["code"]["text"] for a in activities]
            ),
            **({"extension": extensions} if extensions else {}),
            "status": status,
            "intent": "plan",
            "category": [{"coding": [SIP_CATEGORY]}],
            "title": f"Samordnad individuell plan för {subject['display']}",
            "subject": subject,
            "period": period,
            "created": self.moment(start, 1).isoformat(),
            "author": self.unit_ref(rng.choice(["municipality", "region"])),
            "goal": [{"display": rng.choice(GOALS)}],
            "activity": activities,
        }

    def encounter(self) -> dict[str, Any]:
        rng = self.rng
        code, display, text = rng.choice(
            [
                ("IMP", "inpatient encounter", "Slutenvård"),
                ("AMB", "ambulatory", "Öppenvård"),
                ("HH", "home health", "Hemsjukvård"),
            ]
        )
        start = self.moment()
        status = rng.choice(["finished", "finished", "in-progress", "planned"])
        period = {"start": start.isoformat()}
        if status == "finished":
            length = timedelta(days=rng.randint(1, 20)) if code == "IMP" else timedelta(hours=1)
            period["end"] = (start + length).isoformat()
        return {
            "resourceType": "Encounter",
            "text": narrative(f"{text} från {start.date().isoformat()}"),
            "status": status,
            "class": {"system": ACT_CODE, "code": code, "display": display},
            "type": [{"text": text}],
            "subject": self.patient_ref(),
            "period": period,
            "serviceProvider": self.unit_ref("region"),
        }

    def organization(self) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.5:
            name = rng.choice(REGION_UNITS)
            identifiers = [{"use": "official", "system": HSA, "value": self.hsa_id()}]
            kind = "Vårdenhet"
        else:
            service = rng.choice(["hemtjänst", "hemsjukvård", "socialtjänst"])
            name = f"{rng.choice(MUNICIPALITIES)} kommun, {service}"
            identifiers = [{"use": "official", "system": HSA, "value": self.hsa_id("SE2120002726")}]
            kind = "Kommunal enhet"
        if rng.random() < 0.3:
            nine = f"2120{rng.randrange(10**5):05d}"
            identifiers.append(
                {"use": "secondary", "system": ORGNR, "value": nine + luhn_digit(nine)}
            )
        resource: dict[str, Any] = {
            "resourceType": "Organization",
            "text": narrative(name),
            "identifier": identifiers,
            "active": rng.random() < 0.95,
            "type": [
                {
                    "coding": [coding("http://snomed.info/sct", "43741000", "vårdenhet")],
                    "text": kind,
                }
            ],
            "name": name,
            "address": [self.address("work")],
        }
        telecom = self.telecom(1, 2)
        resource["telecom"] = [{**t, "use": "work"} for t in telecom]
        return resource

    def practitioner(self) -> dict[str, Any]:
        rng = self.rng
        given, family, gender, birth, _ = self.person()
        title = rng.choice(
            [
                "Läkare",
                "Sjuksköterska",
                "Fysioterapeut",
                "Arbetsterapeut",
                "Biståndshandläggare",
                "Undersköterska",
            ]
        )
        resource: dict[str, Any] = {
            "resourceType": "Practitioner",
            "text": narrative(f"{given} {family}, {title.lower()}"),
            "identifier": [{"use": "official", "system": HSA, "value": self.hsa_id()}],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given]}],
            "gender": gender,
            "birthDate": max(birth, date(1958, 1, 1)).isoformat(),
            "qualification": [{"code": {"text": title}}],
        }
        telecom = [{**t, "use": "work"} for t in self.telecom(1, 3)]
        resource["telecom"] = telecom
        return resource

    def sip_consent(self) -> dict[str, Any]:
        """The person's consent to a SIP (R-SIP-01): an active SIP CarePlan needs one."""
        subject = self.patient_ref()
        when = self.moment().isoformat()
        kind = coding(f"{SIP}/CodeSystem/sip-consent-kind", "sip", "Samtycke till SIP")
        return {
            "resourceType": "Consent",
            "text": narrative(f"{subject['display']} samtycker till SIP."),
            "status": "active",
            "scope": {"coding": [coding(CONSENT_SCOPE, "patient-privacy", "Privacy Consent")]},
            "category": [{"coding": [kind], "text": "Samtycke till SIP"}],
            "patient": subject,
            "dateTime": when,
            "performer": [subject],
            "policyRule": {"coding": [coding(ACT_CODE, "OPTIN", "opt-in")]},
            "provision": {"type": "permit", "period": {"start": when}},
        }

    def goal(self) -> dict[str, Any]:
        rng = self.rng
        description = rng.choice(GOALS)
        start = self.moment().date()
        return {
            "resourceType": "Goal",
            "text": narrative(description),
            "lifecycleStatus": rng.choice(
                ["proposed", "accepted", "active", "active", "completed"]
            ),
            "category": [{"text": rng.choice(["Huvudmål", "Delmål"])}],
            "description": {"text": description},
            "subject": self.patient_ref(),
            "startDate": start.isoformat(),
            "target": [
                {"dueDate": (start + timedelta(days=rng.choice([30, 90, 180]))).isoformat()}
            ],
        }

    def appointment(self) -> dict[str, Any]:
        rng = self.rng
        status = rng.choice(["booked", "booked", "booked", "proposed", "fulfilled", "cancelled"])
        what = rng.choice(["SIP-möte", "Uppföljning av SIP", "Planeringsmöte inför utskrivning"])
        resource: dict[str, Any] = {
            "resourceType": "Appointment",
            "text": narrative(what),
            "status": status,
            "serviceType": [{"text": what}],
            "description": f"{what}, mötesform: {rng.choice(['fysiskt', 'digitalt', 'telefon'])}",
            "participant": [
                {
                    "actor": self.patient_ref(),
                    "required": "required",
                    "status": "needs-action" if status == "proposed" else "accepted",
                },
            ],
        }
        if status != "proposed" or rng.random() < 0.5:
            start = self.moment()
            resource["start"] = start.isoformat()
            resource["end"] = (start + timedelta(minutes=rng.choice([30, 60, 90]))).isoformat()
        return resource


def mixed_resources(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """`n` valid R4 resources of the mix in MIX, in a shuffled but deterministic order."""
    rng = random.Random(seed)
    builder = _Builder(rng)
    build = {
        "Patient": builder.patient,
        "Observation": builder.observation,
        "CarePlan": builder.care_plan,
        "Encounter": builder.encounter,
        "Organization": builder.organization,
        "Practitioner": builder.practitioner,
        "Goal": builder.goal,
        "Appointment": builder.appointment,
    }
    # Largest-remainder split, so small n keeps the proportions too.
    total = sum(weight for weight, _ in MIX)
    exact = [(n * weight / total, kind) for weight, kind in MIX]
    counts = {kind: int(share) for share, kind in exact}
    by_remainder = sorted(exact, key=lambda item: item[0] - int(item[0]), reverse=True)
    for _, kind in by_remainder[: n - sum(counts.values())]:
        counts[kind] += 1
    kinds = [kind for _, kind in MIX for _ in range(counts[kind])]
    rng.shuffle(kinds)
    return [build[kind]() for kind in kinds]


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    counts = Counter(r["resourceType"] for r in mixed_resources(size, seed))
    for kind, count in counts.most_common():
        print(f"{kind:14} {count:6}")
    print(f"{'total':14} {sum(counts.values()):6}")


def link(value: Any, kind: str, reference: str) -> Any:
    """Logical references (`{"type": kind, "identifier": …}`) to the case's own resource."""
    if isinstance(value, dict):
        if value.get("type") == kind and "identifier" in value:
            return {"reference": reference, "display": value.get("display", kind)}
        return {k: link(v, kind, reference) for k, v in value.items()}
    if isinstance(value, list):
        return [link(v, kind, reference) for v in value]
    return value

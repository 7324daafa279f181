"""Hypothesis strategies for the HTTP fuzz test: values, resources, ids and version ids.

Why: the server must answer every input with a 2xx or a 4xx OperationOutcome, so the inputs
are built to reach deep (resources shaped by the R4 definitions, parameter names from the
search registry) and then turned hostile (wrong JSON types, arrays for objects, huge numbers,
odd unicode, nesting, nulls). Every strategy shrinks towards the well-formed case.
"""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from fhir_server.resource_types import resource_types
from fhir_server.validation.bindings import core_binding
from fhir_server.validation.definitions import ElementDef, children, primitive_types

ROOT = Path(__file__).resolve().parent.parent
TYPES = (
    "Patient", "Observation", "CarePlan", "Encounter", "Condition", "Practitioner",
    "Organization", "ServiceRequest", "Task", "Communication", "Consent", "CareTeam",
    "Goal", "EpisodeOfCare", "Questionnaire", "QuestionnaireResponse", "SearchParameter",
    "ValueSet", "CodeSystem", "ConceptMap", "Subscription", "Basic", "Parameters",
)  # fmt: skip
ALL_TYPES = tuple(sorted(resource_types()))
SEED_IDS = ("p1", "p2", "o1", "c1", "e1", "org1")
SYSTEMS = (
    "http://electronichealth.se/identifier/personnummer",
    "http://electronichealth.se/identifier/samordningsnummer",
    "urn:oid:1.2.752.129.2.1.3.1",
    "urn:oid:1.2.752.29.4.19",
    "http://loinc.org",
    "http://snomed.info/sct",
    "http://unitsofmeasure.org",
)
PNR = ("191212121212", "19121212-1212", "201212121212", "199001019802", "19900161", "")


def _urls(kind: str) -> tuple[str, ...]:
    found = []
    for directory in (ROOT / "profiles", ROOT / "tests" / "profiles"):
        for path in sorted(directory.glob(f"{kind}-*.json")):
            url = json.loads(path.read_text(encoding="utf-8")).get("url")
            if isinstance(url, str):
                found.append(url)
    return tuple(found)


PROFILE_URLS = _urls("StructureDefinition")
VALUESET_URLS = (*_urls("ValueSet"), "http://hl7.org/fhir/ValueSet/administrative-gender")
CODESYSTEM_URLS = (*_urls("CodeSystem"), "http://snomed.info/sct")

# ---------------------------------------------------------------- hostile atoms

ODD_TEXT = st.sampled_from(
    [
        "", " ", "\x00", "\u0000x", "²", "١٢٣", "𝟘𝟙", "Åström", "é", "\u200b", "\ufeff",
        "\U0001f600", "a\nb", "\\", '"', "'; DROP TABLE resources;--", "%00", "%", "../..",
        "${x}", "<div>", "\u202e", "ǅ", "ﬃ", "İ", "Σ", "\ud7ff", "9" * 40, "-0", "1e309",
        "NaN", "null", "true", "[]", "{}", "x" * 300, "\ud800", "a\udfffb",
    ]
)  # fmt: skip
TEXT = st.one_of(
    st.text(max_size=12),
    ODD_TEXT,
    st.text(st.characters(codec="utf-8"), max_size=20),
)
HUGE_INT = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63) - 1, 10**30, 2**31, -1, 0, 10**400]),
)
NUMBER = st.one_of(
    HUGE_INT,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -0.0, 5e-324]),
)


def deep(depth: int, kind: str = "extension") -> Any:
    """Containers nested `depth` levels: extensions in extensions, or bare lists/objects."""
    if kind == "list":
        value: Any = []
        for _ in range(depth):
            value = [value]
        return value
    if kind == "object":
        value = {}
        for _ in range(depth):
            value = {"a": value}
        return value
    value = {"url": "http://example.org/x", "valueString": "bottom"}
    for _ in range(depth):
        value = {"url": "http://example.org/x", "extension": [value]}
    return value


DEEP = st.builds(deep, st.integers(1, 140), st.sampled_from(["extension", "list", "object"]))


@st.composite
def hostile(draw: st.DrawFn, valid: Any = None) -> Any:
    """A value of the wrong kind: null, empty, a scalar for a container, arrays for objects."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return None
    if choice == 1:
        return draw(st.sampled_from(["", [], {}, [None], [""], [[]], {"": None}]))
    if choice == 2:
        return draw(st.booleans())
    if choice == 3:
        return draw(NUMBER)
    if choice == 4:
        return draw(TEXT)
    if choice == 5:
        return [valid, valid] if valid is not None else [draw(TEXT)]
    if choice == 6:
        return {"value": valid} if valid is not None else {"x": draw(TEXT)}
    if choice == 7:
        return [valid] if not isinstance(valid, list) else valid[0] if valid else None
    if choice == 8:
        return draw(DEEP)
    return {"resourceType": draw(st.sampled_from(TYPES)), "id": draw(TEXT)}


def maybe_hostile(strategy: st.SearchStrategy[Any], rate: int = 8) -> st.SearchStrategy[Any]:
    """`strategy`, or (about `rate`% of the time) something hostile in its place."""

    @st.composite
    def pick(draw: st.DrawFn) -> Any:
        valid = draw(strategy)
        if draw(st.integers(0, 99)) >= 100 - rate:
            return draw(hostile(valid))
        return valid

    return pick()


# ---------------------------------------------------------------- primitives

DATE = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2024", "2024-02", "2024-02-30", "0001-01-01", "9999-12-31", "0000-01-01",
            "2024-13-01", "24-01-01", "2024-1-1", "+2024-01-01", "2024-01-01T", "1912-12-12",
        ]
    ),
)  # fmt: skip
DATETIME = st.one_of(
    DATE,
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2024-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
            "2024-01-01T25:00:00Z", "2024-01-01T10:00:00+99:00", "2024-01-01T10:00Z",
            "2024-06-01T12:00:00.123456789Z", "2024-01-01T00:00:60Z", "2024-01-01T12:00:00",
        ]
    ),
)  # fmt: skip
PRIMITIVE: dict[str, st.SearchStrategy[Any]] = {
    "boolean": st.booleans(),
    "integer": st.one_of(st.integers(-(2**31), 2**31 - 1), HUGE_INT),
    "positiveInt": st.one_of(st.integers(1, 2**31 - 1), HUGE_INT),
    "unsignedInt": st.one_of(st.integers(0, 2**31 - 1), HUGE_INT),
    "decimal": NUMBER,
    "string": TEXT,
    "markdown": TEXT,
    "code": st.one_of(st.sampled_from(["active", "final", "male", "plan", "x y", ""]), TEXT),
    "id": st.one_of(st.from_regex(r"\A[A-Za-z0-9\-.]{1,64}\Z"), TEXT),
    "uri": st.one_of(st.sampled_from([*SYSTEMS, *PROFILE_URLS[:4], "urn:uuid:1"]), TEXT),
    "url": st.one_of(st.sampled_from(["http://example.org/x", "mailto:a@b"]), TEXT),
    "canonical": st.one_of(st.sampled_from([*PROFILE_URLS, *VALUESET_URLS]), TEXT),
    "oid": st.one_of(st.just("urn:oid:1.2.752"), TEXT),
    "uuid": st.one_of(st.uuids().map(lambda u: f"urn:uuid:{u}"), TEXT),
    "base64Binary": st.one_of(st.binary(max_size=12).map(lambda b: b.hex()), TEXT),
    "date": DATE,
    "dateTime": DATETIME,
    "instant": DATETIME,
    "time": st.one_of(st.times().map(lambda t: t.isoformat()), st.just("25:00:00"), TEXT),
    "xhtml": st.one_of(
        st.just('<div xmlns="http://www.w3.org/1999/xhtml">Plan</div>'),
        st.just('<div xmlns="http://www.w3.org/1999/xhtml"><p>a<b>b</p></div>'),
        st.just("<div><script>x</script></div>"),
        TEXT,
    ),
}
assert set(PRIMITIVE) >= primitive_types()


CLEAN: dict[str, st.SearchStrategy[Any]] = {
    **PRIMITIVE,
    "integer": st.integers(-100, 100),
    "positiveInt": st.integers(1, 100),
    "unsignedInt": st.integers(0, 100),
    "decimal": st.decimals(-1000, 1000, places=2).map(float),
    "string": st.text(st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=12),
    "markdown": st.just("**Plan**"),
    "id": st.from_regex(r"\A[A-Za-z0-9\-.]{1,64}\Z"),
    "uri": st.sampled_from([*SYSTEMS, "urn:uuid:1"]),
    "url": st.just("http://example.org/x"),
    "canonical": st.sampled_from(PROFILE_URLS),
    "oid": st.just("urn:oid:1.2.752"),
    "uuid": st.uuids().map(lambda u: f"urn:uuid:{u}"),
    "base64Binary": st.just("aGVq"),
    "date": st.dates().map(lambda d: d.isoformat()),
    "dateTime": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    "instant": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    "time": st.times().map(lambda t: t.isoformat()),
    "xhtml": st.just('<div xmlns="http://www.w3.org/1999/xhtml">Plan</div>'),
}


def _json_name(element: ElementDef, type_code: str) -> str:
    name = element.name
    if name.endswith("[x]"):
        return name[:-3] + type_code[0].upper() + type_code[1:]
    return name


def _codes(path: str) -> list[str]:
    binding = core_binding(path)
    return sorted(binding.valueset.bare_codes)[:30] if binding is not None else []


@st.composite
def element_value(
    draw: st.DrawFn, element: ElementDef, type_code: str, depth: int, rate: int
) -> Any:
    """One value of `element` as `type_code`, recursing into complex types while depth lasts."""
    if type_code == "code" and (codes := _codes(element.path)):
        return draw(maybe_hostile(st.sampled_from(codes), rate))
    if type_code in PRIMITIVE:
        return draw(maybe_hostile((PRIMITIVE if rate else CLEAN)[type_code], rate))
    if type_code == "Resource":
        inner = resource_body(depth=depth - 2, rate=rate) if depth > 1 else st.just(BASIC)
        return draw(inner)
    if type_code == "Reference":
        return draw(maybe_hostile(reference(element.targets, rate), rate))
    if type_code == "Identifier":
        return draw(maybe_hostile(identifier(), rate))
    if type_code == "Extension":
        return draw(maybe_hostile(extension(rate), rate))
    if element.ref is not None:
        path = element.ref.lstrip("#")
        path = path if "." in path else element.path
    else:
        path = element.path if element.nested else type_code
    return draw(maybe_hostile(complex_value(path, depth - 1, rate), rate))


BASIC = {"resourceType": "Basic", "code": {"text": "x"}}
EXTENSION_URLS = ("http://example.org/x", *PROFILE_URLS[:6])


@st.composite
def extension(draw: st.DrawFn, rate: int) -> dict[str, Any]:
    found: dict[str, Any] = {"url": draw(st.sampled_from(EXTENSION_URLS))}
    kind = draw(st.sampled_from(["String", "Boolean", "Code", "Integer", "DateTime"]))
    type_code = kind[0].lower() + kind[1:]
    found["value" + kind] = draw(maybe_hostile((PRIMITIVE if rate else CLEAN)[type_code], rate))
    return found


def _primitive(element: ElementDef) -> bool:
    return element.name != "id" and all(t in PRIMITIVE for t in element.types)


@st.composite
def complex_value(draw: st.DrawFn, path: str, depth: int, rate: int) -> dict[str, Any]:
    """An object with a few children of `path` (a datatype or a backbone element); never empty,
    as FHIR JSON has no empty objects (the last level takes primitives only)."""
    kids = [e for e in children(path) if e.types]
    if depth <= 1:
        kids = [e for e in kids if _primitive(e)]
    if not kids:
        return {"extension": [draw(extension(rate))]}
    required = [e for e in kids if e.min > 0]
    chosen = draw(
        st.lists(st.sampled_from(kids), min_size=1, max_size=3, unique_by=lambda e: e.path)
    )
    chosen = [*required, *(e for e in chosen if e not in required)]
    return {k: v for e in chosen for k, v in draw(element_entries(e, depth, rate)).items()}


@st.composite
def element_entries(draw: st.DrawFn, element: ElementDef, depth: int, rate: int) -> dict[str, Any]:
    """The JSON member(s) for one element: a value or a list, and sometimes `_name` too."""
    type_code = draw(st.sampled_from(element.types))
    name = _json_name(element, type_code)
    one = element_value(element, type_code, depth, rate)
    repeats = element.max is None or element.max > 1
    value = draw(st.lists(one, min_size=1, max_size=2)) if repeats else draw(one)
    out = {name: value}
    if rate and type_code in PRIMITIVE and draw(st.integers(0, 19)) == 19:
        out["_" + name] = draw(
            st.sampled_from([{"extension": [{"url": "http://x", "valueBoolean": True}]}, None, []])
        )
    return out


@st.composite
def reference(draw: st.DrawFn, targets: tuple[str, ...] = (), rate: int = 8) -> dict[str, Any]:
    """A reference to a seeded resource or an allowed target type; odd ones when hostile."""
    good = st.builds(
        lambda t, i: f"{t}/{i}", st.sampled_from(targets or TYPES), st.sampled_from(SEED_IDS)
    )
    odd = st.one_of(
        st.sampled_from(["Patient/p1", "Observation/o1", "Organization/org1", "#c"]),
        st.sampled_from(["Patient/", "Patient/p1/_history/1", "http://x/fhir/Patient/p1"]),
        st.sampled_from(["urn:uuid:00000000-0000-0000-0000-000000000001", "Nope/1", "/"]),
        st.builds(lambda t, i: f"{t}/{i}", st.sampled_from(TYPES), ids()),
    )
    ref: dict[str, Any] = {"reference": draw(st.one_of(good, odd) if rate else good)}
    if draw(st.integers(0, 3)) == 0:
        ref["identifier"] = draw(identifier())
    if rate and draw(st.integers(0, 4)) == 0:
        ref["type"] = draw(st.sampled_from([*TYPES, "", "Nope"]))
    return ref


@st.composite
def identifier(draw: st.DrawFn) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if draw(st.integers(0, 4)):
        found["system"] = draw(maybe_hostile(st.sampled_from(SYSTEMS), rate=4))
    if not found or draw(st.integers(0, 4)):
        found["value"] = draw(maybe_hostile(st.one_of(st.sampled_from(PNR), TEXT), rate=4))
    return found


@st.composite
def resource_body(
    draw: st.DrawFn, type: str | None = None, depth: int = 4, rate: int | None = None
) -> dict[str, Any]:
    """A resource shaped by its R4 definition, a few elements deep; `rate`% of values hostile
    (drawn per resource when not given: half the resources are clean)."""
    if rate is None:
        rate = draw(st.sampled_from([0, 0, 2, 8]))
    name = type or draw(st.one_of(st.sampled_from(TYPES), st.sampled_from(ALL_TYPES)))
    kids = [e for e in children(name) if e.types and e.name not in ("contained",)]
    required = [e for e in kids if e.min > 0]
    chosen = draw(st.lists(st.sampled_from(kids), max_size=5, unique_by=lambda e: e.path))
    body: dict[str, Any] = {"resourceType": name}
    for element in [*required, *(e for e in chosen if e not in required)]:
        body.update(draw(element_entries(element, depth, rate)))
    if name == "Patient" and draw(st.booleans()):
        body["identifier"] = draw(st.lists(maybe_hostile(identifier(), rate), max_size=2))
    if draw(st.integers(0, 9)) == 0:
        body["meta"] = {"profile": [draw(st.sampled_from(PROFILE_URLS))]}
    if draw(st.integers(0, 14)) == 0:
        body["contained"] = [draw(resource_body(depth=1, rate=rate))]
    if rate and draw(st.integers(0, 19)) == 0:
        body["resourceType"] = draw(hostile(name))
    if rate and draw(st.integers(0, 19)) == 0:
        key = draw(st.sampled_from(["extension", "modifierExtension", "bogus", "", "id", "meta"]))
        body[key] = draw(hostile())
    return body


def to_bytes(value: Any) -> bytes:
    """Serialise as JSON the standard library allows (big ints, lone surrogates escaped)."""
    return json.dumps(value, ensure_ascii=True).encode()


RAW_BODIES = st.sampled_from(
    [
        b"", b"null", b"[]", b"{}", b"1", b'"Patient"', b"{", b'{"resourceType":"Patient"',
        b'{"resourceType":"Patient","active":tru}', b'{"resourceType":"Patient"}x',
        b'\xef\xbb\xbf{"resourceType":"Patient"}', b'{"resourceType":"Patient","id":"\xff"}',
        b'{"resourceType":"Patient","a":1,"a":2}', b'{"resourceType":"Patient","active":NaN}',
        b'{"resourceType":"Patient","multipleBirthInteger":1e99999}',
        b'{"resourceType":"Patient","multipleBirthInteger":' + b"9" * 5000 + b"}",
        b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}',
        b'{"resourceType":"Patient","name":[{"family":"\\ud83d\\ude00"}]}',
        b'{"resourceType":"Pati\\u0000ent"}', b"\x00\x00\x00{",
        b'{"resourceType":"Observation","status":"final","code":{"text":"t"},'
        b'"valueQuantity":{"value":1e-99999999}}',
        b'{"resourceType":"RiskAssessment","status":"final","subject":{"reference":"Patient/p1"},'
        b'"prediction":[{"probabilityDecimal":1E+999999999999}]}',
    ]
)  # fmt: skip


def body_bytes(value: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Mostly the serialised value; sometimes a raw malformed body instead."""
    return st.one_of(value.map(to_bytes), value.map(to_bytes), value.map(to_bytes), RAW_BODIES)


# ---------------------------------------------------------------- ids and versions


def ids() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(SEED_IDS),
        st.from_regex(r"\A[A-Za-z0-9\-.]{1,64}\Z"),
        st.sampled_from(["x" * 65, "a b", "é", "²", "..", ".", "-", "%2F", "a%00", "$x", "_x"]),
        TEXT.filter(bool),
    )


def version_ids() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(0, 5).map(str),
        st.sampled_from(["-1", "1.0", "²", "١", "01", " 1", "9" * 30, "9" * 5000, "0x1", ""]),
        HUGE_INT.map(str),
        TEXT.filter(bool),
    )


def path_segment(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="") or "%20"

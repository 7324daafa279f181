"""Hypothesis strategies for the requests around resources: headers, searches, patches, bundles.

Why apart from `fuzz_strategies`: that module builds values and resources from the R4
definitions; this one builds what a client sends with them, from the search registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from fhir_server.search.parser import encode_cursor
from fhir_server.search.registry import MODIFIERS, search_params
from tests.fuzz_strategies import (
    ALL_TYPES,
    DATETIME,
    DEEP,
    HUGE_INT,
    NUMBER,
    PNR,
    PROFILE_URLS,
    SYSTEMS,
    TEXT,
    TYPES,
    ids,
    maybe_hostile,
    resource_body,
    to_bytes,
    version_ids,
)

# ---------------------------------------------------------------- headers

ETAG = st.one_of(
    st.integers(0, 5).map(lambda n: f'W/"{n}"'),
    version_ids().map(lambda v: f'W/"{v}"'),
    st.sampled_from(['"1"', "1", "W/", 'W/""', "*", 'W/"1", W/"2"', 'W/"²"', 'w/"1"']),
)
HTTP_DATE = st.one_of(
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
    st.sampled_from(
        [
            "Mon, 01 Jan 2024 00:00:00 GMT", "Mon, 01 Jan 2024 00:00:00 -0000",
            "Mon, 01 Jan 2024 00:00:00 +0100", "Mon, 01 Jan 0001 00:00:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT", "yesterday", "", "2024-01-01T00:00:00Z",
        ]
    ),
)  # fmt: skip
CONTENT_TYPES = st.sampled_from(
    [
        "application/fhir+json", "application/json", "application/fhir+json; charset=utf-8",
        "application/fhir+json;charset=UTF8", "application/fhir+json; charset=latin-1",
        "application/fhir+xml", "text/plain", "application/json-patch+json",
        "application/x-www-form-urlencoded", "", ";", "application/fhir+json; charset",
        "application/fhir+json; fhirVersion=3.0", "*/*",
    ]
)  # fmt: skip
ACCEPTS = st.sampled_from(
    [
        "application/fhir+json", "application/json", "*/*", "application/fhir+xml",
        "text/html", "application/fhir+json; fhirVersion=4.0", "application/fhir+json;q=0",
        "application/fhir+json; fhirVersion=3.0", ",", ";q=x", "",
    ]
)  # fmt: skip
PREFER = st.sampled_from(
    [
        "return=minimal", "return=representation", "return=OperationOutcome",
        "handling=lenient", "handling=strict", "respond-async", "return=", "=", ";;",
        "return=minimal, handling=lenient", "return=\"minimal\"",
    ]
)  # fmt: skip


def raw_header(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """A header value; sometimes with non-ASCII bytes (as latin-1 or UTF-8)."""
    return st.one_of(
        text.map(lambda t: t.encode("latin-1", "ignore")),
        st.sampled_from([b"\xff", "²".encode(), b'W/"\xb2"', b"\x7f"]),
    )


@st.composite
def headers(draw: st.DrawFn, body: bool = False) -> dict[str, bytes]:
    """A few of the conditional and negotiation headers, with good and bad values."""
    choices: dict[str, st.SearchStrategy[bytes]] = {
        "If-Match": raw_header(ETAG),
        "If-None-Match": raw_header(ETAG),
        "If-Modified-Since": raw_header(HTTP_DATE),
        "If-None-Exist": raw_header(search_query(st.just("Patient")).map(lambda q: q.query)),
        "Prefer": raw_header(PREFER),
        "Accept": st.one_of(st.just(b"application/fhir+json"), raw_header(ACCEPTS)),
    }
    if body:
        good = st.just(b"application/fhir+json")
        choices["Content-Type"] = st.one_of(good, good, raw_header(CONTENT_TYPES))
    names = draw(st.lists(st.sampled_from(sorted(choices)), max_size=3, unique=True))
    return {name: draw(choices[name]) for name in names}


# ---------------------------------------------------------------- search

NUMBER_TEXT = st.one_of(
    NUMBER.map(str),
    st.sampled_from(["1e-99999999", "1e99999999", "1E+999999999999", ".5e-0", "00.0", "-0"]),
    TEXT,
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx", "")
VALUE_BY_TYPE: dict[str, st.SearchStrategy[str]] = {
    "token": st.one_of(
        st.builds(lambda s, c: f"{s}|{c}", st.sampled_from([*SYSTEMS, ""]), st.sampled_from(PNR)),
        st.sampled_from(["active", "male", "|", "||", "a|b|c", "\\|", "\\,", "http://x|"]),
        TEXT,
    ),
    "string": TEXT,
    "date": st.builds(lambda p, d: p + d, st.sampled_from(PREFIXES), DATETIME),
    "number": st.builds(lambda p, n: p + n, st.sampled_from(PREFIXES), NUMBER_TEXT),
    "quantity": st.builds(
        lambda p, n, s, c: f"{p}{n}|{s}|{c}",
        st.sampled_from(PREFIXES),
        NUMBER_TEXT,
        st.sampled_from(["", "http://unitsofmeasure.org", "|"]),
        st.sampled_from(["", "mg", "kg", "[in_i]", "%"]),
    ),
    "reference": st.one_of(
        st.sampled_from(["Patient/p1", "p1", "Patient/", "/", "http://testserver/fhir/Patient/p1"]),
        st.builds(lambda t, i: f"{t}/{i}", st.sampled_from(ALL_TYPES), ids()),
        TEXT,
    ),
    "uri": st.one_of(st.sampled_from([*SYSTEMS, *PROFILE_URLS[:3]]), TEXT),
    "composite": st.builds(lambda a, b: f"{a}${b}", TEXT, TEXT),
}
SPECIAL_VALUES: dict[str, st.SearchStrategy[str]] = {
    "_count": st.one_of(
        st.integers(-1, 1200).map(str),
        st.sampled_from(["²", "1.5", "", "9" * 30, "9" * 5000, "0x10", " 1", "١"]),
    ),
    "_summary": st.sampled_from(["true", "false", "text", "data", "count", "", "x"]),
    "_total": st.sampled_from(["none", "estimate", "accurate", "", "x"]),
    "_elements": st.sampled_from(["id", "name,birthDate", "", ",", "x.y", "*", "name.family"]),
    "_cursor": st.one_of(
        st.builds(
            encode_cursor,
            st.recursive(
                st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text()),
                lambda x: st.lists(x, max_size=4),
                max_leaves=6,
            ),
        ),
        TEXT,
    ),
    "_format": st.sampled_from(["json", "xml", "application/fhir+json", "", "html"]),
    "_pretty": st.sampled_from(["true", "false", "x"]),
    "_id": st.one_of(ids(), st.builds(lambda a, b: f"{a},{b}", ids(), ids())),
    "_lastUpdated": st.builds(lambda p, d: p + d, st.sampled_from(PREFIXES), DATETIME),
    "_since": DATETIME,
    "_text": TEXT,
    "_filter": TEXT,
}


@dataclass
class Query:
    """A search as sent: the raw query string and the parameter names used."""

    type: str
    query: str
    names: list[str] = field(default_factory=list)


def encode(text: str) -> str:
    """Percent-encode a query name or value (lone surrogates become invalid UTF-8 bytes)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe=":,|.-_*$/")


@st.composite
def search_param(draw: st.DrawFn, type: str) -> tuple[str, str]:
    """One (name, value): a known parameter with a modifier, chain, prefix or include."""
    params = search_params(type)
    names = sorted(params)
    kind = draw(st.integers(0, 9))
    if kind <= 4 and names:
        param = params[draw(st.sampled_from(names))]
        name = param.name
        modifier = draw(st.integers(0, 5))
        if modifier == 1:
            name += ":" + draw(st.sampled_from(sorted(MODIFIERS.get(param.type, {"missing"}))))
        elif modifier == 2:
            name += ":" + draw(st.sampled_from(["exact", "nope", "", "Patient", "text", "of-type"]))
        if draw(st.integers(0, 3)) == 0:
            value = draw(st.sampled_from(["true", "false", ""]))
        else:
            strategy = VALUE_BY_TYPE.get(param.type, TEXT)
            value = ",".join(draw(st.lists(strategy, min_size=1, max_size=3)))
        return name, value
    if kind == 5:
        refs = [n for n, p in params.items() if p.type == "reference"] or ["subject"]
        link = draw(st.sampled_from(sorted(refs)))
        target = draw(st.sampled_from(["", ":Patient", ":Nope", ":Observation"]))
        inner = draw(
            st.sampled_from(["name", "identifier", "birthdate", "_id", "x", "subject.name"])
        )
        return f"{link}{target}.{inner}", draw(TEXT)
    if kind == 6:
        other = draw(st.sampled_from(["Observation", "CarePlan", "Encounter", "Nope", ""]))
        ref = draw(st.sampled_from(["subject", "patient", "x", ""]))
        inner = draw(st.sampled_from(["code", "status", "_id", "_has:Task:focus:status", ""]))
        return f"_has:{other}:{ref}:{inner}", draw(TEXT)
    if kind == 7:
        which = draw(
            st.sampled_from(
                [
                    "_include",
                    "_revinclude",
                    "_include:iterate",
                    "_revinclude:iterate",
                    "_include:recurse",
                ]
            )
        )
        source = draw(st.sampled_from([type, "Observation", "Nope", "*", ""]))
        ref = draw(st.sampled_from(["subject", "patient", "*", "general-practitioner", "", "x"]))
        target = draw(st.sampled_from(["", ":Patient", ":Nope"]))
        return which, f"{source}:{ref}{target}" if source != "*" else "*"
    if kind == 8:
        keys = [*names[:40], "_id", "_lastUpdated", "nope", ""]
        fields = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3))
        return "_sort", ",".join(draw(st.sampled_from(["", "-", "+"])) + f for f in fields)
    name = draw(st.sampled_from(sorted(SPECIAL_VALUES)))
    return name, draw(SPECIAL_VALUES[name])


RAW_QUERY_BITS = st.sampled_from(
    ["%C2%B2", "%FF", "%", "%%", "+", "&&", "=", "a=%00", "_count=%C2%B2", "%E2%80%AE=1"]
)


@st.composite
def search_query(draw: st.DrawFn, types: st.SearchStrategy[str] | None = None) -> Query:
    type = draw(types if types is not None else st.sampled_from(TYPES))
    pairs = draw(st.lists(search_param(type), max_size=4))
    parts = [f"{encode(n)}={encode(v)}" for n, v in pairs]
    if draw(st.integers(0, 9)) == 0:
        parts.append(draw(RAW_QUERY_BITS))
    return Query(type, "&".join(parts), [n for n, _ in pairs])


# ---------------------------------------------------------------- patch

JSON_POINTER = st.sampled_from(
    ["/name/0/family", "/name/-", "/active", "/", "", "/name/99", "/a~2b", "/name/00",
     "/identifier/0/system", "/id", "/resourceType", "/meta", "/name/0/given/0", "name"]
)  # fmt: skip


@st.composite
def json_patch(draw: st.DrawFn) -> Any:
    op = st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]),
            "path": maybe_hostile(JSON_POINTER),
        },
        optional={
            "value": st.one_of(
                TEXT, NUMBER, st.booleans(), st.none(), DEEP, st.just([{"family": "x"}])
            ),
            "from": JSON_POINTER,
        },
    )
    return draw(maybe_hostile(st.lists(op, max_size=4)))


@st.composite
def fhirpath_patch(draw: st.DrawFn) -> Any:
    part = st.fixed_dictionaries(
        {
            "type": st.sampled_from(["add", "insert", "delete", "replace", "move", "x"]),
            "path": st.sampled_from(
                [
                    "Patient",
                    "Patient.name",
                    "Patient.name[0]",
                    "Patient.name.where(use='x')",
                    "Patient.(",
                    "",
                    "%x",
                ]
            ),
        },
        optional={
            "name": st.sampled_from(["family", "active", "given", "", "x"]),
            "value": st.one_of(
                TEXT.map(lambda t: ("valueString", t)),
                NUMBER.map(lambda n: ("valueInteger", n)),
                st.just(("valueHumanName", {"family": "x"})),
            ),
            "index": st.one_of(st.integers(-2, 3), HUGE_INT),
            "source": st.integers(-1, 3),
            "destination": st.integers(-1, 3),
        },
    ).map(_fhirpath_operation)
    operations = draw(st.lists(maybe_hostile(part), max_size=3))
    return {"resourceType": "Parameters", "parameter": operations}


def _fhirpath_operation(fields: dict[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"name": "type", "valueCode": fields["type"]},
        {"name": "path", "valueString": fields["path"]},
    ]
    if "name" in fields:
        parts.append({"name": "name", "valueString": fields["name"]})
    if "value" in fields:
        key, value = fields["value"]
        parts.append({"name": "value", key: value})
    for key in ("index", "source", "destination"):
        if key in fields:
            parts.append({"name": key, "valueInteger": fields[key]})
    return {"name": "operation", "part": parts}


# ---------------------------------------------------------------- bundles


@st.composite
def bundle_entry(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "get", "X"]))
    type = draw(st.sampled_from(["Patient", "Observation", "CarePlan", "Organization"]))
    url = draw(
        st.one_of(
            st.just(type),
            st.builds(lambda i: f"{type}/{i}", ids()),
            st.builds(lambda q: f"{type}?{q.query}", search_query(st.just(type))),
            st.sampled_from(
                [
                    f"{type}/p1/_history/1",
                    f"{type}/_history",
                    "",
                    "/",
                    "metadata",
                    "http://testserver/fhir/Patient/p1",
                    "Nope/1",
                    "_history",
                    "Patient/$validate",
                    "urn:uuid:1",
                ]
            ),
        )
    )
    request: dict[str, Any] = {"method": method, "url": url}
    for key, strategy in (
        ("ifMatch", ETAG), ("ifNoneMatch", ETAG), ("ifNoneExist", st.just("identifier=x|y")),
        ("ifModifiedSince", DATETIME),
    ):  # fmt: skip
        if draw(st.integers(0, 9)) == 0:
            request[key] = draw(strategy)
    entry: dict[str, Any] = {"request": draw(maybe_hostile(st.just(request), rate=5))}
    if draw(st.booleans()):
        entry["fullUrl"] = draw(
            st.one_of(
                st.uuids().map(lambda u: f"urn:uuid:{u}"),
                st.sampled_from(["urn:uuid:00000000-0000-0000-0000-000000000001", "", "x"]),
            )
        )
    if method in ("POST", "PUT") or draw(st.integers(0, 4)) == 0:
        entry["resource"] = draw(resource_body(type=type, depth=2))
    if method == "PATCH" and draw(st.booleans()):
        entry["resource"] = draw(
            st.one_of(
                fhirpath_patch(),
                json_patch().map(
                    lambda p: {
                        "resourceType": "Binary",
                        "contentType": "application/json-patch+json",
                        "data": to_bytes(p).hex(),
                    }
                ),
            )
        )
    return entry


@st.composite
def bundle(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            ["transaction", "batch", "transaction", "batch", "document", "collection", "x", None]
        )
    )
    body: dict[str, Any] = {"resourceType": "Bundle"}
    if kind is not None:
        body["type"] = kind
    body["entry"] = draw(
        maybe_hostile(st.lists(maybe_hostile(bundle_entry(), rate=5), max_size=4), rate=5)
    )
    return body

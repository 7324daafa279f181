"""`$translate` (ConceptMap-translate, R4): a code in one system to the codes of another.

Why: an integration with Lifecare SP or SAMSA must turn what a user sees on screen ("Mötet
avser: Planering") into the codes our resources carry, using the same ConceptMaps an
implementer reads in `mappings/`.  Maps are found in storage, by search: start-up publishes
every loaded map there, so one lookup covers those and maps created over REST, and a
translation always follows what `GET ConceptMap?url=…` shows (an edited or deleted map
translates as it now reads).

Outcomes, as the specification words them: a map that has no match for the code is a
successful call with `result = false` and a message; `result` is true only when a match has an
equivalence other than `unmatched` or `disjoint`.  A request naming a map that does not exist
(`url`, or the id of `ConceptMap/[id]/$translate`) is 404, like a read of a missing resource.
`reverse=true` looks the code up among the maps' targets and returns their sources, with
`wider`/`narrower` (and `subsumes`/`specializes`) swapped, because the direction swapped.
Not offered: `dependency` (no map here uses dependsOn) and `group.unmapped`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from fhir_server.errors import error
from fhir_server.search.parser import parse_search

from .context import Context
from .crud import read

KINDS = {  # parameter -> its R4 type, for reading a Parameters body
    "url": "uri",
    "conceptMapVersion": "string",
    "code": "code",
    "system": "uri",
    "version": "string",
    "source": "uri",
    "target": "uri",
    "targetsystem": "uri",
    "reverse": "boolean",
    "coding": "Coding",
    "codeableConcept": "CodeableConcept",
    "conceptMap": "resource",
}
BODY_ONLY = ("coding", "codeableConcept", "conceptMap")
STRING_VALUES = ("valueUri", "valueCode", "valueString", "valueCanonical", "valueUrl")
NO_MATCH = ("unmatched", "disjoint")
REVERSED = {
    "wider": "narrower",
    "narrower": "wider",
    "subsumes": "specializes",
    "specializes": "subsumes",
}


@dataclass(frozen=True, slots=True)
class Coding:
    system: str
    code: str
    version: str | None = None
    display: str | None = None


@dataclass(frozen=True, slots=True)
class TranslateRequest:
    codings: tuple[Coding, ...]
    url: str | None = None
    map_version: str | None = None
    source: str | None = None  # value set of the code given
    target: str | None = None  # value set of the codes wanted
    target_system: str | None = None
    reverse: bool = False
    concept_map: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Match:
    equivalence: str
    concept: Coding | None
    source: str  # the ConceptMap's url
    comment: str | None = None


def read_request(
    ctx: Context, query: Iterable[tuple[str, str]], body: dict[str, Any] | None
) -> TranslateRequest:
    """The request from the query and, for POST, a Parameters body, which must be valid R4
    (so a `conceptMap` given in it is a valid ConceptMap)."""
    if body is not None and body.get("resourceType") == "Parameters":
        ctx.validator.check(body, "Parameters")
    return unpack(query, body)


def unpack(query: Iterable[tuple[str, str]], body: dict[str, Any] | None) -> TranslateRequest:
    """The request from the query and a Parameters body (or None); 400 if unusable."""
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name, text in query:
        if name in ("_format", "_pretty"):
            continue
        _known(name, name)
        if name in BODY_ONLY:
            raise error(400, "invalid", f"'{name}' can only be given in a POST body", name)
        _put(values, where, name, _query_value(name, text), name)
    if body is not None:
        if body.get("resourceType") != "Parameters":
            raise error(400, "invalid", "$translate takes a Parameters body", "resourceType")
        for i, parameter in enumerate(body.get("parameter") or []):
            location = f"Parameters.parameter[{i}]"
            name = parameter.get("name", "")
            _known(name, location)
            _put(values, where, name, _body_value(parameter, name, location), location)
    return TranslateRequest(
        codings=_codings(values, where),
        url=values.get("url"),
        map_version=values.get("conceptMapVersion"),
        source=values.get("source"),
        target=values.get("target"),
        target_system=values.get("targetsystem"),
        reverse=values.get("reverse", False),
        concept_map=values.get("conceptMap"),
    )


def _known(name: str, location: str) -> None:
    if name == "dependency":
        message = "'dependency' is not supported: no ConceptMap here uses dependsOn"
        raise error(400, "not-supported", message, location)
    if name not in KINDS:
        raise error(400, "invalid", f"Unknown $translate parameter '{name}'", location)


def _put(values: dict[str, Any], where: dict[str, str], name: str, value: Any, at: str) -> None:
    if name in values:
        raise error(400, "invalid", f"$translate parameter '{name}' is given twice", at)
    values[name], where[name] = value, at


def _query_value(name: str, text: str) -> Any:
    if KINDS[name] != "boolean":
        return text
    if text not in ("true", "false"):
        raise error(400, "invalid", f"'{name}' must be true or false, not '{text}'", name)
    return text == "true"


def _body_value(parameter: dict[str, Any], name: str, location: str) -> Any:
    kind = KINDS[name]
    if kind == "resource":
        value = parameter.get("resource")
    elif kind in ("boolean", "Coding", "CodeableConcept"):
        value = parameter.get(f"value{kind[0].upper()}{kind[1:]}")
    else:
        value = next((parameter[k] for k in STRING_VALUES if k in parameter), None)
    if value is None:
        raise error(400, "invalid", f"$translate parameter '{name}' needs a {kind} value", location)
    return value


def _codings(values: dict[str, Any], where: dict[str, str]) -> tuple[Coding, ...]:
    """The code(s) to translate: code + system, a coding, or a codeableConcept's codings."""
    given = [n for n in where if n in ("code", "coding", "codeableConcept")]  # request order
    if not given:
        message = "$translate needs a code and its system, a coding or a codeableConcept"
        raise error(400, "required", message, "code")
    if len(given) > 1:
        message = "Give one of code (with system), coding and codeableConcept"
        raise error(400, "invalid", message, where[given[1]])
    if given[0] == "code":
        if "system" not in values:
            raise error(400, "required", "A code needs the system it is from", "system")
        return (Coding(values["system"], values["code"], values.get("version")),)
    for name in ("system", "version"):
        if name in values:
            raise error(400, "invalid", f"'{name}' goes with 'code'", where[name])
    if given[0] == "coding":
        codings = [values["coding"]]
    else:
        codings = values["codeableConcept"].get("coding") or []
    found = tuple(
        Coding(c["system"], c["code"], c.get("version"))
        for c in codings
        if c.get("system") and c.get("code")
    )
    if not found:
        message = f"'{given[0]}' needs a coding with system and code"
        raise error(400, "required", message, where[given[0]])
    return found


async def translate(ctx: Context, ask: TranslateRequest, id: str | None) -> dict[str, Any]:
    """The `Parameters` answer: result, a message when nothing maps, and the matches."""
    maps = await _maps(ctx, ask, id)
    matches: list[Match] = []
    for concept_map in maps:
        for coding in ask.codings:
            if _applies(ctx, ask, concept_map, coding):
                found = _matches(concept_map, coding, ask)
                matches += [m for m in found if _in_target(ctx, ask, concept_map, m)]
    matches = list(dict.fromkeys(matches))  # several codings may reach one target
    result = any(m.equivalence not in NO_MATCH for m in matches)
    parameters: list[dict[str, Any]] = [{"name": "result", "valueBoolean": result}]
    if not result:
        parameters.append({"name": "message", "valueString": _message(ask, maps, matches)})
    parameters += [_match_parameter(m) for m in matches]
    return {"resourceType": "Parameters", "parameter": parameters}


async def _maps(ctx: Context, ask: TranslateRequest, id: str | None) -> list[dict[str, Any]]:
    """The ConceptMaps to use: the instance, the one given, those with the url, or all that
    translate from the code's system (to `targetsystem`)."""
    if id is not None:
        if ask.concept_map is not None:
            message = "'conceptMap' cannot be given to ConceptMap/[id]/$translate"
            raise error(400, "invalid", message, "conceptMap")
        version = await read(ctx, "ConceptMap", id)
        assert version.json is not None
        concept_map = orjson.loads(version.json)
        if ask.url is not None and concept_map.get("url") != _versionless(ask.url):
            message = f"ConceptMap/{id} has url {concept_map.get('url')}, not {ask.url}"
            raise error(400, "invalid", message, "url")
        return [concept_map]
    if ask.concept_map is not None:
        return [ask.concept_map]
    if ask.url is not None:
        url, _, in_url = ask.url.partition("|")  # `url|version` names a version too
        version = ask.map_version or in_url or None
        params = [("url", url)] + ([("version", version)] if version else [])
        found = await _search(ctx, params)
        if not found:
            wanted = url + (f" version {version}" if version else "")
            raise error(404, "not-found", f"No ConceptMap with url {wanted}", "url")
        return found
    inbound, outbound = "source-system", "target-system"
    if ask.reverse:
        inbound, outbound = outbound, inbound
    extra = [(outbound, ask.target_system)] if ask.target_system else []
    by_id: dict[str, dict[str, Any]] = {}
    for system in dict.fromkeys(c.system for c in ask.codings):
        for concept_map in await _search(ctx, [(inbound, system), *extra]):
            by_id.setdefault(concept_map["id"], concept_map)
    return list(by_id.values())


async def _search(ctx: Context, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Current ConceptMaps matching the criteria (the first `max_page_size`), by id."""
    count = str(ctx.settings.max_page_size)
    parsed = parse_search("ConceptMap", [*params, ("_count", count)], max_count=int(count))
    page = await ctx.storage.search(replace(parsed.query, total=False), ctx.access)
    return [orjson.loads(v.json) for v in page.items if v.json is not None]


def _matches(concept_map: dict[str, Any], coding: Coding, ask: TranslateRequest) -> list[Match]:
    """The targets of `coding` in the map's groups (its sources when reversed)."""
    url = concept_map.get("url") or f"ConceptMap/{concept_map.get('id')}"
    given, wanted = ("target", "source") if ask.reverse else ("source", "target")
    out: list[Match] = []
    for group in concept_map.get("group") or []:
        if group.get(given) != coding.system:
            continue
        if ask.target_system is not None and group.get(wanted) != ask.target_system:
            continue
        if coding.version and group.get(f"{given}Version") not in (None, coding.version):
            continue
        for element in group.get("element") or []:
            for target in element.get("target") or []:
                if ask.reverse:
                    found = _reverse_match(group, element, target, coding.code, url)
                elif element.get("code") == coding.code:
                    found = _forward_match(group, target, url)
                else:
                    found = None
                if found is not None:
                    out.append(found)
    return out


def _forward_match(group: dict[str, Any], target: dict[str, Any], url: str) -> Match:
    concept = None
    if group.get("target") and target.get("code"):
        version, display = group.get("targetVersion"), target.get("display")
        concept = Coding(group["target"], target["code"], version, display)
    return Match(target["equivalence"], concept, url, target.get("comment"))


def _reverse_match(
    group: dict[str, Any], element: dict[str, Any], target: dict[str, Any], code: str, url: str
) -> Match | None:
    if target.get("code") != code or not element.get("code") or not group.get("source"):
        return None
    version, display = group.get("sourceVersion"), element.get("display")
    concept = Coding(group["source"], element["code"], version, display)
    equivalence = REVERSED.get(target["equivalence"], target["equivalence"])
    return Match(equivalence, concept, url, target.get("comment"))


def _applies(
    ctx: Context, ask: TranslateRequest, concept_map: dict[str, Any], coding: Coding
) -> bool:
    """`source`: the map translates from that value set, or the code is in it."""
    if ask.source is None:
        return True
    if _declared(concept_map, "target" if ask.reverse else "source") == _versionless(ask.source):
        return True
    codes = ctx.validator.conformance.valueset(ask.source)
    return codes is not None and (coding.system, coding.code) in codes.codes


def _in_target(
    ctx: Context, ask: TranslateRequest, concept_map: dict[str, Any], match: Match
) -> bool:
    """`target`: the map translates into that value set, or the match's code is in it."""
    if ask.target is None:
        return True
    if _declared(concept_map, "source" if ask.reverse else "target") == _versionless(ask.target):
        return True
    codes = ctx.validator.conformance.valueset(ask.target)
    concept = match.concept
    return (
        codes is not None
        and concept is not None
        and ((concept.system, concept.code) in codes.codes)
    )


def _declared(concept_map: dict[str, Any], side: str) -> str | None:
    value = concept_map.get(f"{side}Uri") or concept_map.get(f"{side}Canonical")
    return _versionless(value) if value else None


def _versionless(url: str) -> str:
    return url.split("|", 1)[0]


def _message(ask: TranslateRequest, maps: list[dict[str, Any]], matches: list[Match]) -> str:
    codes = ", ".join(f"{c.system}|{c.code}" for c in ask.codings)
    if matches:  # all unmatched: say where the meaning lives instead
        notes = "; ".join(dict.fromkeys(m.comment for m in matches if m.comment))
        return f"{codes} has no code in the target: {notes}" if notes else f"{codes}: unmatched"
    if not maps:
        direction = "to" if ask.reverse else "from"
        return f"No ConceptMap translates {direction} the system of {codes}"
    names = ", ".join(sorted({str(m.get("url") or m.get("id")) for m in maps}))
    return f"No mapping for {codes} in {names}"


def _match_parameter(match: Match) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "equivalence", "valueCode": match.equivalence}]
    if match.concept is not None:
        coding = {"system": match.concept.system}
        if match.concept.version:
            coding["version"] = match.concept.version
        coding["code"] = match.concept.code
        if match.concept.display:
            coding["display"] = match.concept.display
        parts.append({"name": "concept", "valueCoding": coding})
    parts.append({"name": "source", "valueUri": match.source})
    return {"name": "match", "part": parts}

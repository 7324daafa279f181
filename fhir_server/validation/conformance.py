"""The conformance resources in `profiles/` and `mappings/`: loaded once at start-up, validated,
indexed.

Why: the SIP rules live as data (StructureDefinitions, ValueSets, CodeSystems, ConceptMaps, …)
so that an implementer reads the same artefacts the server enforces.  Each file is checked
against R4 before use; a broken artefact stops the start-up instead of silently weakening
validation.  A ConceptMap must name only codes its local source and target CodeSystems define,
so a renamed code cannot leave a map translating to nothing.  Value sets are expanded here from
local CodeSystems (whole system or listed concepts) and from the base specification's
expansions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .definitions import CodeHierarchy, ValueSetCodes, core_hierarchy, core_valueset
from .structure import check_structure

CANONICAL_BASE = "http://sip-fhir.se/fhir"
"""The one canonical base for everything this project defines (see profiles/README.md)."""

TRIGGER_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/profile-trigger"
"""On a profile: a FHIRPath expression; a resource of the profile's type for which it is true
must conform to the profile even if it does not claim it in `meta.profile`."""

KINDS = (
    "StructureDefinition",
    "ValueSet",
    "CodeSystem",
    "SearchParameter",
    "ConceptMap",
    "Basic",
    "OperationDefinition",
    "Measure",
)
"""`Basic` only as an R4 SubscriptionTopic (see `canonical_url`). OperationDefinitions state
the operations the CapabilityStatement names; Measures the indicators `$indicators` reports
(R-IND-01)."""

TOPIC_URL_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.url"
"""R4 has no SubscriptionTopic: the Subscriptions R5 Backport IG writes one as a `Basic` with
code `http://hl7.org/fhir/fhir-types#SubscriptionTopic` and the R5 elements as cross-version
extensions, its canonical url in this one."""


class ConformanceError(Exception):
    """A file in `profiles/` or `mappings/` is not a valid, usable conformance resource."""


@dataclass(slots=True)
class Conformance:
    """Everything loaded from the profile directories, by kind and canonical URL."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    by_url: dict[str, dict[str, Any]] = field(default_factory=dict)
    hierarchies: dict[str, CodeHierarchy] = field(default_factory=dict, repr=False)  # cache

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["resourceType"] == kind]

    def valueset(self, url: str) -> ValueSetCodes | None:
        """Codes of a local or base value set (`url` may carry `|version`)."""
        url = url.split("|", 1)[0]
        local = self.by_url.get(url)
        if local is None:
            return core_valueset(url)
        if local["resourceType"] == "CodeSystem":
            return _codes(url, {url: _all_codes(local)})
        if local["resourceType"] != "ValueSet":
            return None
        codes: dict[str, set[str]] = {}
        complete = True
        for include in local.get("compose", {}).get("include", []):
            system = include.get("system")
            if "concept" in include and system:
                codes.setdefault(system, set()).update(c["code"] for c in include["concept"])
            elif system and system in self.by_url and "filter" not in include:
                codes.setdefault(system, set()).update(_all_codes(self.by_url[system]))
            elif include.get("valueSet") and not system:
                for ref in include["valueSet"]:
                    inner = self.valueset(ref)
                    if inner is None or not inner.complete:
                        complete = False
                        continue
                    for sys, code in inner.codes:
                        codes.setdefault(sys, set()).add(code)
            else:
                complete = False
        result = _codes(url, codes)
        return ValueSetCodes(url, complete and bool(codes), result.codes, result.bare_codes)

    def hierarchy(self, url: str) -> CodeHierarchy | None:
        """Is-a links of a local or core code system, for token `:above`/`:below`.

        None when the system is unknown or its concepts are not all given (content other
        than complete): then its hierarchy cannot be judged here.
        """
        url = url.split("|", 1)[0]
        local = self.by_url.get(url)
        if local is None or local["resourceType"] != "CodeSystem":
            return core_hierarchy(url)
        if local.get("content") != "complete":
            return None
        if url not in self.hierarchies:
            self.hierarchies[url] = CodeHierarchy.of(url, _parent_links(local))
        return self.hierarchies[url]


PARENT_URIS = {
    "http://hl7.org/fhir/concept-properties#parent": "parent",
    "http://hl7.org/fhir/concept-properties#child": "child",
}


def _parent_links(codesystem: dict[str, Any]) -> dict[str, set[str]]:
    """Code -> parent codes, from nesting and the `parent`/`child` concept properties.

    The same reading as `tools/core_rules.py` gives the core systems in codesystems.json.
    """
    roles = {"parent": "parent", "child": "child"}
    for prop in codesystem.get("property", []):
        if prop.get("uri") in PARENT_URIS:
            roles[prop["code"]] = PARENT_URIS[prop["uri"]]
    out: dict[str, set[str]] = {}
    stack: list[tuple[dict[str, Any], str | None]] = [
        (c, None) for c in codesystem.get("concept", [])
    ]
    while stack:
        concept, parent = stack.pop()
        code = concept["code"]
        if parent is not None:
            out.setdefault(code, set()).add(parent)
        for prop in concept.get("property", []):
            role, value = roles.get(prop.get("code")), prop.get("valueCode")
            if role == "parent" and value:
                out.setdefault(code, set()).add(value)
            elif role == "child" and value:
                out.setdefault(value, set()).add(code)
        stack.extend((c, code) for c in concept.get("concept", []))
    return out


def _all_codes(codesystem: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    stack = list(codesystem.get("concept", []))
    while stack:
        concept = stack.pop()
        out.add(concept["code"])
        stack.extend(concept.get("concept", []))
    return out


def _codes(url: str, codes: dict[str, set[str]]) -> ValueSetCodes:
    pairs = frozenset((s, c) for s, found in codes.items() for c in found)
    return ValueSetCodes(url, True, pairs, frozenset(c for _, c in pairs))


def load_conformance(directories: list[Path]) -> Conformance:
    """Read every `*.json` conformance resource under the directories (README etc. ignored)."""
    loaded = Conformance()
    concept_maps: list[tuple[dict[str, Any], Path]] = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*.json")):
            resource = _read(path)
            if resource is not None:
                _add(loaded, resource, path)
                if resource["resourceType"] == "ConceptMap":
                    concept_maps.append((resource, path))
    for concept_map, path in concept_maps:  # once every CodeSystem is loaded
        _check_codes(loaded, concept_map, path)
    return loaded


def _check_codes(loaded: Conformance, concept_map: dict[str, Any], path: Path) -> None:
    """Each source and target code must exist in its CodeSystem when that is loaded here."""
    for g, group in enumerate(concept_map.get("group", [])):
        systems = {"source": group.get("source"), "target": group.get("target")}
        known = {side: _local_codes(loaded, url) for side, url in systems.items()}
        for e, element in enumerate(group.get("element", [])):
            where = f"ConceptMap.group[{g}].element[{e}]"
            found = [("source", where, element.get("code"))]
            found += [
                ("target", f"{where}.target[{t}]", target.get("code"))
                for t, target in enumerate(element.get("target", []))
            ]
            for side, location, code in found:
                codes = known[side]
                if code is not None and codes is not None and code not in codes:
                    message = f"{location}.code '{code}' is not a code of {systems[side]}"
                    raise ConformanceError(f"{path}: {message}")


def _local_codes(loaded: Conformance, url: str | None) -> set[str] | None:
    """The codes of a complete CodeSystem loaded here; None when it is not one."""
    codesystem = loaded.by_url.get(url or "")
    if codesystem is None or codesystem["resourceType"] != "CodeSystem":
        return None
    return _all_codes(codesystem) if codesystem.get("content") == "complete" else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        resource = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConformanceError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(resource, dict) or resource.get("resourceType") not in KINDS:
        return None
    return resource


def _add(loaded: Conformance, resource: dict[str, Any], path: Path) -> None:
    errors = [i for i in check_structure(resource) if i.severity == "error"]
    if errors:
        problems = "; ".join(f"{i.expression}: {i.message}" for i in errors[:5])
        raise ConformanceError(f"{path}: not a valid R4 {resource['resourceType']}: {problems}")
    url = canonical_url(resource)
    if not isinstance(url, str) or not isinstance(resource.get("id"), str):
        raise ConformanceError(f"{path}: a conformance resource needs an id and a url")
    if url in loaded.by_url:
        raise ConformanceError(f"{path}: {url} is defined twice")
    loaded.resources.append(resource)
    loaded.by_url[url] = resource


def canonical_url(resource: dict[str, Any]) -> Any:
    """`url`; for a `Basic` SubscriptionTopic the value of its url extension."""
    if resource["resourceType"] != "Basic":
        return resource.get("url")
    found = [
        e.get("valueUri")
        for e in resource.get("extension") or ()
        if isinstance(e, dict) and e.get("url") == TOPIC_URL_EXTENSION
    ]
    return found[0] if len(found) == 1 else None

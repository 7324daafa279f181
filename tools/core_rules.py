"""Rules derived from the R4 core package: bindings, value set expansions, invariants, search.

Why: the validator and the search engine need these as small computable tables, not as the
full conformance resources.  Used by ``import_core_definitions.py`` (import time only).
"""

from __future__ import annotations

from typing import Any

Res = dict[str, Any]
Codes = dict[str, set[str]]
CHECKED_TYPES = {"code", "Coding", "CodeableConcept"}
DOMAIN_SOURCES = {
    "http://hl7.org/fhir/StructureDefinition/DomainResource",
    "http://hl7.org/fhir/StructureDefinition/Resource",
}


def bindings(structures: list[Res]) -> dict[str, list[str]]:
    """Element path -> [strength, value set url] for required and extensible bindings."""
    out: dict[str, list[str]] = {}
    for sd in structures:
        for e in sd["snapshot"]["element"]:
            b = e.get("binding")
            types = {t["code"] for t in e.get("type", [])}
            if not b or b["strength"] not in ("required", "extensible") or "valueSet" not in b:
                continue
            if types & CHECKED_TYPES:
                out[e["path"]] = [b["strength"], b["valueSet"].split("|", 1)[0]]
    return out


def invariants(structures: list[Res], profiles: dict[str, Res]) -> dict[str, list[list[str]]]:
    """Element path -> [[key, severity, human, expression]] of the constraints it defines.

    Only constraints a structure defines itself are kept (inherited copies such as ``ele-1``
    on every element, or a datatype's own rules repeated where it is used, would otherwise be
    evaluated twice); the resource root also keeps ``dom-*``.  Elements constrained to a
    datatype profile (``SimpleQuantity``) get that profile's rules at their own path.
    """
    out: dict[str, list[list[str]]] = {}
    for sd in structures:
        for e in sd["snapshot"]["element"]:
            rules = []
            for c in e.get("constraint", []):
                source = c.get("source")
                own = source is None or source == sd["url"]
                if own or ("." not in e["path"] and source in DOMAIN_SOURCES):
                    rules.append(c)
            for t in e.get("type", []):
                for url in t.get("profile", []):
                    if url in profiles:
                        root = profiles[url]["snapshot"]["element"][0]
                        rules += [c for c in root.get("constraint", []) if c.get("source") is None]
            if rules:
                out[e["path"]] = [
                    [c["key"], c["severity"], c["human"], c["expression"]]
                    for c in sorted(rules, key=lambda c: c["key"])
                ]
    return out


def _concepts(concepts: list[Res], parent: str | None, tree: dict[str, str | None]) -> None:
    for c in concepts:
        tree[c["code"]] = parent
        _concepts(c.get("concept", []), c["code"], tree)


class Expander:
    """Expands value sets from the package's own CodeSystems; 'open' if it cannot."""

    def __init__(self, valuesets: list[Res], codesystems: list[Res]) -> None:
        self.valuesets = {vs["url"]: vs for vs in valuesets}
        self.trees: dict[str, dict[str, str | None]] = {}
        for cs in codesystems:
            if cs.get("content") == "complete":
                tree: dict[str, str | None] = {}
                _concepts(cs.get("concept", []), None, tree)
                self.trees[cs["url"]] = tree
        self.done: dict[str, tuple[Codes, bool]] = {}

    def expand(self, url: str) -> tuple[Codes, bool]:
        """(codes by system, complete) for a value set url."""
        if url not in self.done:
            self.done[url] = ({}, False)  # guards against include cycles
            self.done[url] = self._expand(url)
        return self.done[url]

    def _expand(self, url: str) -> tuple[Codes, bool]:
        vs = self.valuesets.get(url)
        if vs is None or "compose" not in vs:
            return {}, False
        codes: Codes = {}
        complete = True
        for inc in vs["compose"].get("include", []):
            part, ok = self._include(inc)
            complete &= ok
            for system, found in part.items():
                codes.setdefault(system, set()).update(found)
        for exc in vs["compose"].get("exclude", []):
            system = exc.get("system")
            if system in codes and "concept" in exc:
                codes[system] -= {c["code"] for c in exc["concept"]}
        return codes, complete

    def _include(self, inc: Res) -> tuple[Codes, bool]:
        system = inc.get("system")
        if "valueSet" in inc:
            sets = [self.expand(u.split("|", 1)[0]) for u in inc["valueSet"]]
            codes = {s: set(c) for s, c in sets[0][0].items()}
            for other, _ in sets[1:]:
                codes = {s: c & other.get(s, set()) for s, c in codes.items()}
            if system is not None:
                codes = {system: codes.get(system, set())}
            return codes, all(ok for _, ok in sets)
        if system is None:
            return {}, False
        if "concept" in inc:
            return {system: {c["code"] for c in inc["concept"]}}, True
        tree = self.trees.get(system)
        if tree is None:
            return {}, False
        selected = set(tree)
        for f in inc.get("filter", []):
            if f["property"] != "concept" or f["op"] not in ("is-a", "descendent-of"):
                return {}, False
            selected &= self._descendants(tree, f["value"], f["op"] == "is-a")
        return {system: selected}, True

    @staticmethod
    def _descendants(tree: dict[str, str | None], code: str, include_self: bool) -> set[str]:
        out = set()
        for c in tree:
            node: str | None = c if include_self else tree[c]
            while node is not None:
                if node == code:
                    out.add(c)
                    break
                node = tree.get(node)
        return out


PARENT_URIS = {
    "http://hl7.org/fhir/concept-properties#parent": "parent",
    "http://hl7.org/fhir/concept-properties#child": "child",
}


def parent_links(codesystem: Res) -> dict[str, set[str]]:
    """Code -> its parent codes: from nesting and the `parent`/`child` concept properties.

    Why both: v3 code systems nest each concept under one parent and give the others (a
    polyhierarchy) as `child` properties.  Only codes with a parent appear.
    """
    roles = {"parent": "parent", "child": "child"}
    for prop in codesystem.get("property", []):
        if prop.get("uri") in PARENT_URIS:
            roles[prop["code"]] = PARENT_URIS[prop["uri"]]
    out: dict[str, set[str]] = {}
    stack: list[tuple[Res, str | None]] = [(c, None) for c in codesystem.get("concept", [])]
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


def codesystems(systems: list[Res]) -> Res:
    """Is-a links of every complete code system: {hierarchies: {url: {code: [parents]}},
    flat: [url]}; other content (fragment, example, not-present) is left out as unknown."""
    hierarchies: dict[str, dict[str, list[str]]] = {}
    flat: list[str] = []
    for cs in systems:
        if cs.get("content") != "complete":
            continue
        links = parent_links(cs)
        if links:
            hierarchies[cs["url"]] = {code: sorted(p) for code, p in links.items()}
        else:
            flat.append(cs["url"])
    return {"hierarchies": hierarchies, "flat": sorted(flat)}


def valuesets(bound: dict[str, list[str]], expander: Expander) -> dict[str, Res]:
    """Expansions of every bound value set: {url: {complete, codes: {system: [code]}}}."""
    out: dict[str, Res] = {}
    for url in sorted({vs for _, vs in bound.values()}):
        codes, complete = expander.expand(url)
        out[url] = {
            "complete": complete and bool(codes),
            "codes": {s: sorted(c) for s, c in sorted(codes.items()) if c},
        }
    return out


def search_parameters(params: list[Res]) -> list[Res]:
    """The computable part of each SearchParameter (no prose, no xpath)."""
    keys = ("url", "code", "base", "type", "expression", "target", "modifier", "comparator")
    out = []
    for sp in params:
        entry = {k: sp[k] for k in keys if k in sp}
        if "component" in sp:
            entry["component"] = [
                {"definition": c["definition"], "expression": c["expression"]}
                for c in sp["component"]
            ]
        for flag in ("multipleOr", "multipleAnd"):
            if flag in sp:
                entry[flag] = sp[flag]
        out.append(entry)
    return sorted(out, key=lambda e: e["url"])


def compartments(definitions: list[Res]) -> dict[str, dict[str, list[str]]]:
    """Compartment type -> resource type -> the parameters that link a resource to it."""
    out: dict[str, dict[str, list[str]]] = {}
    for cd in definitions:
        if cd.get("id") == "example":
            continue
        out[cd["code"]] = {
            r["code"]: sorted(r["param"]) for r in cd.get("resource", []) if r.get("param")
        }
    return out

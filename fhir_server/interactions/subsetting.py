"""`_summary` and `_elements`: fewer elements in read and search results, marked SUBSETTED.

Why: portals list many plans and need only their titles and dates; the spec's summary flags
(`isSummary` in the R4 definitions) and `_elements` let them ask for that.  A subsetted
resource carries the SUBSETTED tag so nobody mistakes it for the whole resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_server.errors import error
from fhir_server.validation.definitions import children

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
SUMMARY_MODES = ("true", "text", "data", "count", "false")
_ALWAYS = frozenset({"resourceType", "id", "meta"})


@dataclass(frozen=True, slots=True)
class Subset:
    """What the client asked for: a `_summary` mode and/or `_elements` names."""

    summary: str = "false"
    elements: frozenset[str] | None = None

    @property
    def whole(self) -> bool:
        return self.summary == "false" and self.elements is None


def parse_subset(pairs: list[tuple[str, str]]) -> Subset:
    summary, elements = "false", None
    for name, value in pairs:
        if name == "_summary":
            if value not in SUMMARY_MODES:
                raise error(400, "invalid", f"_summary must be one of {SUMMARY_MODES}", name)
            summary = value
        elif name == "_elements":
            names = frozenset(v.strip() for v in value.split(",") if v.strip())
            if not names:
                raise error(400, "invalid", "_elements needs element names", name)
            elements = (elements or frozenset()) | names
    if elements is not None and summary not in ("false", "count"):
        raise error(400, "invalid", "_summary and _elements cannot be combined", "_elements")
    return Subset(summary, elements)


def _stems(type_name: str, wanted: Any) -> frozenset[str]:
    return frozenset(e.name.removesuffix("[x]") for e in children(type_name) if wanted(e))


@cache
def _summary_stems(type_name: str) -> frozenset[str]:
    return _stems(type_name, lambda e: e.summary)


@cache
def _mandatory_stems(type_name: str) -> frozenset[str]:
    return _stems(type_name, lambda e: e.min >= 1)


@cache
def _element_names(type_name: str) -> dict[str, str]:
    """JSON property -> element name: `valueQuantity` -> `value`, `birthDate` -> itself."""
    names: dict[str, str] = {}
    for element in children(type_name):
        if element.name.endswith("[x]"):
            stem = element.name[:-3]
            names.update({stem + t[0].upper() + t[1:]: stem for t in element.types})
        else:
            names[element.name] = element.name
    return names


def subset(resource: dict[str, Any], wanted: Subset) -> dict[str, Any]:
    """The resource as `wanted` asks; unchanged (same object) when nothing is left out."""
    if wanted.whole:
        return resource
    type_name = str(resource.get("resourceType"))
    if wanted.elements is not None:
        keep = _ALWAYS | wanted.elements | _mandatory_stems(type_name)
    elif wanted.summary == "true":
        keep = _ALWAYS | _summary_stems(type_name)
    elif wanted.summary == "text":
        keep = _ALWAYS | {"text"} | _mandatory_stems(type_name)
    elif wanted.summary == "data":
        keep = None
    else:
        return resource
    names = _element_names(type_name)
    out = {
        k: v
        for k, v in resource.items()
        if (keep is None and k != "text")
        or (keep is not None and (k in keep or names.get(k.lstrip("_"), k) in keep))
    }
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out

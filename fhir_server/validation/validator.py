"""The validator a server instance uses: the base specification plus its `profiles/`.

Why: the write path and `$validate` must give the same verdict, so both call this one
object.  It is built once at start-up from the configured profile directories.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.errors import FhirError, Issue, error

from .conformance import Conformance, load_conformance
from .invariants import Scope
from .profiles import SD_BASE, Profile, compile_profiles
from .resource import status_for, validate


class Validator:
    """Validates resources against R4 and the profiles loaded from `profiles/`."""

    def __init__(self, conformance: Conformance) -> None:
        self.conformance = conformance
        self.profiles = compile_profiles(conformance)
        self.extensions = {p.url: p for p in self.profiles.values() if p.type == "Extension"}
        self.triggered: dict[str, list[Profile]] = {}
        for profile in self.profiles.values():
            if profile.trigger is not None:
                self.triggered.setdefault(profile.type, []).append(profile)

    @classmethod
    def from_directories(cls, directories: list[Path]) -> Validator:
        """The validator of these directories' files; built once per process while the files
        stay the same (an app per test would otherwise re-check every profile each time)."""
        return _validator(_fingerprint(directories))

    def validate(
        self, resource: Any, expected_type: str | None = None, profile: str | None = None
    ) -> list[Issue]:
        """All issues: R4 first; profiles only for a well-formed resource."""
        extensions: list[tuple[str, dict[str, Any]]] = []
        issues = validate(resource, expected_type, extensions)
        if status_for(issues) == 400 or any(i.expression == ("resourceType",) for i in issues):
            return issues  # not a well-formed resource: profiles would only add noise
        rtype = str(resource["resourceType"])
        root = (rtype, resource)
        scope = Scope(resource, resource)

        def report(severity: str, code: str, expression: str, message: str) -> None:
            issues.append(Issue(severity, code, message, (expression,)))  # type: ignore[arg-type]

        for selected in self._profiles_for(resource, rtype, profile, report):
            selected.check(root, scope, report)
        for loc, extension in extensions:
            definition = self.extensions.get(extension.get("url", ""))
            if definition is not None:
                definition.check((loc, extension), scope, report)
        return issues

    def _profiles_for(
        self, resource: dict[str, Any], rtype: str, requested: str | None, report: Any
    ) -> list[Profile]:
        meta = resource.get("meta")
        claimed = meta.get("profile", []) if isinstance(meta, dict) else []
        urls = [*claimed, requested] if requested else list(claimed)
        chosen: list[Profile] = []
        for i, url in enumerate(urls):
            url = str(url).split("|", 1)[0]
            profile = self.profiles.get(url)
            where = f"{rtype}.meta.profile[{i}]" if i < len(claimed) else "profile"
            if profile is None:
                if url != SD_BASE + rtype:  # a claim is a warning; a $validate request an error
                    severity = "warning" if i < len(claimed) else "error"
                    report(severity, "not-found", where, f"Profile {url} is not known here")
            elif profile.type != rtype:
                report("error", "processing", where, f"Profile {url} is for {profile.type}")
            elif profile not in chosen:
                chosen.append(profile)
        for profile in self.triggered.get(rtype, []):
            if profile not in chosen and profile.triggered_by(resource):
                chosen.append(profile)
        return chosen

    def check(self, resource: dict[str, Any], expected_type: str | None = None) -> str:
        """Raise a FhirError unless `resource` may be stored; return its type."""
        issues = self.validate(resource, expected_type)
        status = status_for(issues)
        if status is not None:
            errors = [i for i in issues if i.severity in ("error", "fatal")]
            if len(errors) == 1 and errors[0].expression == ("resourceType",):
                raise error(400, errors[0].code, errors[0].diagnostics, "resourceType")
            raise FhirError(status, errors)
        return str(resource["resourceType"])


Fingerprint = tuple[tuple[str, ...], tuple[tuple[str, int, int], ...]]


def _fingerprint(directories: list[Path]) -> Fingerprint:
    files = sorted(
        (str(path), stat.st_mtime_ns, stat.st_size)
        for directory in directories
        for path in Path(directory).rglob("*.json")
        for stat in (path.stat(),)
    )
    return tuple(str(d) for d in directories), tuple(files)


@lru_cache(maxsize=8)
def _validator(fingerprint: Fingerprint) -> Validator:
    return Validator(load_conformance([Path(d) for d in fingerprint[0]]))

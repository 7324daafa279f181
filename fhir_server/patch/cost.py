"""What a patch may build: its result's size and nesting, measured without recursion.

Why: a JSON Patch `copy` duplicates part of the resource, so thirty operations that copy a
value into itself double the document thirty times (a billion nodes from a 2 KB body), and
moves can nest a resource deeper than JSON serialisers go. A patch's result may be no larger
than a body the server accepts (`Settings.max_body_bytes`), and no deeper than
`fhirjson.MAX_DEPTH`. Each added or copied value is measured before it is cloned; as the
document never outgrows the limit, no measurement (nor the refusal) costs more than it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server import fhirjson
from fhir_server.errors import FhirError, error

DEFAULT_LIMIT = 10 * 1024 * 1024
"""`Settings.max_body_bytes`' default, for callers without settings (the HTTP paths pass theirs)."""


class TooCostly(Exception):
    """An operation whose result would be too large or nest too deeply."""


def size_of(value: Any) -> int:
    """The length of `value`'s JSON: serialised (orjson is fast), so it is exact.

    Only ever called on a part of a document kept within the limit, or on a part of the
    body, so it costs no more than the limit allows. TooCostly when even orjson cannot go
    as deep (255 levels), which also keeps `clone()` from recursing without end."""
    try:
        return len(fhirjson.dumps(value))
    except TypeError as exc:  # orjson.JSONEncodeError
        raise TooCostly(f"the value cannot be measured ({exc})") from None


@dataclass(slots=True)
class Budget:
    """An upper bound on the result as operations apply: its start plus all they add.

    Removals give nothing back, so the work a patch can cause is bounded too (a copy, then
    its removal, repeated, would otherwise clone the same megabytes without end)."""

    limit: int
    spent: int = 0

    @classmethod
    def of(cls, document: Any, limit: int) -> Budget:
        return cls(limit, size_of(document))

    def charge(self, value: Any) -> None:
        """Count a value about to be added or copied; TooCostly if the result cannot take it."""
        size = size_of(value)
        if self.spent + size > self.limit:
            raise TooCostly(f"the result would exceed {self.limit} bytes")
        self.spent += size


def check_result(result: Any, limit: int) -> None:
    """The last word on a patched resource: 422 `too-costly` when too large or too deep
    (moves nest without adding, so no single operation sees it)."""
    if fhirjson.too_deep(result):
        raise _refused(f"its result nests deeper than {fhirjson.MAX_DEPTH} levels")
    if size_of(result) > limit:
        raise _refused(f"its result would exceed {limit} bytes")


def _refused(reason: str) -> FhirError:
    return error(422, "too-costly", f"The patch is refused: {reason}")

"""A search's time on MongoDB: one deadline shared by every query the search sends.

Why: a search is several queries (each chain's lookup, the count, the page); bounding each
alone would not bound their sum.  Each gets what is left as `maxTimeMS`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pymongo.errors import ExecutionTimeout

from fhir_server.errors import FhirError, error

SEARCH_TIMEOUT = 10.0


class Budget:
    """What is left of one search's time; each query gets the rest as `maxTimeMS`."""

    def __init__(self, seconds: float, what: str = "search") -> None:
        self.seconds = seconds
        self.what = what
        self._end = time.monotonic() + seconds

    def ms(self) -> int:
        left = self._end - time.monotonic()
        if left <= 0:
            raise self.exceeded()
        return max(1, int(left * 1000))

    def exceeded(self) -> FhirError:
        message = f"The {self.what} took longer than {self.seconds:g} s; narrow it"
        return error(400, "too-costly", message)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """The server's ExecutionTimeout (maxTimeMS spent) as the same 400."""
        try:
            yield
        except ExecutionTimeout:
            raise self.exceeded() from None

"""What each process of `fhir-server serve --workers N` runs: uvicorn spawns the workers and
imports the app factory and the protocol class by name, so they live here, built from the
environment the parent set (`--db` becomes FHIR_SQLITE_PATH)."""

from __future__ import annotations

import ctypes
import signal
import sys

from fastapi import FastAPI

from fhir_server.api.app import create_app
from fhir_server.api.protocol import bounded_protocol
from fhir_server.config import Settings

settings = Settings()
protocol = bounded_protocol(settings)


def app() -> FastAPI:
    """The app of one worker: the parent did the start-up work (`startup.prepare`)."""
    _stop_with_parent()
    return create_app(settings, prepared=True)


def _stop_with_parent() -> None:
    """A worker whose parent dies (SIGKILL included) gets SIGTERM and shuts down: no
    orphan keeps serving the port and writing to the database."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

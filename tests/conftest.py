"""Test harness: every conformance test runs once per storage engine.

SQLite always; MongoDB through the mongomock double (`tests/mongo_double.py`: mongomock-motor
with PyMongo's async surface), or against a real server with PyMongo's `AsyncMongoClient` when
FHIR_TEST_MONGODB_URI is set. The run ends with a line naming the engines that ran.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from fhir_server.api.app import create_app
from fhir_server.config import MAPPINGS_DIR, PROFILES_DIR, Settings
from fhir_server.sip.clock import STOCKHOLM, Clock, FixedClock
from fhir_server.storage.port import Storage
from tests.engines import ENGINES_RAN, make_storage

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "mongo"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def storage(engine: str, tmp_path: Path) -> AsyncIterator[Storage]:
    store = make_storage(engine, tmp_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


TEST_PROFILES = Path(__file__).parent / "profiles"


@pytest.fixture
def store(engine: str, tmp_path: Path) -> Storage:
    """A storage of `engine`, not yet opened: the app's lifespan opens it."""
    return make_storage(engine, tmp_path)


@pytest.fixture
def clock() -> FixedClock:
    """Process time for the SIP tests: before the example case's first act (2 Nov 2026)."""
    return FixedClock(datetime(2026, 11, 1, 9, 0, tzinfo=STOCKHOLM))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default settings plus `tests/profiles`: test profiles that exercise every feature."""
    dirs = [PROFILES_DIR, MAPPINGS_DIR, TEST_PROFILES]
    return Settings(sqlite_path=tmp_path / "fhir.sqlite3", profile_dirs=dirs)


@pytest.fixture
async def client(
    engine: str, tmp_path: Path, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the ASGI app (lifespan run), one per engine."""
    async with app_client(settings, make_storage(engine, tmp_path)) as http:
        yield http


@contextlib.asynccontextmanager
async def app_client(
    settings: Settings, storage: Storage, clock: Clock | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on a new ASGI app over `storage`, its lifespan run around it."""
    app = create_app(settings, storage, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver/fhir",
            headers={"Accept": "application/fhir+json"},
        ) as http:
            yield http


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the test process dies, so no server outlives a run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LiveServer:
    """A real `fhir-server serve` process on loopback (SQLite), for client and crash tests."""

    def __init__(
        self,
        db: Path,
        env: dict[str, str] | None = None,
        *,
        workers: int = 1,
        log: Path | None = None,
    ) -> None:
        self.db = db
        self.env = env or {}  # extra environment for the server, e.g. tiny timeouts
        self.workers = workers
        self.log = log  # where stderr goes, at log level info; None: inherited, warnings only
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ENGINES_RAN.add("sqlite (live uvicorn)")
        command = [
            sys.executable,
            "-m",
            "fhir_server.cli",
            "serve",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            "--log-level",
            "info" if self.log else "warning",
            "--workers",
            str(self.workers),
        ]
        env = {**os.environ, **self.env}
        stderr = self.log.open("ab") if self.log else None
        try:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stderr=stderr, preexec_fn=_die_with_parent
            )
        finally:
            if stderr is not None:
                stderr.close()  # the server has its own copy
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base_url}/metadata", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start in 30 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flush — what a power cut looks like to the process."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path / "live.sqlite3")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    engines = ", ".join(sorted(ENGINES_RAN)) or "none"
    terminalreporter.write_line(f"storage engines exercised: {engines}")

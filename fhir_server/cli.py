"""`fhir-server serve`: run the server with uvicorn, one process per core by default;
`fhir-server dispatch`: only the subscription dispatcher (for a deployment that serves with
FHIR_DISPATCH=false); `fhir-server import`: bulk import of NDJSON and Bundle files
(`fhir_server/bulk/`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fhir-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the FHIR API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--db", help="SQLite file (default: $FHIR_SQLITE_PATH or data/fhir.sqlite3)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--workers",
        type=int,
        default=cpu_count(),
        help="server processes on the one port and database (default: the CPUs, here %(default)s)",
    )
    dispatch = commands.add_parser("dispatch", help="run only the subscription dispatcher")
    dispatch.add_argument("--db", help="SQLite file (as for serve)")
    dispatch.add_argument("--log-level", default="info")
    from fhir_server.bulk import command as bulk_import

    bulk_import.add_arguments(commands.add_parser("import", help="load NDJSON and Bundle files"))
    args = parser.parse_args(argv)
    if args.db:
        os.environ["FHIR_SQLITE_PATH"] = args.db
    if args.command == "import":
        raise SystemExit(bulk_import.run(args))
    if args.command == "dispatch":
        logging.basicConfig(level=args.log_level.upper())
        asyncio.run(run_dispatcher())
        return

    if args.workers < 1:
        parser.error("--workers must be at least 1")
    serve_http(args.host, args.port, args.log_level, args.workers)


def cpu_count() -> int:
    """The CPUs this process may run on (a container's or taskset's limit included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def serve_http(host: str, port: int, log_level: str, workers: int) -> None:
    from fhir_server.api.protocol import bounded_protocol
    from fhir_server.config import Settings

    settings = Settings()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "timeout_keep_alive": settings.keep_alive_timeout,  # a float works
        # uvicorn answers 503 when the connections or the requests in flight (abandoned ones
        # still running included) reach this; the protocol closes excess connections first.
        "limit_concurrency": settings.max_connections + 1,
    }
    if workers == 1:
        from fhir_server.api.app import create_app

        # head size, field count and read time; see protocol.py
        uvicorn.run(create_app(settings), http=bounded_protocol(settings), **options)
        return
    logging.basicConfig(level=log_level.upper())
    asyncio.run(prepare_once(settings))  # the workers skip it: see api/startup.py
    uvicorn.run(
        "fhir_server.api.worker:app",
        factory=True,
        workers=workers,
        http="fhir_server.api.worker:protocol",
        **options,
    )


async def prepare_once(settings: Any) -> None:
    from fhir_server.api.startup import prepare
    from fhir_server.search.registry import use_conformance
    from fhir_server.storage.factory import create_storage
    from fhir_server.validation.conformance import load_conformance

    conformance = load_conformance(settings.profile_dirs)
    use_conformance(conformance)  # the profiles' SearchParameters index what is published
    storage = create_storage(settings)
    await storage.open()
    try:
        await prepare(storage, conformance)
    finally:
        await storage.close()


async def run_dispatcher() -> None:
    """The dispatcher alone until SIGINT/SIGTERM: it takes the lease when no other process
    holds it, so it can run beside servers that dispatch too."""
    from fhir_server.config import Settings
    from fhir_server.search.registry import use_conformance
    from fhir_server.storage.factory import create_storage
    from fhir_server.subscriptions.dispatcher import Dispatcher
    from fhir_server.subscriptions.events import topics_of
    from fhir_server.validation.conformance import load_conformance

    settings = Settings()
    storage = create_storage(settings)
    conformance = load_conformance(settings.profile_dirs)  # it validates nothing: no profiles
    use_conformance(conformance)  # filters on the profiles' SearchParameters and value sets
    topics = topics_of(conformance)
    await storage.open()
    task = asyncio.create_task(Dispatcher(storage, settings, topics=topics).run())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await storage.close()


if __name__ == "__main__":
    main()

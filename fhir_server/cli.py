"""`fhir-server serve`: run the server with uvicorn."""

from __future__ import annotations

import argparse
import os

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fhir-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the FHIR API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--db", help="SQLite file (default: $FHIR_SQLITE_PATH or data/fhir.sqlite3)")
    serve.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.db:
        os.environ["FHIR_SQLITE_PATH"] = args.db

    from fhir_server.api.app import create_app
    from fhir_server.api.protocol import bounded_protocol
    from fhir_server.config import Settings

    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        http=bounded_protocol(settings),  # head size, field count and read time; see protocol.py
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]  # a float works
        # uvicorn answers 503 when the connections or the requests in flight (abandoned ones
        # still running included) reach this; the protocol closes excess connections first.
        limit_concurrency=settings.max_connections + 1,
    )


if __name__ == "__main__":
    main()

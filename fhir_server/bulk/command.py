"""The `fhir-server import` command line: its options, and the run with its exit code."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("paths", nargs="+", type=Path, metavar="FILE_OR_DIR",
        help=".ndjson, .ndjson.gz or .json (a resource or a Bundle) files, or directories "
        "holding them (read recursively)")  # fmt: skip
    add("--db", help="SQLite file (as for serve)")
    add("--mongodb-uri", help="store in MongoDB instead (or $MONGODB_URI)")
    add("--report", type=Path, default=Path("import-report.ndjson"),
        help="NDJSON of the refused items (default: ./import-report.ndjson)")  # fmt: skip
    add("--workers", type=int, default=min(2, os.cpu_count() or 1),
        help="processes that parse and validate (0: none besides this one)")  # fmt: skip
    add("--batch-size", type=int, default=1000,
        help="resources per unit of work (and per checkpoint)")  # fmt: skip
    add("--no-progress", action="store_true", help="no progress output")
    add("--verbose", action="store_true", help="a line on stderr for each committed batch")


def run(args: argparse.Namespace) -> int:
    """0 when everything loaded, 3 when some items were refused (see the report), 1 when
    the import could not run."""
    if args.mongodb_uri:
        os.environ["MONGODB_URI"] = args.mongodb_uri
    from fhir_server.config import Settings

    try:
        return asyncio.run(_run(args, Settings()))
    except FileNotFoundError as exc:
        print(f"fhir-server import: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, settings: object) -> int:
    from fhir_server.bulk.importer import run_import
    from fhir_server.config import Settings
    from fhir_server.storage.factory import create_storage

    assert isinstance(settings, Settings)
    storage = create_storage(settings)
    await storage.open()
    try:
        summary = await run_import(
            args.paths,
            storage,
            settings,
            report=args.report,
            workers=args.workers,
            batch_size=max(1, args.batch_size),
            progress=not args.no_progress,
            verbose=args.verbose,
        )
    finally:
        await storage.close()
    for line in summary.lines(args.report):
        print(line, file=sys.stderr)
    return summary.exit_code

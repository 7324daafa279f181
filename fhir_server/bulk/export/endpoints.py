"""`$export` over HTTP: kick-off (system, Patient, Group), status, cancellation, files.

The status URL is HAPI FHIR's form, `[base]/$export-poll-status?_jobId=<id>`, and files are
`[base]/$export-file/<id>/<Type>-<n>.ndjson`; both are absolute, built from the request as
every Location is (`api/base_url.py`). The kick-off routes are FHIR operations (in
`api/routes.ROUTES`, hence in the CapabilityStatement); status and files are the async
pattern's own URLs (`ENDPOINTS`, mounted by the app beside `/metadata`).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from fhir_server.api.base_url import base_url
from fhir_server.api.body import read_resource
from fhir_server.api.negotiation import ACCEPT_ANY, JSON_TYPES, check_response_format
from fhir_server.api.responses import outcome_response, prefer
from fhir_server.bulk.export.files import read_chunks
from fhir_server.bulk.export.jobs import ERRORS, FILE_NAME, JOB_ID, RUNNING, Job, new_job_id
from fhir_server.bulk.export.params import (
    PATIENT_REFERENCE,
    Level,
    parse_request,
    read_params,
)
from fhir_server.bulk.export.runner import ALL, ExportRunner
from fhir_server.errors import Issue, clipped, error
from fhir_server.interactions.crud import check_id
from fhir_server.interactions.versions import INSTANT_FORMAT
from fhir_server.storage.port import Storage

STATUS_PATH = "/$export-poll-status"
FILE_PATH = "/$export-file"
NDJSON = "application/fhir+ndjson"
# FHIR JSON too: clients send their usual Accept on every request, and each line is FHIR JSON.
NDJSON_ACCEPTED = frozenset({NDJSON, "application/ndjson", "ndjson", *JSON_TYPES, *ACCEPT_ANY})
RETRY_AFTER = "2"  # seconds; clients back off further as the IG advises


def _runner(request: Request) -> ExportRunner:
    return request.app.state.exports


async def export_system(request: Request) -> Response:
    """`[base]/$export`: every resource type."""
    return await _kick_off(request, "system", None)


async def export_patient(request: Request) -> Response:
    """`[base]/Patient/$export`: the Patient compartments of every (or each `patient`)."""
    return await _kick_off(request, "patient", None)


async def export_group(request: Request) -> Response:
    """`[base]/Group/[id]/$export`: the Patient compartments of the Group's members."""
    return await _kick_off(request, "group", request.path_params["id"])


async def _kick_off(request: Request, level: Level, group: str | None) -> Response:
    check_response_format(request)
    state = request.app.state
    preferences = prefer(request.headers)
    if "respond-async" not in preferences:
        message = "$export runs asynchronously: send the header Prefer: respond-async"
        raise error(400, "invalid", message, "Prefer")
    body = None
    if request.method == "POST":
        body = await read_resource(request, state.settings.max_body_bytes)
    query = parse_qsl(request.url.query, keep_blank_values=True)
    lenient = preferences.get("handling") == "lenient"
    ask = parse_request(level, read_params(query, body), lenient=lenient)
    patients = None if ask.patients is None else list(ask.patients)
    if group is not None:
        check_id(group)
        members = await group_members(state.storage, group)
        patients = members if patients is None else sorted(set(members) & set(patients))
    base = base_url(request.scope, state.settings)
    path = {"system": "", "patient": "/Patient", "group": f"/Group/{group}"}[level]
    job = Job(
        id=new_job_id(),
        request=f"{base}{path}/$export" + (f"?{request.url.query}" if request.url.query else ""),
        level=level,
        types=list(ask.types),
        # Wall-clock UTC, as lastUpdated is: the bound the job's searches keep to.
        transaction_time=datetime.now(UTC).strftime(INSTANT_FORMAT),
        created=state.clock.now().isoformat(),
        since=ask.since,
        type_filters={type: list(queries) for type, queries in ask.type_filters.items()},
        output_format=ask.output_format,
        patients=patients,
    )
    runner = _runner(request)
    await asyncio.to_thread(runner.store.create, job)
    runner.notify()
    status = f"{base}{STATUS_PATH}?_jobId={job.id}"
    accepted = Issue("information", "informational", f"Export job {job.id} accepted: {status}")
    return outcome_response([accepted, *ask.warnings], 202, {"Content-Location": status})


async def group_members(storage: Storage, id: str) -> list[str]:
    """The ids of the Group's active Patient members; 404 when there is no such Group."""
    version = await storage.read("Group", id, ALL)
    if version is None or version.json is None:
        raise error(404, "not-found", f"Group/{id} is not known")
    group = orjson.loads(version.json)
    ids = set()
    for member in group.get("member", []):
        reference = (member.get("entity") or {}).get("reference")
        if member.get("inactive") is True or not isinstance(reference, str):
            continue
        match = PATIENT_REFERENCE.fullmatch(reference)
        if match is not None:
            ids.add(match["id"])
    return sorted(ids)


async def poll_status(request: Request) -> Response:
    """202 with X-Progress while the job runs; 200 and the manifest when it is complete; a
    failed job 500 with its reason (not a transient code: polling again will not help)."""
    job = await _job(request)
    if job.status in RUNNING:
        progress = _progress(job)
        headers = {"X-Progress": progress, "Retry-After": RETRY_AFTER}
        return outcome_response([Issue("information", "informational", progress)], 202, headers)
    if job.status == "failed":
        message = f"Export job {job.id} failed: {job.failure}"
        return outcome_response([Issue("error", "exception", message)], 500)
    base = base_url(request.scope, request.app.state.settings)
    manifest = _manifest(job, base)
    headers = None
    if job.expires:
        expires = datetime.fromisoformat(job.expires).astimezone(UTC)
        headers = {"Expires": format_datetime(expires, usegmt=True)}
    return Response(orjson.dumps(manifest), 200, headers, "application/json")


async def cancel(request: Request) -> Response:
    """DELETE: a running job stops (its runner sees the marker at its next page), a
    finished one's files go at once; afterwards the status and the files are 404."""
    job = await _job(request)
    runner = _runner(request)
    await asyncio.to_thread(runner.store.cancel, job.id)
    if job.status not in RUNNING:
        await asyncio.to_thread(runner.store.remove, job.id)
    runner.notify()
    verb = "cancelled" if job.status in RUNNING else "deleted"
    return outcome_response([Issue("information", "informational", f"Export job {verb}")], 202)


async def download(request: Request) -> Response:
    """One output (or error) file, streamed from disk as NDJSON."""
    _check_accept(request.headers.get("accept"))
    id, name = request.path_params["job"], request.path_params["name"]
    if not JOB_ID.fullmatch(id) or not FILE_NAME.fullmatch(name):
        raise _not_found()
    job = await _load(request, id)
    listed = {f.file for f in job.output} | ({ERRORS} if job.errors else set())
    if job.status != "completed" or name not in listed:
        raise _not_found()
    path = _runner(request).store.file(id, name)
    try:
        handle = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        raise _not_found() from None
    size = os.fstat(handle.fileno()).st_size
    headers = {"Content-Length": str(size)}
    return StreamingResponse(read_chunks(handle), 200, headers, media_type=NDJSON)


async def _job(request: Request) -> Job:
    id = request.query_params.get("_jobId")
    if id is None:
        raise error(400, "invalid", "The status URL names its job in _jobId", "_jobId")
    if not JOB_ID.fullmatch(id):
        raise _not_found()
    return await _load(request, id)


async def _load(request: Request, id: str) -> Job:
    """The job, unless it is unknown, cancelled or expired (all 404, as the IG's files)."""
    store = _runner(request).store
    job = await asyncio.to_thread(store.load, id)
    if job is None or await asyncio.to_thread(store.cancelled, id):
        raise _not_found()
    if job.expired(request.app.state.clock.now()):
        raise _not_found()
    return job


def _not_found():
    return error(404, "not-found", "No such export job (unknown, cancelled, or expired)")


def _progress(job: Job) -> str:
    """What X-Progress says: the types done, the type in progress, resources written."""
    if job.status == "accepted":
        return "accepted: waiting to start"
    written = job.written + job.current_count
    text = f"{len(job.done)} of {len(job.types)} types done, {written} resources written"
    return text + (f", exporting {job.current}" if job.current else "")


def _manifest(job: Job, base: str) -> dict[str, Any]:
    url = f"{base}{FILE_PATH}/{job.id}"
    output = [{"type": f.type, "url": f"{url}/{f.file}", "count": f.count} for f in job.output]
    errors = []
    if job.errors:
        errors = [{"type": "OperationOutcome", "url": f"{url}/{ERRORS}", "count": len(job.errors)}]
    return {
        "transactionTime": job.transaction_time,
        "request": job.request,
        "requiresAccessToken": False,  # no tokens yet; the security work sets this
        "output": output,
        "error": errors,
    }


def _check_accept(header: str | None) -> None:
    if not header or not header.strip():
        return
    for media_range in header.split(","):
        media = media_range.split(";")[0].strip().lower()
        if media in NDJSON_ACCEPTED:
            return
    message = f"Export files are {NDJSON}; Accept '{clipped(header)}' is not"
    raise error(406, "not-supported", message)


ENDPOINTS: tuple[tuple[str, Any, list[str]], ...] = (
    (STATUS_PATH, poll_status, ["GET"]),
    (STATUS_PATH, cancel, ["DELETE"]),
    (FILE_PATH + "/{job}/{name}", download, ["GET"]),
)

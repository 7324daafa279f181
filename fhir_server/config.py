"""Settings, read from environment variables (prefix `FHIR_`, plus `MONGODB_URI`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"
"""ConceptMaps from the Lifecare SP and SAMSA vocabulary, and their source CodeSystems."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FHIR_", extra="ignore")

    sqlite_path: Path = Field(
        default=Path("data/fhir.sqlite3"),
        description="SQLite database file (the embedded default engine).",
    )
    mongodb_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MONGODB_URI", "FHIR_MONGODB_URI"),
        description="When set, the server stores data in MongoDB instead of SQLite.",
    )
    mongodb_database: str = Field(
        default="fhir",
        validation_alias=AliasChoices("MONGODB_DATABASE", "FHIR_MONGODB_DATABASE"),
    )
    base_path: str = Field(default="/fhir", description="Path the FHIR API is served under.")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, description="Larger bodies get 413.")
    profile_dirs: list[Path] = Field(
        default=[PROFILES_DIR, MAPPINGS_DIR],
        description="Directories of conformance resources (profiles, value sets, code systems, "
        "concept maps) loaded and enforced at start-up; a JSON list in FHIR_PROFILE_DIRS.",
    )
    max_bundle_entries: int = Field(
        default=10_000, description="Batch and transaction Bundles with more entries get 413."
    )
    max_bundle_bytes: int = Field(
        default=32 * 1024 * 1024,
        description="Batch and transaction Bundles larger than this get 413 (10,000 entries "
        "of ~2 KB resources need ~20 MB).",
    )
    max_batch_searches: int = Field(
        default=100,
        description="Batch and transaction Bundles with more search entries (GET [type]?…) "
        "than this get 413: each search may cost as much as a request of its own.",
    )
    payment_agreement: str = Field(
        default="norrbotten",
        description="The regional agreement $payment-liability counts by (R-DIS-09): an id in "
        "fhir_server/sip/payment-agreements.json.",
    )
    acknowledgement_cutoff: str = Field(
        default="12:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Receivers acknowledge a notice by the next this time of day, Stockholm "
        "time (R-DIS-05): the deadline of the `kvittera-meddelande` Task.",
    )
    obligation_sweep_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between sweeps that mark open obligation Tasks past their "
        "deadline `overdue` (also run at start-up).",
    )
    subscription_allowed_hosts: list[str] = Field(
        default=[],
        description="Hosts a rest-hook endpoint may name over plain http (tests: 127.0.0.1); "
        "every other endpoint must be https. A JSON list in FHIR_SUBSCRIPTION_ALLOWED_HOSTS.",
    )
    subscription_poll_interval: float = Field(
        default=0.2, gt=0, description="Seconds between the dispatcher's looks at the outbox "
        "(a write in the same process wakes it at once).",
    )  # fmt: skip
    subscription_retry_base: float = Field(
        default=1.0, gt=0, description="Seconds before the first retry of a failed delivery; "
        "each further failure doubles it up to subscription_retry_cap.",
    )  # fmt: skip
    subscription_retry_cap: float = Field(
        default=300.0, gt=0, description="The longest wait between retries (never given up).",
    )  # fmt: skip
    subscription_error_after: int = Field(
        default=3, gt=0, description="Consecutive failed deliveries after which the "
        "Subscription's status is `error` (back to `active` on the next success).",
    )  # fmt: skip
    subscription_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a rest-hook POST may take, unless the "
        "Subscription's backport-timeout says less.",
    )  # fmt: skip
    subscription_retention: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="Seconds delivered notifications stay "
        "available to Subscription/$events.",
    )  # fmt: skip
    subscription_lease: float = Field(
        default=10.0, gt=0, description="Seconds the dispatcher's lease lasts; one process "
        "per database dispatches and another takes over when it stops renewing.",
    )  # fmt: skip
    dispatch: bool = Field(
        default=True, description="Whether `serve` also runs the subscription dispatcher "
        "(else run `fhir-server dispatch`).",
    )  # fmt: skip
    export_dir: Path = Field(
        default=Path("data/exports"),
        description="Directory of $export jobs: each job's state (job.json) and its NDJSON "
        "files; processes that share a database share it too.",
    )
    export_retention: float = Field(
        default=2 * 3600.0, gt=0, description="Seconds a finished $export job's files stay "
        "available (from its completion, by the server's clock); then they are swept away.",
    )  # fmt: skip
    export_file_size: int = Field(
        default=100_000, ge=1, description="Resources per $export NDJSON file; a type with "
        "more is split into several files.",
    )  # fmt: skip
    export_batch_size: int = Field(
        default=1000, ge=1, le=10_000, description="Resources an $export job reads per "
        "storage search (one page) before it writes them out.",
    )  # fmt: skip
    export_page_delay: float = Field(
        default=0.0, ge=0, description="Seconds an $export job pauses between pages, so a "
        "large export leaves room for interactive traffic (tests use it to be mid-way).",
    )  # fmt: skip
    export_lease: float = Field(
        default=10.0, gt=0, description="Seconds an $export job's lease lasts; the process "
        "running it renews it, and another takes the job over when it stops renewing.",
    )  # fmt: skip
    export_poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds between a process's looks for $export jobs "
        "to resume (left by a stopped process) and for expired ones to sweep.",
    )  # fmt: skip
    default_page_size: int = 20
    max_page_size: int = 1000
    search_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds one search (or history listing) may run; past it the query is "
        "stopped and the request gets 400 too-costly.",
    )
    transaction_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds one SQLite unit of work (a write, a transaction Bundle) may hold "
        "the write lock; past it, it rolls back with 400 too-costly and stores nothing.",
    )
    sqlite_readers: int = Field(
        default=4,
        ge=1,
        description="SQLite connections for searches and history; reads have their own, so "
        "this many slow searches never delay a read.",
    )
    base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description="Base of every absolute URL written (Location, fullUrl, Bundle links), "
        "e.g. https://fhir.region.se/fhir. Unset: an allowed Host header, else the server's "
        "own address.",
    )
    allowed_hosts: list[str] = Field(
        default=["localhost", "127.0.0.1", "[::1]"],
        description="Host header names echoed into URLs when FHIR_BASE_URL is unset (a JSON "
        "list); the address the server listens on is always allowed.",
    )
    max_headers: int = Field(default=100, description="Requests with more header fields get 431.")
    max_header_bytes: int = Field(
        default=64 * 1024, description="A request line plus headers larger than this gets 431."
    )
    header_timeout: float = Field(
        default=10.0,
        description="Seconds from connecting, or from a request's first byte, to the end of "
        "its headers; a slower head gets 408 and the connection is closed.",
    )
    body_timeout: float = Field(
        default=60.0, description="Seconds for a whole request body to arrive; then 408."
    )
    keep_alive_timeout: float = Field(
        default=5.0, description="An idle keep-alive connection is closed after this many seconds."
    )
    max_connections: int = Field(
        default=1000,
        description="Open connections beyond this are answered 503 and closed; uvicorn's "
        "limit_concurrency (503 when connections or requests in flight reach it).",
    )

    @property
    def engine(self) -> str:
        return "mongo" if self.mongodb_uri else "sqlite"

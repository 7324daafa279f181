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
    default_page_size: int = 20
    max_page_size: int = 1000

    @property
    def engine(self) -> str:
        return "mongo" if self.mongodb_uri else "sqlite"

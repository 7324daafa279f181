"""FHIR Bulk Data Access IG v2 `$export`: kick-off, status, files, cancellation."""

"""Bulk import (`fhir-server import`): NDJSON and Bundle files into the database, validated
and indexed as the server's writes are; see `importer` for how and `store` for what it
does not do (topic events, process hooks) and why."""

"""Bulk data: `fhir-server import` and the `$export` operation."""

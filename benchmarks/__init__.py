"""Benchmarks for sip-fhir (run as scripts, e.g. `python benchmarks/crud.py`)."""

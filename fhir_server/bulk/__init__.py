"""Bulk data: import and $export."""

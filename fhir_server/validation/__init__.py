"""Validation against the official FHIR R4 definitions (see ``fhir_server/definitions``)."""

from .definitions import resource_types
from .r4b_models import r4b_model
from .structure import StructureIssue, check_structure

__all__ = ["StructureIssue", "check_structure", "r4b_model", "resource_types"]

"""sip-fhir: an open FHIR R4 server for Swedish coordinated care planning (SIP)."""

__version__ = "0.1.0"

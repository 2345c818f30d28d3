"""Portal Pulse: measures patient-portal adoption from streamed portal and EHR events."""

__version__ = "0.1.0"

"""ioa: distil a teacher LLM into a small student with the IOA method (Identifier, Organizer, Adapter)."""

__version__ = "0.1.0"

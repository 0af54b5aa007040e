"""Check families, one module each. Imported lazily by ``doctor.registry`` (installed as
``doctor.checks``)."""

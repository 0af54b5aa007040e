"""Repairs, one module each (installed as ``doctor.fixers``). A fixer writes a NEW artifact
atomically and never touches its input; see ``doctor.fixing`` for the interface."""

"""Compatibility name for ``doctor.io.pickle.containers`` (``doctor.runs.args`` imports
``walk_file`` from here); new code uses ``doctor.io.pickle_scan.inert_object``."""

from doctor.io.pickle.containers import walk_file

__all__ = ["walk_file"]

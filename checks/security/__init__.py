"""SEC: untrusted files. Every pickle in an artifact is scanned statically (never unpickled) with
an allow-list (``doctor.io.pickle_scan``); every .safetensors header is validated by the
reference rules (``doctor.io.safetensors_header``; the SEC1xx checks live in
``doctor.checks.security.rules.safetensors``). SEC0xx: pickles; SEC1xx: safetensors structure."""

from __future__ import annotations

# The family's one registration point: importing a module registers its fixtures and checks.
from doctor.checks.security.rules import loading, pickles, safetensors  # noqa: F401

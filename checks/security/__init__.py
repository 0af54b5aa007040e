"""SEC: untrusted files. Every pickle in an artifact, whatever the layout (weights, optimizer /
scheduler / RNG states, DeepSpeed ``global_stepN/``, mmengine / XTuner ``iter_N.pth`` files and
folders), is scanned statically (never unpickled) with an allow-list (``doctor.io.pickle_scan``;
vetted extras per file role, see ``docs/discovery.md``); every .safetensors header is validated by the
reference rules (``doctor.io.safetensors_header``; the SEC1xx checks live in
``doctor.checks.security.rules.safetensors``). SEC0xx: pickles; SEC1xx: safetensors structure."""

from __future__ import annotations

# The family's one registration point: importing a module registers its fixtures and checks.
from doctor.checks.security.rules import loading, pickles, safetensors  # noqa: F401

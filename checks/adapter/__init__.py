"""ADP: PEFT adapters. adapter_config.json here; targets and base in ``doctor.checks.adapter.rules.base``;
weights in ``doctor.checks.adapter.rules.weights`` (imported at the bottom so they register with the family)."""

from __future__ import annotations

# The family's one registration point: importing a module registers its fixtures and checks.
from doctor.checks.adapter import fixtures  # noqa: F401
from doctor.checks.adapter.rules import base, config, values, weights  # noqa: F401

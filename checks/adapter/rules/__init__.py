"""checks.adapter.rules."""

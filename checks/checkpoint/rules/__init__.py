"""checks.checkpoint.rules."""

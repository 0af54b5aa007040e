"""checks.run.rules."""

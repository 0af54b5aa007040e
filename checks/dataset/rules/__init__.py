"""checks.dataset.rules."""

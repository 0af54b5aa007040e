"""checks.security.rules."""

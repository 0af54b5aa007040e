"""checks.llava.rules."""

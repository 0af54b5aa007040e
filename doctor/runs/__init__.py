"""doctor.runs."""

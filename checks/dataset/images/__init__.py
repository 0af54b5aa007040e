"""checks.dataset.images."""

"""Data files shipped with vlm-doctor: JSON Schemas of the dataset formats, the default image."""

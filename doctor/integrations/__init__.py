"""Integrations with training frameworks (a transformers Trainer callback)."""

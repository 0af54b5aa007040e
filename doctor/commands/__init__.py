"""Subcommands of the vlm-doctor CLI, one module each (add_arguments + run)."""

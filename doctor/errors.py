"""One small error hierarchy. Messages name the file and say what to do."""

from __future__ import annotations


class DoctorError(Exception):
    """Base of every error vlm-doctor raises on purpose. The CLI prints it and exits 2."""

    exit_code = 2


class UsageError(DoctorError):
    """Bad command-line arguments, selection codes or option values."""


class ConfigError(DoctorError):
    """A bad ``[tool.vlm-doctor]`` / ``vlm-doctor.toml`` configuration."""


class ArtifactError(DoctorError):
    """An input that cannot be read at all (not a finding about its content)."""


class Skip(Exception):
    """Raised by a check or fixture: the check cannot run here; the reason is reported."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

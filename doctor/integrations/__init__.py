"""Integrations with training frameworks (a transformers Trainer callback).

``from doctor.integrations import DoctorCallback`` imports transformers only at that moment:
importing this package alone stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from doctor.integrations.callback import DoctorCallback

__all__ = ["DoctorCallback"]


def __getattr__(name: str) -> Any:
    if name == "DoctorCallback":
        from doctor.integrations.callback import DoctorCallback

        return DoctorCallback
    raise AttributeError(f"module 'doctor.integrations' has no attribute {name!r}")

"""training_args.bin: a pickled ``TrainingArguments`` (or a subclass: LLaVA's, TRL's). It is read
ONLY through the safe pickle reader ``doctor.io.pickle_scan`` (an allow-list that rebuilds the
vetted Trainer-argument classes without importing or calling anything); never with torch.load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.runs.layout import RunLayout

FIELDS = (
    "learning_rate", "mm_projector_lr", "lora_r", "lora_alpha", "warmup_steps", "warmup_ratio", "max_steps",
    "num_train_epochs", "lr_scheduler_type", "fp16", "bf16", "logging_nan_inf_filter", "max_grad_norm",
    "gradient_checkpointing", "deepspeed", "save_only_model", "eval_strategy", "evaluation_strategy",
)


def training_args_file(layout: RunLayout) -> Path | None:
    """The final output's training_args.bin, else the latest checkpoint's."""
    for save in reversed(layout.saves):
        if "training_args.bin" in save.names:
            return save.path / "training_args.bin"
    return None


def read_training_args(layout: RunLayout) -> dict[str, Any]:
    """The few fields the RUN checks use, or {} when there is no file; ``{"_reason": ...}`` when the
    safe reader refuses it (the SEC checks report why).

    The pickle is scanned with the allow-list first; only a clean file's object state is read, from
    the scanner's inert opcode machine (nothing is imported, called or unpickled)."""
    path = training_args_file(layout)
    if path is None:
        return {}
    try:
        from doctor.io.pickle.containers import walk_file
        from doctor.io.pickle_scan import _main_stream, scan
    except ImportError:
        return {"_reason": "the safe pickle reader (doctor.io.pickle_scan) is not available"}
    try:
        result = scan(path)
        if not result.ok:
            return {"_reason": f"{path.name} was refused by the pickle scanner (see the SEC findings)"}
        stream = _main_stream(walk_file(str(path)))
    except Exception as e:  # noqa: BLE001 - a broken pickle is reported by the SEC checks
        return {"_reason": f"{path.name} could not be read: {e}"}
    state = getattr(getattr(stream, "run", None), "result", None)
    state = getattr(state, "state", None)
    if not isinstance(state, dict):
        return {"_reason": f"{path.name} holds no TrainingArguments object state"}
    return _fields(state)


def _fields(state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = state.get(name)
        if isinstance(value, (int, float, str, bool)):
            out[name] = value
        elif value is not None:
            args = getattr(value, "args", None)  # an enum rebuilt as SchedulerType('linear')
            if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], (str, int)):
                out[name] = args[0]
    return out

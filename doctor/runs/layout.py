"""What is in a training output folder: its saves (``checkpoint-N/`` folders and the final output at
the top) and the files that tell them apart. Reads names, sizes and a few small files; never weights.

The shapes this knows (read from transformers' ``Trainer._save_checkpoint`` / ``save_model``,
LLaVA's ``train.py`` / ``LLaVATrainer`` and DeepSpeed's / accelerate's savers):

- a PEFT LoRA save: ``adapter_config.json`` + ``adapter_model.safetensors`` (or ``.bin``)
- original LLaVA adds ``config.json`` and ``non_lora_trainables.bin`` (the projector) to the final
  output only; a projector pre-training save is ``config.json`` + ``mm_projector.bin``
- a full fine-tune: ``config.json`` + ``model*.safetensors`` / ``pytorch_model*.bin``
- DeepSpeed: ``global_stepN/`` (``*_model_states.pt``, ``*_optim_states.pt``), ``latest``,
  ``zero_to_fp32.py``; under ZeRO-3 without ``stage3_gather_16bit_weights_on_model_save`` the
  model file is empty or missing and only ``global_stepN/`` holds the weights
- FSDP ``SHARDED_STATE_DICT``: ``pytorch_model_fsdp_0/`` with ``*.distcp`` shards and ``.metadata``
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.files import ADAPTER_WEIGHTS, CHECKPOINT_RE, GLOBAL_STEP_RE, MM_PROJECTOR, NON_LORA_TRAINABLES

PROJECTOR_FILES = (NON_LORA_TRAINABLES, MM_PROJECTOR)
MODEL_WEIGHT_RE = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)$")
LLAVA_CONFIG_KEYS = ("mm_projector_type", "mm_vision_tower", "mm_hidden_size")
MAX_STATE_BYTES = 256 << 20  # trainer_state.json of a very long run with logging_steps=1


@dataclass
class Save:
    """One saved state of the run: a ``checkpoint-N/`` folder, or the final output at the top."""

    name: str  # "checkpoint-500", or "final" for the run folder itself
    path: Path
    step: int | None
    names: set[str] = field(default_factory=set)
    size: int = 0  # bytes, the whole folder (for the final output: its own files only)
    is_final: bool = False
    deepspeed_tags: list[str] = field(default_factory=list)  # global_stepN folders
    fsdp_dirs: list[str] = field(default_factory=list)  # folders holding *.distcp shards

    @property
    def label(self) -> str:
        return f"the final output in {self.path.name}/" if self.is_final else self.name

    def file(self, name: str) -> Path | None:
        return self.path / name if name in self.names else None

    @property
    def adapter_config(self) -> Path | None:
        return self.file("adapter_config.json")

    @property
    def adapter_weights(self) -> Path | None:
        for n in ADAPTER_WEIGHTS:
            if n in self.names:
                return self.path / n
        return None

    @property
    def model_weights(self) -> list[Path]:
        return [self.path / n for n in sorted(self.names) if MODEL_WEIGHT_RE.match(n)]

    @property
    def projector(self) -> Path | None:
        for n in PROJECTOR_FILES:
            if n in self.names:
                return self.path / n
        return None

    @property
    def zero_to_fp32(self) -> Path | None:
        return self.file("zero_to_fp32.py")

    @property
    def has_weights(self) -> bool:
        return bool(self.adapter_weights or self.model_weights or self.projector)


@dataclass
class RunLayout:
    root: Path
    saves: list[Save]  # checkpoints by step, then the final output (if any)
    llava: bool  # an original-LLaVA run (config.json with mm_* keys, non_lora_trainables.bin)
    lora: bool  # a PEFT run (some save holds an adapter)
    state_files: list[Path]  # every trainer_state.json, the run's own record among them
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoints(self) -> list[Save]:
        return [s for s in self.saves if not s.is_final]

    @property
    def final(self) -> Save | None:
        return next((s for s in self.saves if s.is_final), None)

    def by_name(self, name: str) -> Save | None:
        return next((s for s in self.saves if s.name == name), None)


def read_layout(root: str | os.PathLike[str]) -> RunLayout:
    """List the saves of the run at ``root``. Raises OSError only when ``root`` cannot be listed."""
    root = Path(root)
    top = _entries(root)
    saves: list[Save] = []
    for name, entry in top.items():
        m = CHECKPOINT_RE.match(name)
        if m and entry.is_dir(follow_symlinks=False):
            saves.append(_read_save(Path(entry.path), name, int(m.group(1))))
    saves.sort(key=lambda s: s.step or 0)
    if not saves and _looks_like_single_checkpoint(set(top)):
        # the folder is itself one checkpoint (``vlm-doctor triage out/checkpoint-500``)
        m = CHECKPOINT_RE.match(root.name)
        saves.append(_read_save(root, root.name, int(m.group(1)) if m else _state_step(root)))
    else:
        final = _read_final(root, top)
        if final is not None:
            saves.append(final)
    states = [s.path / "trainer_state.json" for s in saves if "trainer_state.json" in s.names]
    if "trainer_state.json" in top and root / "trainer_state.json" not in states:
        states.append(root / "trainer_state.json")
    lora = any(s.adapter_config or s.adapter_weights for s in saves)
    return RunLayout(root, saves, _is_llava(root, saves), lora, states)


def _entries(folder: Path) -> dict[str, os.DirEntry[str]]:
    with os.scandir(folder) as it:
        return {e.name: e for e in it}


def _looks_like_single_checkpoint(names: set[str]) -> bool:
    return "trainer_state.json" in names and (
        any(n in names for n in (*ADAPTER_WEIGHTS, "adapter_config.json", "optimizer.pt", "latest"))
        or any(GLOBAL_STEP_RE.match(n) for n in names)
    )


def _read_save(path: Path, name: str, step: int | None) -> Save:
    save = Save(name, path, step)
    try:
        entries = _entries(path)
    except OSError:
        return save  # a folder removed or unreadable mid-read: an empty save
    save.names = set(entries)
    for n, e in entries.items():
        try:
            if e.is_dir(follow_symlinks=False):
                save.size += _tree_size(Path(e.path))
                if GLOBAL_STEP_RE.match(n):
                    save.deepspeed_tags.append(n)
                elif _has_distcp(Path(e.path)):
                    save.fsdp_dirs.append(n)
            else:
                save.size += e.stat(follow_symlinks=False).st_size
                if n.endswith(".distcp") and "." not in save.fsdp_dirs:
                    save.fsdp_dirs.append(".")
        except OSError:
            continue
    save.deepspeed_tags.sort(key=lambda t: int(GLOBAL_STEP_RE.match(t).group(1)))  # type: ignore[union-attr]
    return save


def _read_final(root: Path, top: dict[str, os.DirEntry[str]]) -> Save | None:
    """The run's final output: the weights and configs written at the top of the run folder."""
    names = {n for n, e in top.items() if not CHECKPOINT_RE.match(n)}
    save = Save("final", root, None, is_final=True)
    save.names = names
    if not save.has_weights and not save.adapter_config and not any(GLOBAL_STEP_RE.match(n) for n in names):
        return None
    for n in names:
        e = top[n]
        try:
            if e.is_dir(follow_symlinks=False):
                if GLOBAL_STEP_RE.match(n):
                    save.deepspeed_tags.append(n)
                    save.size += _tree_size(Path(e.path))
                elif _has_distcp(Path(e.path)):
                    save.fsdp_dirs.append(n)
                    save.size += _tree_size(Path(e.path))
            else:
                save.size += e.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    save.step = _state_step(root)
    return save


def _tree_size(folder: Path) -> int:
    total = 0
    stack = [folder]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(Path(e.path))
                        else:
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _has_distcp(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(e.name.endswith(".distcp") for e in it)
    except OSError:
        return False


def _state_step(folder: Path) -> int | None:
    state = read_json(folder / "trainer_state.json", limit=MAX_STATE_BYTES)
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _is_llava(root: Path, saves: list[Save]) -> bool:
    for s in saves:
        if "non_lora_trainables.bin" in s.names or "mm_projector.bin" in s.names:
            return True
        if "config.json" in s.names:
            config = read_json(s.path / "config.json")
            if isinstance(config, dict) and (
                any(k in config for k in LLAVA_CONFIG_KEYS) or str(config.get("model_type", "")).startswith("llava_")
            ):
                return True
    return False


def read_json(path: Path, limit: int = 8 << 20) -> Any:
    """A small JSON file (NaN and Infinity allowed, as Python writes them), or None."""
    try:
        if path.stat().st_size > limit:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"

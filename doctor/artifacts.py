"""Discovery: what is at this path?

Each artifact has a path and a set of kinds; checks apply to artifacts by kind:

- ``dataset``         a LLaVA / messages JSON array or JSONL file, or a parquet / Arrow table
- ``adapter``         a PEFT adapter folder (``adapter_config.json``)
- ``llava-lora``      an original-LLaVA LoRA output (adapter + ``config.json`` with a ``llava_*`` type
                      and/or ``non_lora_trainables.bin``); also an ``adapter``
- ``model``           a transformers model folder (config.json + weights)
- ``llava-original``  a model folder in the original LLaVA codebase's layout (``llava_llama`` ...)
- ``xtuner``          an XTuner release (``llm_adapter/``, ``visual_encoder_adapter/``, ``projector/``)
- ``run``             a training output folder (``checkpoint-N/``, ``trainer_state.json``)
- ``weights``         a single weights file (.safetensors, .bin, .pt, .pth)
- ``environment``     the installed libraries (one per run, always present)
- ``sanity``          a model to load and run (only with ``--sanity``)

Discovery reads file names and at most a few small JSON files; it never opens weights.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.errors import ArtifactError

ORIGINAL_LLAVA_TYPES = frozenset(
    {"llava_llama", "llava_mistral", "llava_mpt", "llava_mixtral", "llava_qwen", "llava_qwen_moe", "llava_gemma"}
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
CONFIG_NAMES = frozenset(
    {
        "config.json", "adapter_config.json", "generation_config.json", "tokenizer_config.json",
        "special_tokens_map.json", "preprocessor_config.json", "processor_config.json",
        "trainer_state.json", "chat_template.json", "tokenizer.json", "added_tokens.json",
        "model.safetensors.index.json", "pytorch_model.bin.index.json", "vocab.json",
        "xtuner_config.json", "training_args.json", "all_results.json", "train_results.json",
        "eval_results.json",
    }
)
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_GLOBAL_STEP_RE = re.compile(r"^global_step\d+$")
_FSDP_DIR_RE = re.compile(r"^pytorch_model_fsdp_\d+$")
MAX_WALK_DEPTH = 4


@dataclass
class Artifact:
    path: str
    kinds: frozenset[str]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The most specific kind, for display."""
        for k in ("llava-lora", "llava-original", "xtuner", "run", "adapter", "model", "dataset", "weights"):
            if k in self.kinds:
                return k
        return next(iter(sorted(self.kinds)))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "kinds": sorted(self.kinds)}


def read_json_small(path: Path, limit: int = 8 << 20) -> Any:
    """Read a small JSON file, or None when absent, too large or invalid (checks report why)."""
    try:
        if path.stat().st_size > limit:
            return None
        with path.open("rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return None


def discover(paths: list[str]) -> list[Artifact]:
    """Classify each path; walk folders that are not artifacts themselves."""
    found: list[Artifact] = []
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw)
        if not p.exists() and not p.is_symlink():
            raise ArtifactError(f"{raw}: no such file or folder")
        for art in _discover_one(p, explicit=True, depth=0):
            if art.path not in seen:
                seen.add(art.path)
                found.append(art)
    return found


def classify(path: Path, explicit: bool = False) -> Artifact | None:
    """The artifact at exactly this path, or None."""
    if path.is_file():
        return _classify_file(path, explicit)
    if path.is_dir():
        return _classify_dir(path)
    return None


def _discover_one(path: Path, explicit: bool, depth: int) -> Iterator[Artifact]:
    if explicit and path.is_file() and path.name in ("adapter_config.json", "config.json"):
        # `vlm-doctor check out/adapter_config.json` (pre-commit passes file names): the
        # artifact is the folder that holds it.
        parent = _classify_dir(path.parent)
        if parent is not None:
            yield parent
            return
    art = classify(path, explicit)
    if art is not None:
        yield art
        return
    if path.is_dir() and depth < MAX_WALK_DEPTH:
        try:
            children = sorted(path.iterdir())
        except OSError as e:
            raise ArtifactError(f"{path}: cannot list folder: {e.strerror}") from None
        for child in children:
            if child.name.startswith(".") or child.name in ("__pycache__", "node_modules"):
                continue
            if child.is_symlink() and child.is_dir():
                continue  # never follow folder links while walking
            yield from _discover_one(child, explicit=False, depth=depth + 1)
    elif explicit and path.is_dir():
        return


def _classify_file(path: Path, explicit: bool) -> Artifact | None:
    name = path.name
    low = name.lower()
    if low.endswith(".jsonl"):
        return Artifact(str(path), frozenset({"dataset"}), {"format": "jsonl"})
    if low.endswith((".parquet", ".arrow")):  # Hugging Face datasets: shards, save_to_disk files
        return Artifact(str(path), frozenset({"dataset"}), {"format": low.rsplit(".", 1)[1]})
    if low.endswith(".json"):
        if name in CONFIG_NAMES or name.endswith(".index.json"):
            return None
        head = _peek(path)
        if head.startswith("[") or explicit:
            return Artifact(str(path), frozenset({"dataset"}), {"format": "json"})
        if head.startswith("{") and ('"conversations"' in head or '"messages"' in head):
            return Artifact(str(path), frozenset({"dataset"}), {"format": "json"})
        return None
    if low.endswith(WEIGHT_SUFFIXES) and (explicit or low.endswith(".safetensors")):
        return Artifact(str(path), frozenset({"weights"}))
    if explicit:
        # A file we do not recognise by name: weights of another extension are still weights
        # (the security checks sniff the content), anything else is a usage error.
        return Artifact(str(path), frozenset({"weights"}), {"unknown_extension": True})
    return None


def _peek(path: Path, n: int = 4096) -> str:
    try:
        with path.open("rb") as f:
            return f.read(n).decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    except OSError:
        return ""


def _classify_dir(path: Path) -> Artifact | None:
    try:
        names = {c.name for c in path.iterdir()}
    except OSError:
        return None
    kinds: set[str] = set()
    meta: dict[str, Any] = {}

    if any((path / n).is_dir() for n in ("llm_adapter", "projector")):
        return Artifact(str(path), frozenset({"xtuner"}))

    checkpoints = sorted(
        (int(m.group(1)), n) for n in names if (m := _CHECKPOINT_RE.match(n)) and (path / n).is_dir()
    )
    # DeepSpeed (global_stepN/ beside `latest` / zero_to_fp32.py) and FSDP SHARDED_STATE_DICT
    # (pytorch_model_fsdp_N/ of *.distcp) saves: training state that needs a conversion step.
    sharded = any(_GLOBAL_STEP_RE.match(n) or _FSDP_DIR_RE.match(n) for n in names if (path / n).is_dir()) \
        or any(n.endswith(".distcp") for n in names)
    if checkpoints or sharded or "trainer_state.json" in names and not _has_weights(names):
        kinds.add("run")
        meta["checkpoints"] = [n for _, n in checkpoints]

    config = read_json_small(path / "config.json") if "config.json" in names else None
    if not isinstance(config, dict):
        config = None
    raw_type = config.get("model_type") if config else None
    model_type = raw_type if isinstance(raw_type, str) else None  # junk types are CKP's to report
    meta["model_type"] = model_type
    architectures = config.get("architectures") if config else None
    if not isinstance(architectures, list):
        architectures = []
    is_original = model_type in ORIGINAL_LLAVA_TYPES or (
        model_type == "llava" and any("LlavaLlama" in str(a) or "LlavaMistral" in str(a) for a in architectures)
    ) or (config is not None and "mm_projector_type" in config)

    if "adapter_config.json" in names:
        kinds.add("adapter")
        if is_original or "non_lora_trainables.bin" in names:
            kinds.add("llava-lora")
    elif "config.json" in names and (_has_weights(names) or is_original):
        kinds.add("model")
        if is_original:
            kinds.add("llava-original")
    elif "config.json" in names and isinstance(config, dict) and "run" not in kinds:
        # A config without weights (an incomplete download or an unfinished merge) is still a
        # model folder: the checkpoint checks say what is missing.
        if "model_type" in config or "architectures" in config:
            kinds.add("model")

    if not kinds:
        return None
    return Artifact(str(path), frozenset(kinds), meta)


def _has_weights(names: set[str]) -> bool:
    return any(n.endswith(WEIGHT_SUFFIXES) or n.endswith(".index.json") for n in names)


def checkpoint_step(name: str) -> int | None:
    m = _CHECKPOINT_RE.match(name)
    return int(m.group(1)) if m else None


def environment_artifact() -> Artifact:
    return Artifact("<environment>", frozenset({"environment"}))


def is_local_model_dir(value: str | os.PathLike[str] | None) -> bool:
    return bool(value) and Path(str(value)).is_dir()

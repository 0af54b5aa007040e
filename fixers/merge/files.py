"""The small files of a merged checkpoint: tokenizer and processor files carried over (from
the adapter folder when it has them, since training may have added tokens or changed the chat
template; else from the base), and config.json, written last."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from doctor.errors import UsageError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "spiece.model", "tokenizer.tiktoken")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "chat_template.json",
                   "chat_template.jinja", "video_preprocessor_config.json")
_DTYPE_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}


def resolve_folder(given: str | Path | None, recorded: str | None, what: str, flag: str) -> Path:
    """A local model folder: the one given, else the recorded one when it is a local folder or
    in the Hugging Face cache (never downloaded)."""
    if given:
        p = Path(given)
        if not (p / "config.json").exists():
            raise UsageError(f"{flag} {given}: not a model folder (no config.json)")
        return p
    if recorded:
        p = Path(recorded)
        if (p / "config.json").exists():
            return p
        cached = _hf_cache(recorded)
        if cached is not None:
            return cached
    raise UsageError(f"the {what} {recorded!r} recorded in the input is not a local folder (and is not in the "
                     f"Hugging Face cache); pass it with {flag} DIR")


def _hf_cache(repo_id: str) -> Path | None:
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".")):
        return None
    try:
        from huggingface_hub import snapshot_download

        p = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or no huggingface_hub
        return None
    return p if (p / "config.json").exists() else None


def carry_files(dst: Path, first: Path | None, fallback: Path | None) -> list[str]:
    """Copy tokenizer files as one group (from ``first`` when it has a tokenizer, else from
    ``fallback``) and processor files one by one (``first`` before ``fallback``)."""
    copied: list[str] = []
    tok_src = first if first is not None and _has_tokenizer(first) else fallback
    if tok_src is not None:
        for name in TOKENIZER_FILES:
            if (tok_src / name).is_file():
                shutil.copyfile(tok_src / name, dst / name)
                copied.append(name)
    for name in PROCESSOR_FILES:
        for src in (first, fallback):
            if src is not None and (src / name).is_file():
                shutil.copyfile(src / name, dst / name)
                copied.append(name)
                break
    return copied


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file()


def copy_if_exists(src: Path, dst: Path) -> None:
    if src.is_file():
        shutil.copyfile(src, dst)


def merged_config(base_config: dict[str, Any], dtype_code: str | None, vocab_delta: int = 0) -> dict[str, Any]:
    """The base's config.json with the dtype written (when forced) and the vocabulary grown
    when the adapter saved bigger embeddings (``modules_to_save`` after adding tokens)."""
    cfg = json.loads(json.dumps(base_config))
    if dtype_code in _DTYPE_NAMES:
        name = _DTYPE_NAMES[dtype_code]
        for holder in (cfg, cfg.get("text_config"), cfg.get("vision_config")):
            if isinstance(holder, dict):
                for key in ("dtype", "torch_dtype"):
                    if key in holder or (holder is cfg and key == "torch_dtype" and "dtype" not in cfg):
                        holder[key] = name
    if vocab_delta:
        holder = cfg["text_config"] if isinstance(cfg.get("text_config"), dict) else cfg
        if isinstance(holder.get("vocab_size"), int):
            holder["vocab_size"] += vocab_delta
    return cfg


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def dtype_name(code: str) -> str:
    return _DTYPE_NAMES.get(code, "float32")

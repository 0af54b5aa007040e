"""Shared inputs of the checkpoint checks: config.json, the weights' tensor headers, the tokenizer
and processor files. Header-only and pure Python: nothing here imports torch or transformers.

Which weights count is decided the way ``from_pretrained`` decides it: ``model.safetensors``,
then ``model.safetensors.index.json``, then ``pytorch_model.bin``, then its index. Anything else
(``consolidated.safetensors``, shards without their index) is never read by transformers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.errors import Skip
from doctor.files import ADAPTER_WEIGHTS
from doctor.io.jsonfile import JSON_LIMIT, JsonFile, read_json  # noqa: F401 - re-exported
from doctor.registry import fixture

SAFE_NAME, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN_NAME, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
ADAPTER_NAMES = ADAPTER_WEIGHTS
_LORA_RE = re.compile(r"(^|\.)(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|base_layer)(\.|$)")




def load_json_dict(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when absent or unreadable."""
    f = read_json(path)
    return f.data if f.ok and isinstance(f.data, dict) else None


@fixture
def ckp_folder(artifact: Any, path: str) -> Path:
    """The model folder (checks of a lone weights file skip)."""
    if "model" not in artifact.kinds:
        raise Skip("applies to model folders, not to a lone weights file")
    return Path(path)


@fixture
def ckp_config_file(ckp_folder: Path) -> JsonFile:
    return read_json(ckp_folder / "config.json")


@fixture
def ckp_config(ckp_config_file: JsonFile) -> dict[str, Any]:
    """config.json as a dict; checks that need it skip when CKP001 reported it."""
    if not ckp_config_file.ok or not isinstance(ckp_config_file.data, dict):
        raise Skip("config.json is missing or invalid (see CKP001)")
    return ckp_config_file.data


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's config (``text_config`` of a VLM, the config itself otherwise)."""
    sub = config.get("text_config")
    return sub if isinstance(sub, dict) else config


def vision_config(config: dict[str, Any]) -> dict[str, Any] | None:
    sub = config.get("vision_config")
    return sub if isinstance(sub, dict) else None


def image_token_id(config: dict[str, Any]) -> Any:
    """``image_token_id`` (5.x) / ``image_token_index`` (4.x) of a transformers VLM config."""
    for key in ("image_token_id", "image_token_index"):
        if key in config:
            return key, config[key]
    return None, None


# ---- weights -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightTensor:
    name: str
    dtype: str  # safetensors spelling: F16, BF16, F32, ...
    shape: tuple[int, ...]
    file: str


@dataclass
class ModelWeights:
    """The tensors transformers would read from a model folder (headers only)."""

    folder: Path
    format: str | None = None  # "safetensors" | "bin" | None (nothing loadable)
    index_path: Path | None = None
    index: dict[str, Any] | None = None
    index_error: str | None = None
    files: list[str] = field(default_factory=list)  # weight files transformers would open
    tensors: dict[str, WeightTensor] = field(default_factory=dict)
    per_file: dict[str, dict[str, WeightTensor]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # file -> why its tensors are unknown
    lfs_pointers: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    escaping: list[str] = field(default_factory=list)  # index entries that leave the folder
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # tensor -> files holding it

    @property
    def complete(self) -> bool:
        """Every weight file was found and its header read."""
        return self.format is not None and not self.unreadable and not self.missing_files and not self.escaping

    def require_complete(self) -> None:
        if self.format is None:
            raise Skip("no weights transformers would load (see CKP101)")
        if not self.complete:
            bad = sorted(set(self.unreadable) | set(self.missing_files) | set(self.escaping))
            raise Skip(f"some weight files are missing or unreadable ({', '.join(Path(b).name for b in bad[:3])}); "
                       "see CKP2xx / SEC findings")

    def lora_names(self) -> list[str]:
        return [n for n in self.tensors if _LORA_RE.search(n)]

    def embedding_rows(self) -> tuple[str, int] | None:
        """The language model's input embedding (name, rows) from the headers."""
        best: tuple[str, int] | None = None
        for name, t in self.tensors.items():
            if name.endswith("embed_tokens.weight") and len(t.shape) == 2 and "vision" not in name:
                if best is None or len(name) < len(best[0]):
                    best = (name, t.shape[0])
        if best is None:
            for name in ("tok_embeddings.weight", "transformer.wte.weight", "wte.weight"):
                if name in self.tensors and len(self.tensors[name].shape) == 2:
                    return name, self.tensors[name].shape[0]
        return best


def weight_candidates(folder: Path) -> tuple[str | None, Path | None, Path | None]:
    """(format, single file, index file) in transformers' order of preference."""
    if (folder / SAFE_NAME).is_file():
        return "safetensors", folder / SAFE_NAME, None
    if (folder / SAFE_INDEX).is_file():
        return "safetensors", None, folder / SAFE_INDEX
    if (folder / BIN_NAME).is_file():
        return "bin", folder / BIN_NAME, None
    if (folder / BIN_INDEX).is_file():
        return "bin", None, folder / BIN_INDEX
    return None, None, None


def read_model_weights(folder: Path) -> ModelWeights:
    fmt, single, index_path = weight_candidates(folder)
    out = ModelWeights(folder, fmt, index_path)
    if fmt is None:
        return out
    if single is not None:
        _add_file(out, single)
        return out
    assert index_path is not None
    return read_sharded(folder, index_path, fmt)


def read_sharded(folder: Path, index_path: Path, fmt: str) -> ModelWeights:
    """The shard set an index file describes (headers of every shard it names)."""
    out = ModelWeights(folder, fmt, index_path)
    idx = read_json(index_path)
    weight_map = idx.data.get("weight_map") if idx.ok and isinstance(idx.data, dict) else None
    if not isinstance(weight_map, dict):
        out.index_error = idx.error or "no \"weight_map\" object"
        out.unreadable[str(index_path)] = out.index_error
        return out
    out.index = idx.data
    for shard in sorted({str(v) for v in weight_map.values()}):
        p = Path(shard)
        target = folder / shard
        # Lexical test only: the hub cache links shards to ../../blobs/, which is fine.
        if p.is_absolute() or ".." in p.parts or shard.startswith("~"):
            out.escaping.append(shard)
            continue
        if not target.is_file():
            out.missing_files.append(shard)
            continue
        _add_file(out, target)
    return out


def _add_file(out: ModelWeights, path: Path) -> None:
    from doctor.io.safetensors_header import is_lfs_pointer

    key = str(path)
    out.files.append(key)
    if is_lfs_pointer(path):
        out.lfs_pointers.append(key)
        out.unreadable[key] = "a Git-LFS pointer file, not the weights"
        return
    tensors = _file_tensors(path)
    if isinstance(tensors, str):
        out.unreadable[key] = tensors
        return
    out.per_file[key] = tensors
    for name, t in tensors.items():
        if name in out.tensors:
            out.duplicates.setdefault(name, [out.tensors[name].file]).append(key)
        out.tensors[name] = t


def _file_tensors(path: Path) -> dict[str, WeightTensor] | str:
    """Tensor headers of one weights file, or why they cannot be read."""
    if path.name.endswith(".safetensors"):
        from doctor.io.safetensors_header import read_header

        h = read_header(path)
        if h.problems and not h.tensors:
            return f"unreadable safetensors header: {h.problems[0].message}"
        if h.problems:
            return f"malformed safetensors header ({h.problems[0].rule}): see the SEC findings"
        return {n: WeightTensor(n, t.dtype, t.shape, str(path)) for n, t in h.tensors.items()}
    try:
        from doctor.io import pickle_scan  # the SEC family's static reader: never unpickles
    except ImportError:
        return "the static pickle reader (doctor.io.pickle_scan) is not available"
    try:
        infos = pickle_scan.tensor_infos(str(path))
    except Exception as e:  # noqa: BLE001 - any reader failure means "tensors unknown"
        return f"cannot list tensors statically: {e}"
    return {n: WeightTensor(n, normalize_dtype(d), tuple(int(x) for x in s), str(path)) for n, (d, s) in infos.items()}


_DTYPE_ALIASES = {
    "float32": "F32", "float": "F32", "floatstorage": "F32", "f32": "F32",
    "float16": "F16", "half": "F16", "halfstorage": "F16", "f16": "F16",
    "bfloat16": "BF16", "bfloat16storage": "BF16", "bf16": "BF16",
    "float64": "F64", "double": "F64", "doublestorage": "F64", "f64": "F64",
    "int64": "I64", "long": "I64", "longstorage": "I64", "int32": "I32", "int": "I32", "intstorage": "I32",
    "int16": "I16", "short": "I16", "shortstorage": "I16", "int8": "I8", "charstorage": "I8",
    "uint8": "U8", "bytestorage": "U8", "bool": "BOOL", "boolstorage": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}


def normalize_dtype(dtype: Any) -> str:
    """``torch.float16`` / ``HalfStorage`` / ``F16`` -> ``F16``."""
    text = str(dtype).rsplit(".", 1)[-1].strip()
    return _DTYPE_ALIASES.get(text.lower(), text.upper())


@fixture
def ckp_weights(ckp_folder: Path) -> ModelWeights:
    return read_model_weights(ckp_folder)


def is_lora_name(name: str) -> bool:
    return bool(_LORA_RE.search(name))


# ---- processor files ------------------------------------------------------------------------------


def image_processor_config(folder: Path) -> tuple[dict[str, Any] | None, Path | None, str]:
    """The image processor's settings: ``processor_config.json["image_processor"]`` (5.x writes one
    file) or ``preprocessor_config.json`` (4.x). Returns (dict, file, JSON pointer prefix)."""
    proc = load_json_dict(folder / "processor_config.json")
    if proc is not None and isinstance(proc.get("image_processor"), dict):
        return proc["image_processor"], folder / "processor_config.json", "/image_processor"
    pre = load_json_dict(folder / "preprocessor_config.json")
    if pre is not None:
        return pre, folder / "preprocessor_config.json", ""
    return None, None, ""

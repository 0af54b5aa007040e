"""Tensor-level reads for run triage: headers first, then tensors one at a time, as float32 numpy
arrays read straight from the byte offsets in the safetensors header (bf16 has no numpy dtype:
its 16 bits are the high half of a float32). No torch.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from doctor.io.safetensors_header import TensorInfo, read_header

if TYPE_CHECKING:
    import numpy as np

LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A", ".lora_embedding_B", ".lora_magnitude_vector")
NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}
SAMPLE_MODULES = 4  # modules (A and B each) compared per pair of checkpoints without --deep


def is_lora(name: str) -> bool:
    return any(m in name for m in LORA_MARKERS)


def read_tensor(info: TensorInfo) -> np.ndarray | None:
    """One tensor as float32, or None for a dtype numpy cannot hold or a short read."""
    import numpy as np

    code = NUMPY_DTYPES.get(info.dtype)
    if code is None:
        return None
    with open(info.file, "rb") as f:
        f.seek(info.start)
        raw = f.read(info.nbytes)
    if len(raw) != info.nbytes:
        return None
    arr = np.frombuffer(raw, dtype=code)
    if info.dtype == "BF16":
        wide = np.zeros(arr.size, dtype="<u4")
        wide.view("<u2")[1::2] = arr  # the high half of a little-endian float32
        return wide.view("<f4")
    return arr.astype(np.float32, copy=False)


@dataclass
class Delta:
    """How much the LoRA weights moved between two saves: ``||W_new - W_old|| / ||W_old||``."""

    relative: float
    max_abs: float
    compared: int  # tensors compared
    total: int  # LoRA tensors in the save
    note: str = ""

    @property
    def sampled(self) -> bool:
        return self.compared < self.total

    @property
    def unchanged(self) -> bool:
        return self.compared > 0 and self.max_abs == 0.0


def lora_tensors(path: Path | None) -> dict[str, TensorInfo] | None:
    """LoRA tensors of an adapter/model safetensors file, from its header; None when unreadable."""
    if path is None or path.suffix != ".safetensors":
        return None
    header = read_header(path)
    if header.problems:
        return None
    return lora_only(header.tensors)


def lora_only(tensors: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
    return {k: v for k, v in tensors.items() if is_lora(k)}


def sample(names: list[str], modules: int = SAMPLE_MODULES) -> list[str]:
    """Both matrices of ``modules`` LoRA modules spread evenly over the sorted module names."""
    by_module: dict[str, list[str]] = {}
    for n in sorted(names):
        cut = min((n.find(m) for m in LORA_MARKERS if m in n), default=len(n))
        by_module.setdefault(n[:cut], []).append(n)
    keys = sorted(by_module)
    if len(keys) <= modules:
        return sorted(names)
    picked = [keys[round(i * (len(keys) - 1) / (modules - 1))] for i in range(modules)] if modules > 1 else keys[:1]
    return [n for k in dict.fromkeys(picked) for n in by_module[k]]


def delta(old: dict[str, TensorInfo], new: dict[str, TensorInfo], deep: bool) -> Delta | None:
    """Compare the LoRA tensors both saves share (all with ``deep``, else a spread sample), one
    tensor pair in memory at a time."""
    import numpy as np

    common = sorted(n for n in old if n in new and old[n].shape == new[n].shape and old[n].numel > 0)
    if not common:
        return None
    names = common if deep else sample(common)
    diff_sq = base_sq = 0.0
    max_abs = 0.0
    compared = 0
    for name in names:
        a = read_tensor(old[name])
        if a is None:
            continue
        b = read_tensor(new[name])
        if b is None:
            continue
        d = b - a
        diff_sq += float(np.dot(d, d))
        base_sq += float(np.dot(a, a))
        m = float(np.abs(d).max()) if d.size else 0.0
        max_abs = max(max_abs, m) if math.isfinite(m) else math.inf
        compared += 1
    if not compared:
        return None
    rel = math.sqrt(diff_sq) / math.sqrt(base_sq) if base_sq > 0 else (0.0 if diff_sq == 0 else math.inf)
    return Delta(rel, max_abs, compared, len(common))


@dataclass
class BinSummary:
    """What a torch zip checkpoint holds, read from the zip directory (nothing is unpickled)."""

    storages: int
    data_bytes: int


def torch_zip_summary(path: Path) -> BinSummary | None:
    """Storage records of a torch zip file (``<archive>/data/<key>``); None for other formats."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as z:
            records = [i for i in z.infolist() if "/data/" in i.filename and not i.filename.endswith("/")]
            return BinSummary(len(records), sum(i.file_size for i in records))
    except (OSError, zipfile.BadZipFile):
        return None


def pickle_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor names and shapes of a torch pickle, read statically by the pickle scanner (nothing
    is unpickled); None when the scanner is unavailable or cannot read the file."""
    try:
        from doctor.io.pickle_scan import tensor_infos
    except ImportError:
        return None
    try:
        return {name: tuple(meta.shape) for name, meta in tensor_infos(path).items()}
    except Exception:  # noqa: BLE001 - a malformed pickle is the SEC checks' finding
        return None

"""Tensor input and output for the merge and convert fixers, one tensor at a time.

Reading: a safetensors tensor is read with ``os.pread`` at the offsets of its header (no mmap,
so a read tensor is the only memory it costs and nothing of the file stays resident); a ``.bin``
file is a pickle and goes through the security scanner first (``doctor.io.pickle_scan``), one
file at a time.

Writing: every output tensor's name, dtype and shape is known before the first byte is written,
so each shard's header is written first and the tensor bytes are streamed after it. Peak memory
is the tensor being written, never a shard.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.errors import ArtifactError, UsageError

if TYPE_CHECKING:
    import torch

# safetensors dtype code <-> torch dtype name
_ST_TO_TORCH = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
_TORCH_TO_ST = {v: k for k, v in _ST_TO_TORCH.items()}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
            "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16"})
DTYPE_ARG = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}


@dataclass(frozen=True)
class TensorRef:
    """Where one input tensor lives. ``start``/``end`` are absolute byte offsets in a
    safetensors file; a tensor of a pickle file has ``start == -1`` and is found by ``key``."""

    key: str
    dtype: str  # safetensors code
    shape: tuple[int, ...]
    file: str
    start: int = -1
    end: int = -1

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def st_code(dtype: torch.dtype) -> str:
    name = str(dtype).replace("torch.", "")
    if name not in _TORCH_TO_ST:
        raise ArtifactError(f"tensor dtype {name} cannot be written to safetensors by vlm-doctor")
    return _TORCH_TO_ST[name]


def torch_dtype(code: str) -> torch.dtype:
    import torch

    return getattr(torch, _ST_TO_TORCH[code])


# ---- reading ---------------------------------------------------------------------------------

def list_safetensors(path: Path) -> list[TensorRef]:
    """The tensors of one safetensors file from its header (pure Python, no data read)."""
    from doctor.io.safetensors_header import read_header

    header = read_header(path)
    if header.problems:
        p = header.problems[0]
        raise ArtifactError(f"{path}: not a readable safetensors file ({p.rule}: {p.message})")
    return [TensorRef(t.name, t.dtype, tuple(t.shape), str(path), t.start, t.end) for t in header.tensors.values()]


def list_bin(path: Path) -> tuple[list[TensorRef], dict[str, torch.Tensor]]:
    """The tensors of a pickle checkpoint: scanned, then loaded with ``weights_only=True``."""
    state = load_bin(path)
    refs = [TensorRef(k, st_code(v.dtype), tuple(v.shape), str(path)) for k, v in state.items()]
    return refs, state


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        from doctor.io.pickle_scan import safe_load
    except ImportError:  # the scanner is not installed in this build: torch's own allow-list
        import torch

        def safe_load(p: Any) -> Any:
            return torch.load(p, map_location="cpu", weights_only=True)
    try:
        obj = safe_load(path)
    except Exception as e:  # noqa: BLE001 - an unsafe or broken pickle is an input error
        raise ArtifactError(f"{path}: refused to load this pickle: {e}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    import torch

    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


class TensorReader:
    """Reads TensorRefs. Keeps at most one pickle file's tensors in memory at a time; an
    in-memory tensor can be registered under a pseudo file name with :meth:`hold`."""

    def __init__(self) -> None:
        self._bin_path: str | None = None
        self._bin: dict[str, Any] = {}
        self._held: dict[str, dict[str, Any]] = {}

    def hold(self, file: str, tensors: dict[str, torch.Tensor]) -> None:
        self._held[file] = tensors

    def read(self, ref: TensorRef) -> torch.Tensor:
        import torch

        if ref.file in self._held:
            return self._held[ref.file][ref.key]
        if ref.start < 0:
            if self._bin_path != ref.file:
                self._bin = {}
                self._bin = load_bin(Path(ref.file))
                self._bin_path = ref.file
            return self._bin[ref.key]
        n = ref.end - ref.start
        buf = bytearray(n)
        view = memoryview(buf)
        with open(ref.file, "rb", buffering=0) as f:
            got = 0
            while got < n:
                k = os.preadv(f.fileno(), [view[got:]], ref.start + got) if hasattr(os, "preadv") else \
                    _pread_into(f, view[got:], ref.start + got)
                if k <= 0:
                    raise ArtifactError(f"{ref.file}: truncated while reading tensor {ref.key}")
                got += k
        if n == 0:
            return torch.empty(ref.shape, dtype=torch_dtype(ref.dtype))
        return torch.frombuffer(buf, dtype=torch_dtype(ref.dtype)).reshape(ref.shape)

    def release(self) -> None:
        self._bin, self._bin_path = {}, None


def _pread_into(f: Any, view: memoryview, offset: int) -> int:
    f.seek(offset)
    return f.readinto(view)


# ---- writing ---------------------------------------------------------------------------------

@dataclass
class Shard:
    filename: str
    tensors: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)  # name, dtype, shape
    nbytes: int = 0


def parse_size(value: str | int) -> int:
    """``"5GB"`` -> 5e9, ``"500MiB"`` -> 500 * 2**20, as transformers reads ``max_shard_size``."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", value.upper())
    if not m:
        raise UsageError(f"--max-shard-size {value!r}: use a size like 5GB, 500MB or 2GiB")
    num, unit = float(m.group(1)), m.group(2)
    base = 1024 if "I" in unit else 1000
    power = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit.rstrip("IB")[:1] if unit else ""]
    size = int(num * base**power)
    if size <= 0:
        raise UsageError(f"--max-shard-size {value!r} must be positive")
    return size


def plan_shards(tensors: Iterable[tuple[str, str, tuple[int, ...]]], max_shard_size: int) -> list[Shard]:
    """Group tensors, in order, into shards of at most ``max_shard_size`` bytes (a bigger
    tensor gets a shard of its own), named as transformers names them."""
    shards: list[Shard] = [Shard("")]
    for name, dtype, shape in tensors:
        n = _nbytes(dtype, shape)
        cur = shards[-1]
        if cur.tensors and cur.nbytes + n > max_shard_size:
            cur = Shard("")
            shards.append(cur)
        cur.tensors.append((name, dtype, shape))
        cur.nbytes += n
    total = len(shards)
    for i, s in enumerate(shards, 1):
        s.filename = "model.safetensors" if total == 1 else f"model-{i:05d}-of-{total:05d}.safetensors"
    return shards


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    n = ITEMSIZE[dtype]
    for d in shape:
        n *= d
    return n


def shard_header(shard: Shard, metadata: dict[str, str]) -> bytes:
    """The JSON header of a shard, padded with spaces to a multiple of 8 as safetensors does."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, dtype, shape in shard.tensors:
        n = _nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_shard(path: Path, shard: Shard, metadata: dict[str, str],
                produce: Callable[[str], torch.Tensor], on_tensor: Callable[[int], None] | None = None) -> None:
    """Write one shard: header first, then each tensor as ``produce(name)`` returns it. A
    writer thread streams tensor i to the file while tensor i+1 is computed (at most two
    tensors in memory); the shard is fsync'ed before the function returns."""
    with open(path, "wb") as f:
        f.write(shard_header(shard, metadata))
        writer = _Writer(f)
        try:
            for name, dtype, shape in shard.tensors:
                writer.put((produce(name), name, dtype, shape))
                if on_tensor is not None:
                    on_tensor(1)
        finally:
            writer.close()
        f.flush()
        os.fsync(f.fileno())


class _Writer:
    """One background thread writing tensors in order; its error is raised in the caller."""

    def __init__(self, f: Any) -> None:
        import queue
        import threading

        self.f = f
        self.queue: Any = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="vlm-doctor-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            if self.error is None:
                try:
                    write_tensor(self.f, *job)
                except BaseException as e:  # noqa: BLE001 - handed to the producing thread
                    self.error = e
            del job

    def put(self, job: tuple[Any, ...]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(job)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def write_tensor(f: Any, t: torch.Tensor, name: str, dtype: str, shape: tuple[int, ...]) -> None:
    """Stream one tensor's bytes (little-endian, C order) into an open shard file."""
    import torch

    if tuple(t.shape) != tuple(shape) or st_code(t.dtype) != dtype:
        raise ArtifactError(f"internal: tensor {name} came out {st_code(t.dtype)}{list(t.shape)}, "
                            f"planned {dtype}{list(shape)}")
    t = t.contiguous()
    if t.numel() == 0:
        return
    raw = t.reshape(-1).view(torch.uint8) if t.dtype != torch.bool else t.reshape(-1).to(torch.uint8)
    f.write(memoryview(raw.numpy()))


def write_index(folder: Path, shards: list[Shard]) -> None:
    """``model.safetensors.index.json`` for a sharded set (nothing for a single file)."""
    if len(shards) <= 1:
        return
    weight_map = {name: s.filename for s in shards for name, _, _ in s.tensors}
    index = {"metadata": {"total_size": sum(s.nbytes for s in shards)}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def output_size(shards: list[Shard]) -> int:
    return sum(s.nbytes + len(shard_header(s, {})) + 4096 for s in shards)

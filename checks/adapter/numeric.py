"""Tensor data without torch: safetensors bytes read by offset into numpy, bit tests for
NaN/Inf and all-zero on 16/32-bit floats (bf16 included, which numpy cannot represent), and
the Frobenius norm of a LoRA delta ``B @ A`` from two r x r products."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from doctor.checks.adapter.reading import Weights

    from doctor.io.safetensors_header import TensorInfo

#: dtype -> (numpy unsigned view, exponent mask, magnitude mask)
_FLOAT_BITS = {
    "F16": ("<u2", 0x7C00, 0x7FFF),
    "BF16": ("<u2", 0x7F80, 0x7FFF),
    "F32": ("<u4", 0x7F800000, 0x7FFFFFFF),
    "F64": ("<u8", 0x7FF0000000000000, 0x7FFFFFFFFFFFFFFF),
}
FLOAT_DTYPES = frozenset(_FLOAT_BITS)
_CHUNK = 16 << 20  # bytes per read while scanning


def read_tensor(weights: Weights, name: str) -> np.ndarray:
    """One tensor of ``weights`` as float32 (a .bin read through torch is converted)."""
    if weights.format == "bin":
        from doctor.checks.adapter.reading import load_pickle_tensors

        return load_pickle_tensors(weights)[name].float().numpy()
    return read_info(weights.tensors[name])


def read_info(info: TensorInfo) -> np.ndarray:
    """The tensor at ``info`` (a safetensors entry) as a float32 array of its shape."""
    import numpy as np

    raw = _read_raw(info, 0, info.end - info.start)
    if info.dtype == "BF16":
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif info.dtype == "F16":
        arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif info.dtype == "F32":
        arr = np.frombuffer(raw, dtype="<f4")
    elif info.dtype == "F64":
        arr = np.frombuffer(raw, dtype="<f8").astype(np.float32)
    else:
        raise ValueError(f"{info.name}: dtype {info.dtype} is not a float type")
    return arr.reshape(info.shape)


def _read_raw(info: TensorInfo, offset: int, length: int) -> bytes:
    with open(info.file, "rb") as f:
        f.seek(info.start + offset)
        return f.read(length)


def scan_bits(weights: Weights, info: TensorInfo) -> tuple[int, bool]:
    """(count of NaN/Inf elements, whether every element is +-0) without converting to floats.

    Streams the tensor in chunks so a large ``lora_B`` never needs a float copy."""
    import numpy as np

    if weights.format == "bin":
        from doctor.checks.adapter.reading import load_pickle_tensors

        t = load_pickle_tensors(weights)[info.name]
        if not t.is_floating_point():
            return 0, bool((t == 0).all())
        import torch

        return int((~torch.isfinite(t)).sum()), bool((t == 0).all())
    if info.dtype not in _FLOAT_BITS:
        return 0, False
    view, exp_mask, mag_mask = _FLOAT_BITS[info.dtype]
    itemsize = np.dtype(view).itemsize
    total = info.end - info.start
    chunk = max(itemsize, _CHUNK - _CHUNK % itemsize)
    bad, zero = 0, True
    for offset in range(0, total, chunk):
        raw = _read_raw(info, offset, min(chunk, total - offset))
        mag = np.frombuffer(raw, dtype=view) & mag_mask   # sign dropped: one temporary
        bad += int(np.count_nonzero(mag >= exp_mask))   # exponent all ones: Inf or NaN
        if zero and mag.any():
            zero = False
    return bad, zero


def lora_delta_norm(a: Any, b: Any) -> float:
    """||B @ A||_F for A [r, in], B [out, r], as sqrt(sum((B^T B) * (A A^T))): two r x r
    products instead of an out x in matrix."""
    import numpy as np

    a64 = a.reshape(a.shape[0], -1).astype(np.float64)
    b64 = b.reshape(b.shape[0], -1).astype(np.float64)
    gram = (b64.T @ b64) * (a64 @ a64.T)
    return float(np.sqrt(max(gram.sum(), 0.0)))


def frobenius(w: Any) -> float:
    import numpy as np

    return float(np.linalg.norm(w.astype(np.float64).ravel()))

"""Streaming value scan of weights: NaN, Inf and all-zero tensors, near disk speed, no torch.

Every float format is tested on its bits through an unsigned-integer view, so bf16 and fp8 (which
numpy has no dtype for) work like fp16 and fp32: with ``a = bits & abs_mask`` (sign dropped),
a value is Inf or NaN when its exponent bits are all ones (``a >= exp_mask``: Inf when equal, NaN
when greater), and the tensor is all zero when ``max(a) == 0`` (+0 and -0). fp8 e4m3 ("fn") has no
Inf; its only NaN is ``abs == 0x7F``.

A safetensors file is read sequentially with ``readinto`` into one reused buffer (one small chunk in
memory at a time: the buffer and a same-sized scratch array), tensor by tensor in offset order;
per chunk the common case costs two read-only max reductions over data that is still in cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

DEFAULT_BUFFER = 1 << 20  # 1 MiB: stays in L2 between the read and the two numpy passes


@dataclass(frozen=True)
class FloatBits:
    view: type  # numpy unsigned dtype of the same width
    abs_mask: int
    exp_mask: int  # all exponent bits set: abs == exp_mask is Inf, abs > exp_mask is NaN
    has_inf: bool = True


FLOAT_BITS: dict[str, FloatBits] = {
    "F64": FloatBits(np.uint64, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000),
    "F32": FloatBits(np.uint32, 0x7FFF_FFFF, 0x7F80_0000),
    "C64": FloatBits(np.uint32, 0x7FFF_FFFF, 0x7F80_0000),  # two float32 per element
    "F16": FloatBits(np.uint16, 0x7FFF, 0x7C00),
    "BF16": FloatBits(np.uint16, 0x7FFF, 0x7F80),
    "F8_E5M2": FloatBits(np.uint8, 0x7F, 0x7C),
    "F8_E4M3": FloatBits(np.uint8, 0x7F, 0x7F, has_inf=False),  # e4m3fn: S.1111.111 is NaN, no Inf
}
INT_VIEWS: dict[str, type] = {"BOOL": np.uint8, "U8": np.uint8, "I8": np.uint8, "I16": np.uint16,
                              "U16": np.uint16, "I32": np.uint32, "U32": np.uint32, "I64": np.uint64,
                              "U64": np.uint64}


@dataclass
class ValueStats:
    """What the scan found in one tensor. ``all_zero`` is meaningful only when ``numel`` > 0."""

    name: str
    dtype: str
    numel: int
    file: str
    nan: int = 0
    inf: int = 0
    all_zero: bool = True
    scanned: bool = True  # False for dtypes the scan cannot read (F4, F6, F8_E8M0)


@dataclass(frozen=True)
class Span:
    """Where one tensor's bytes are: absolute [start, end) in the file."""

    name: str
    dtype: str
    numel: int
    start: int
    end: int


_SIGNED = {np.uint8: np.int8, np.uint16: np.int16, np.uint32: np.int32, np.uint64: np.int64}


class _Counter:
    """Accumulates NaN/Inf/non-zero over the chunks of one tensor.

    The common case is two read-only max reductions, no writes: through the unsigned view,
    negative values sit above the sign bit and negative Inf/NaN are the largest of them
    (``u >= sign | exp_mask``); through the signed view, negatives are below zero and positive
    Inf/NaN are the largest (``s >= exp_mask``). All zero: ``max(s) <= 0`` (no positive value)
    and ``max(u) <= sign`` (the only negative is -0). Exact counts are taken only when a chunk
    holds a non-finite value."""

    def update(self, stats: ValueStats, dtype: str, chunk: memoryview | np.ndarray) -> None:
        spec = FLOAT_BITS.get(dtype)
        if spec is None:
            view = INT_VIEWS.get(dtype)
            if view is None:
                stats.scanned = False
                return
            if stats.all_zero and np.frombuffer(chunk, dtype=view).any():
                stats.all_zero = False
            return
        u = np.frombuffer(chunk, dtype=spec.view)
        if not u.size:
            return
        s = u.view(_SIGNED[spec.view])
        sign = spec.abs_mask + 1
        umax, smax = int(u.max()), int(s.max())
        if stats.all_zero and (smax > 0 or umax > sign):
            stats.all_zero = False
        if smax >= spec.exp_mask or umax >= (sign | spec.exp_mask):
            a = np.bitwise_and(u, spec.view(spec.abs_mask))
            if spec.has_inf:
                stats.inf += int(np.count_nonzero(a == spec.exp_mask))
                stats.nan += int(np.count_nonzero(a > spec.exp_mask))
            else:
                stats.nan += int(np.count_nonzero(a == spec.exp_mask))


def scan_file(path: str | os.PathLike[str], spans: Iterable[Span] | None = None,
              buffer_bytes: int = DEFAULT_BUFFER, progress: Callable[[int], None] | None = None) -> list[ValueStats]:
    """Scan every tensor of one safetensors file (``spans`` from its header when not given).

    Raises ``ValueError`` when the header is malformed (the SEC checks report why)."""
    return list(iter_scan_file(path, spans, buffer_bytes, progress))


def iter_scan_file(path: str | os.PathLike[str], spans: Iterable[Span] | None = None,
                   buffer_bytes: int = DEFAULT_BUFFER,
                   progress: Callable[[int], None] | None = None) -> Iterator[ValueStats]:
    if spans is None:
        spans = header_spans(path)
    ordered = sorted(spans, key=lambda s: s.start)
    step = max(8, buffer_bytes - buffer_bytes % 8)  # whole elements of every width
    buf = bytearray(step)
    mv = memoryview(buf)
    counter = _Counter()
    with open(path, "rb", buffering=0) as f:
        _advise_sequential(f.fileno())
        pos = 0
        for span in ordered:
            stats = ValueStats(span.name, span.dtype, span.numel, str(path))
            if span.start != pos:
                f.seek(span.start)
                pos = span.start
            remaining = span.end - span.start
            readable = span.dtype in FLOAT_BITS or span.dtype in INT_VIEWS
            if not readable:
                stats.scanned = False
                f.seek(span.end)
                pos = span.end
                remaining = 0
            while remaining > 0:
                n = f.readinto(mv[: min(step, remaining)])
                if not n:
                    raise ValueError(f"{path}: file ends inside tensor {span.name}")
                if n % 8 and n != remaining:  # keep chunks element-aligned after a short read
                    n -= n % 8
                    f.seek(pos + n)
                counter.update(stats, span.dtype, mv[:n])
                remaining -= n
                pos += n
                if progress is not None:
                    progress(n)
            yield stats


def scan_bytes(name: str, dtype: str, data: memoryview | bytes | np.ndarray, file: str = "",
               buffer_bytes: int = DEFAULT_BUFFER) -> ValueStats:
    """Scan one tensor already in memory (a .bin tensor's bytes), chunk by chunk."""
    mv = memoryview(data).cast("B")
    spec = FLOAT_BITS.get(dtype)
    width = np.dtype(spec.view).itemsize if spec else np.dtype(INT_VIEWS.get(dtype, np.uint8)).itemsize
    stats = ValueStats(name, dtype, len(mv) // width, file)
    counter = _Counter()
    step = max(8, buffer_bytes - buffer_bytes % 8)
    for off in range(0, len(mv), step):
        counter.update(stats, dtype, mv[off: off + step])
    return stats


def header_spans(path: str | os.PathLike[str]) -> list[Span]:
    """Spans of every tensor from a safetensors header; ValueError when the header is malformed."""
    from doctor.io.safetensors_header import read_header

    header = read_header(path)
    if header.problems:
        raise ValueError(f"{path}: {header.problems[0].message}")
    return [Span(t.name, t.dtype, t.numel, t.start, t.end) for t in header.tensors.values()]


def _advise_sequential(fd: int) -> None:
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        try:
            advise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass

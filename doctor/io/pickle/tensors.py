"""Tensor names, dtypes and shapes read statically from a torch state-dict pickle.

A tensor is pickled as a call to a rebuild function whose arguments carry what we need:
``_rebuild_tensor_v2(storage, offset, size, stride, ...)`` where ``storage`` is the persistent id
``('storage', torch.HalfStorage, key, location, numel)``; ``_rebuild_tensor_v3`` adds the dtype
(float8, uint16, ...); ``_rebuild_parameter`` wraps a tensor; ``_rebuild_from_type_v2`` wraps a
subclass. Dtypes use safetensors' names (F16, BF16, F32, ...) so they compare directly with
``doctor.io.safetensors_header.TensorInfo.dtype``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from doctor.io.pickle.values import Call, Global, PersId


class TensorMeta(NamedTuple):
    dtype: str
    shape: tuple[int, ...]


STORAGE_DTYPES = {
    "FloatStorage": "F32", "DoubleStorage": "F64", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL", "ComplexFloatStorage": "C64", "ComplexDoubleStorage": "C128",
    "QInt8Storage": "QINT8", "QUInt8Storage": "QUINT8", "QInt32Storage": "QINT32",
    "QUInt4x2Storage": "QUINT4X2", "QUInt2x4Storage": "QUINT2X4", "UntypedStorage": "U8",
}
TORCH_DTYPES = {
    "float32": "F32", "float": "F32", "float64": "F64", "double": "F64", "float16": "F16", "half": "F16",
    "bfloat16": "BF16", "int64": "I64", "long": "I64", "int32": "I32", "int": "I32", "int16": "I16",
    "short": "I16", "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64",
    "bool": "BOOL", "complex64": "C64", "complex128": "C128", "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
}
_TENSOR_TYPES = {
    "FloatTensor": "F32", "DoubleTensor": "F64", "HalfTensor": "F16", "BFloat16Tensor": "BF16",
    "LongTensor": "I64", "IntTensor": "I32", "ShortTensor": "I16", "CharTensor": "I8", "ByteTensor": "U8",
    "BoolTensor": "BOOL",
}


def collect(result: Any, tar_tensors: dict[str, tuple[str, tuple[int, ...]]] | None = None) -> dict[str, TensorMeta]:
    """Flatten the (possibly nested) mapping at the top of a pickle into ``name -> TensorMeta``.
    Nested mappings give dotted names (``{"state_dict": {"w": t}}`` -> ``state_dict.w``)."""
    out: dict[str, TensorMeta] = {}
    _walk(result, "", out, tar_tensors or {}, depth=0)
    return out


def _walk(value: Any, prefix: str, out: dict[str, TensorMeta], tar: dict[str, Any], depth: int) -> None:
    items = _mapping_items(value)
    if items is None or depth > 8:
        return
    for key, item in items:
        if not isinstance(key, (str, int)):
            continue
        name = f"{prefix}{key}"
        meta = tensor_meta(item, tar)
        if meta is not None:
            out[name] = meta
        else:
            _walk(item, name + ".", out, tar, depth + 1)


def _mapping_items(value: Any) -> list[tuple[Any, Any]] | None:
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, Call) and isinstance(value.func, Global) and value.func.name in ("OrderedDict", "dict"):
        return list(value.items.items())
    return None


def tensor_meta(value: Any, tar: dict[str, Any] | None = None) -> TensorMeta | None:
    """The dtype and shape of a pickled tensor, or None when ``value`` is not one."""
    if isinstance(value, PersId) and tar and isinstance(value.pid, (str, int)) and str(value.pid) in tar:
        storage, shape = tar[str(value.pid)]
        return TensorMeta(STORAGE_DTYPES.get(storage, storage or "?"), shape)
    if not (isinstance(value, Call) and isinstance(value.func, Global) and isinstance(value.args, tuple)):
        return None
    fn, args = value.func.name, value.args
    if value.func.module == "torch._tensor" and fn == "_rebuild_from_type_v2" and len(args) >= 3:
        return tensor_meta(Call(args[0], args[2], "reduce", value.offset), tar)
    if value.func.module != "torch._utils":
        return None
    if fn in ("_rebuild_parameter", "_rebuild_parameter_with_state") and args:
        return tensor_meta(args[0], tar)
    if fn in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_qtensor") and len(args) >= 3:
        dtype = _storage_dtype(args[0])
        if fn == "_rebuild_tensor_v3" and len(args) >= 7 and isinstance(args[6], Global):
            dtype = TORCH_DTYPES.get(args[6].name, args[6].name)
        return TensorMeta(dtype, _shape(args[2]))
    if fn == "_rebuild_wrapper_subclass" and len(args) >= 3 and isinstance(args[1], Global):
        return TensorMeta(TORCH_DTYPES.get(args[1].name, args[1].name), _shape(args[2]))
    if fn == "_rebuild_meta_tensor_no_storage" and len(args) >= 2 and isinstance(args[0], Global):
        return TensorMeta(TORCH_DTYPES.get(args[0].name, args[0].name), _shape(args[1]))
    return None


def _storage_dtype(storage: Any) -> str:
    pid = storage.pid if isinstance(storage, PersId) else None
    if isinstance(pid, tuple) and len(pid) >= 2 and isinstance(pid[1], Global):
        return STORAGE_DTYPES.get(pid[1].name, pid[1].name)
    return "?"


def _shape(size: Any) -> tuple[int, ...]:
    if isinstance(size, Call) and isinstance(size.args, tuple) and size.args:  # torch.Size((...))
        size = size.args[0]
    if isinstance(size, (tuple, list)) and all(isinstance(d, int) for d in size):
        return tuple(size)
    return ()

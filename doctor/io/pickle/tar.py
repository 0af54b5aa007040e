"""torch's old tar checkpoint format (torch < 0.4), walked the way ``torch.serialization``'s
``legacy_load`` reads it: ``storages`` and ``tensors`` interleave pickles with raw data, and
every pickle in them is unpickled by torch, so every one is scanned."""

from __future__ import annotations

import struct
import tarfile
from typing import IO, Any

from doctor.io.pickle.streams import STORAGE_ELEMENT_SIZE, Stream, Walk, keep_partial, walk_extra, walk_pickles
from doctor.io.pickle.values import Global, PickleFormatError
from doctor.io.pickle.vm import run_pickle


def walk_tar_members(f: IO[bytes], walk: Walk) -> None:
    try:
        tar = tarfile.open(fileobj=f, mode="r:")
        members = tar.getmembers()
    except (tarfile.TarError, OSError, ValueError, EOFError) as e:
        walk.note("malformed", f"a tar archive that cannot be read: {e}")
        return
    storage_types: dict[Any, str] = {}
    order = {"storages": 0, "tensors": 1}  # the tensors need the storages' types
    with tar:
        for member in sorted(members, key=lambda m: order.get(m.name, 2)):
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None:
                continue
            name = member.name
            if name == "storages":
                storage_types = _walk_storages(handle, member.size, walk)
            elif name == "tensors":
                _walk_tensors(handle, member.size, walk, storage_types)
            else:
                head = handle.read(1)
                handle.seek(0)
                if name in ("pickle", "sys_info") or head == b"\x80":
                    walk_pickles(handle, 0, member.size, name, walk)  # type: ignore[arg-type]
    if not any(s.entry == "pickle" for s in walk.streams):
        walk.format, walk.detail = "tar", "a tar archive (not a torch checkpoint: no 'pickle' member)"


def _load(handle: IO[bytes], pos: int, end: int, entry: str, walk: Walk) -> tuple[Any, int] | None:
    try:
        run = run_pickle(handle, pos, end)
    except PickleFormatError as e:
        keep_partial(walk, e, entry, len([s for s in walk.streams if s.entry == entry]) + 1)
        walk.note("malformed", f"not a well-formed pickle: {e} at byte {e.offset}", entry, e.offset)
        return None
    walk.streams.append(Stream(entry, len([s for s in walk.streams if s.entry == entry]) + 1, run))
    return run.result, run.end


def _walk_storages(handle: IO[bytes], size: int, walk: Walk) -> dict[Any, str]:
    """Returns storage key -> storage type name (for the tensors member)."""
    types: dict[Any, str] = {}
    got = _load(handle, 0, size, "storages", walk)
    if got is None:
        return types
    count, pos = got
    if not isinstance(count, int) or count < 0:
        walk.note("malformed", "tar checkpoint: the storage count is not a number", "storages", 0)
        return types
    for _ in range(count):
        got = _load(handle, pos, size, "storages", walk)
        if got is None:
            return types
        args, pos = got
        kind = args[2].name if isinstance(args, tuple) and len(args) == 3 and isinstance(args[2], Global) else ""
        element = STORAGE_ELEMENT_SIZE.get(kind.removesuffix("Storage"))
        raw = handle.read(8)
        if element is None or len(raw) != 8:
            walk.note("malformed", "tar checkpoint: a storage record is not (key, location, storage type)", "storages", pos)
            return types
        (numel,) = struct.unpack("<q", raw)
        pos += 8 + max(numel, 0) * element
        if numel < 0 or pos > size:
            walk.note("malformed", "tar checkpoint: storage data runs past the member's end", "storages", pos)
            return types
        if isinstance(args[0], (str, int)):
            types[args[0]] = kind
        handle.seek(pos)
    got = _load(handle, pos, size, "storages", walk)  # storage views
    if got is not None:
        walk_extra(handle, got[1], size, "storages", walk)
    return types


def _walk_tensors(handle: IO[bytes], size: int, walk: Walk, storage_types: dict[Any, str]) -> None:
    got = _load(handle, 0, size, "tensors", walk)
    if got is None:
        return
    count, pos = got
    if not isinstance(count, int) or count < 0:
        walk.note("malformed", "tar checkpoint: the tensor count is not a number", "tensors", 0)
        return
    for _ in range(count):
        got = _load(handle, pos, size, "tensors", walk)
        if got is None:
            return
        args, pos = got
        handle.seek(pos)
        raw = handle.read(8)
        if len(raw) != 8 or not (isinstance(args, tuple) and len(args) == 3 and isinstance(args[0], (str, int))
                                 and isinstance(args[1], (str, int))):
            walk.note("malformed", "tar checkpoint: a tensor record is truncated", "tensors", pos)
            return
        (ndim,) = struct.unpack("<i", raw[:4])
        body = handle.read(16 * max(ndim, 0) + 8)
        if ndim < 0 or len(body) != 16 * ndim + 8:
            walk.note("malformed", "tar checkpoint: a tensor record is truncated", "tensors", pos)
            return
        shape = struct.unpack(f"<{ndim}q", body[: 8 * ndim])
        pos += 8 + len(body)
        walk.tar_tensors[str(args[0])] = (storage_types.get(args[1], ""), tuple(shape))
    walk_extra(handle, pos, size, "tensors", walk)

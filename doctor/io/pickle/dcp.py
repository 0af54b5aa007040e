"""torch.distributed.checkpoint (DCP) saves: FSDP's ``SHARDED_STATE_DICT`` checkpoints (accelerate and
the Trainer write ``pytorch_model_fsdp_N/`` and ``optimizer_N/``) and anything ``dcp.save`` wrote.

Read in torch's ``distributed/checkpoint/filesystem.py`` and ``default_planner.py``:

- ``FileSystemReader.read_metadata`` opens ``.metadata`` (``__{rank}.metadata`` when ranks do not
  coordinate) with a plain ``pickle.load``: whatever it imports runs on resume. It is scanned as a
  pickle (``containers.walk_file``) with the DCP metadata classes as its vetted extras.
- each ``*.distcp`` file is a run of ``torch.save`` archives, one per saved item, at the ``offset``
  and ``length`` the metadata's ``_StorageInfo`` records give. Tensors are read back with
  ``torch.load(weights_only=True)``; every other value (optimizer steps, param groups, anything not a
  tensor) with ``DefaultLoadPlanner.load_bytes``, which is ``torch.load(weights_only=False)``.

So every item archive is walked like a ``torch.save`` file. The items are found from the metadata,
read statically here (never unpickled); when no metadata beside the file places anything in it (none
there, unreadable, or replaced: torch cannot load the folder then either) they are found by scanning
for the archives' end-of-central-directory records, which reads the whole file.
"""

from __future__ import annotations

import io
import mmap
import struct
import zipfile
from pathlib import Path
from typing import IO, Any

from doctor.files import DCP_METADATA_RE
from doctor.io.pickle.values import Call, Global, PickleFormatError
from doctor.io.pickle.vm import run_pickle

_EOCD = b"PK\x05\x06"
_SPAN_LIMIT = 1 << 20  # items listed in a metadata file: more is not a real save, stop collecting


class Window(io.RawIOBase):
    """Bytes [start, start + length) of an open file, as a file of their own (for ``zipfile``)."""

    def __init__(self, f: IO[bytes], start: int, length: int) -> None:
        super().__init__()
        self.f, self.start, self.length, self.pos = f, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.length - self.pos)
        if n <= 0:
            return 0
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


def metadata_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if DCP_METADATA_RE.match(p.name) and p.is_file())
    except OSError:
        return []


def item_spans(distcp: Path) -> list[tuple[int, int]] | None:
    """(offset, length) of every item the metadata beside ``distcp`` places in it, in file order;
    None when no metadata file there can be read statically."""
    spans: set[tuple[int, int]] = set()
    readable = False
    for meta in metadata_files(distcp.parent):
        try:
            size = meta.stat().st_size
            with meta.open("rb") as f:
                run = run_pickle(f, 0, size)
        except (OSError, PickleFormatError):
            continue
        readable = True
        _collect(run.result, distcp.name, spans, set())
    return sorted(spans) if readable else None


def _collect(value: Any, name: str, out: set[tuple[int, int]], seen: set[int]) -> None:
    stack = [value]
    while stack and len(out) < _SPAN_LIMIT:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if isinstance(v, Call):
            state = v.state
            if isinstance(v.func, Global) and v.func.name == "_StorageInfo" and isinstance(state, dict):
                off, length = state.get("offset"), state.get("length")
                if state.get("relative_path") == name and type(off) is int and type(length) is int:
                    out.add((off, length))
            stack.extend((v.args, v.state, v.list_items, list(v.items.items())))
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)


def archive_spans(path: Path) -> list[tuple[int, int]]:
    """The ``torch.save`` archives of a ``.distcp`` found without metadata: each one ends with an
    end-of-central-directory record whose sizes say where it starts."""
    spans: list[tuple[int, int]] = []
    size = path.stat().st_size
    if size < 22:
        return spans
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        start = 0
        at = m.find(_EOCD, start)
        while at != -1:
            end = at + 22 + (struct.unpack_from("<H", m, at + 20)[0] if at + 22 <= size else 0)
            try:
                with zipfile.ZipFile(Window(f, start, min(end, size) - start)):
                    pass
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error):
                at = m.find(_EOCD, at + 1)  # the marker's bytes inside tensor data, not a record
                continue
            spans.append((start, min(end, size) - start))
            start = end
            at = m.find(_EOCD, start)
    return spans


def open_item(f: IO[bytes], offset: int, length: int) -> zipfile.ZipFile:
    """One item's archive; raises ``zipfile.BadZipFile`` (and friends) like ``zipfile`` does."""
    return zipfile.ZipFile(Window(f, offset, length))


def saved_keys(folder: Path) -> list[str] | None:
    """The state-dict keys a DCP folder's metadata lists (``Metadata.state_dict_metadata``), read
    statically; None when there is no metadata or it does not read as DCP metadata."""
    keys: list[str] = []
    found = False
    for meta in metadata_files(folder):
        try:
            size = meta.stat().st_size
            with meta.open("rb") as f:
                run = run_pickle(f, 0, size)
        except (OSError, PickleFormatError):
            continue
        root = run.result
        if not (isinstance(root, Call) and isinstance(root.func, Global) and root.func.name == "Metadata"):
            continue
        entries = root.state.get("state_dict_metadata") if isinstance(root.state, dict) else None
        if isinstance(entries, dict):
            found = True
            keys += [k for k in entries if isinstance(k, str)]
    return keys if found else None

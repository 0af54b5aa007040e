"""Static scanning of pickle files (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``): nothing is
ever imported, called or unpickled.

    result = scan("non_lora_trainables.bin")
    if not result.ok:
        for issue in result.issues: print(issue.where, issue.message)
    infos = tensor_infos("pytorch_model.bin")          # {name: TensorMeta(dtype, shape)}
    state = safe_load("mm_projector.bin")              # scan, then torch.load(weights_only=True)

Every pickle in every container is walked (``doctor.io.pickle.containers``) by an opcode machine
with inert stand-ins (``doctor.io.pickle.vm``), and every imported name is judged against an
ALLOW-list (``doctor.io.pickle.allow``): torch's own ``weights_only`` list plus vetted extras for the Trainer's
``training_args.bin``, ``rng_state*.pth`` and DeepSpeed files. Imports whose name is only known at
load time (``STACK_GLOBAL`` on computed strings, extension codes) and calls of computed
callables are findings of their own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from doctor.errors import ArtifactError
from doctor.files import PICKLE_SUFFIXES
from doctor.io.pickle.allow import is_dangerous, role_of, verdict
from doctor.io.pickle.containers import walk_file
from doctor.io.pickle.streams import Stream, Walk
from doctor.io.pickle.tensors import TensorMeta, collect

if TYPE_CHECKING:
    import torch

PICKLE_FORMATS = frozenset({"torch-zip", "torch-legacy", "torch-tar", "pickle", "zip-pickle", "dcp"})
_USES = {"call": "called", "new": "instantiated", "build": "given state"}

__all__ = ["ScanIssue", "ScanResult", "TensorMeta", "UnsafePickleError", "scan", "tensor_infos", "safe_load",
           "inert_object", "torch_load_is_safe", "PICKLE_FORMATS", "PICKLE_SUFFIXES"]


@dataclass(frozen=True)
class ScanIssue:
    """One problem. ``kind``: disallowed-global, misused-global, unvetted-global, unresolved-global,
    indirect-call, malformed, wrong-format, polyglot, trailing-data, unreadable."""

    kind: str
    message: str
    entry: str | None = None
    offset: int | None = None
    global_name: str | None = None
    severity: str = "error"

    @property
    def where(self) -> str:
        parts = [f"entry {self.entry}"] if self.entry else []
        if self.offset is not None:
            parts.append(f"byte {self.offset:,}")
        return ", ".join(parts)


@dataclass
class ScanResult:
    path: str
    format: str
    detail: str = ""
    role: str | None = None
    issues: list[ScanIssue] = field(default_factory=list)
    globals: list[str] = field(default_factory=list)
    pickles: int = 0

    @property
    def ok(self) -> bool:
        """No error-level issue: safe to hand to ``torch.load(weights_only=True)``."""
        return not any(i.severity == "error" for i in self.issues)

    @property
    def is_pickle(self) -> bool:
        return self.format in PICKLE_FORMATS


class UnsafePickleError(ArtifactError):
    """``safe_load`` refused a file; the message names the file and every reason."""


def scan(path: str | os.PathLike[str], role: str | None = None) -> ScanResult:
    """Scan every pickle in ``path`` statically. Never raises for bad content; an unreadable file
    is an ``unreadable`` issue. ``role`` defaults to what the file name says (``role_of``)."""
    path = str(path)
    role = role if role is not None else role_of(path)
    try:
        walk = walk_file(path)
    except OSError as e:
        return ScanResult(path, "unreadable", role=role,
                          issues=[ScanIssue("unreadable", f"cannot read the file: {e.strerror or e}")])
    result = ScanResult(path, walk.format, walk.detail, role, pickles=len(walk.streams))
    _judge(walk, role, result)
    for kind, message, entry, offset, severity in walk.notes:
        result.issues.append(ScanIssue(kind, message, entry, offset, severity=severity))
    mismatch = _format_mismatch(path, walk)
    if mismatch:
        result.issues.insert(0, mismatch)
    return result


def _judge(walk: Walk, role: str | None, result: ScanResult) -> None:
    seen: set[tuple[str | None, str, str]] = set()
    names: set[str] = set()
    for stream in walk.streams:
        for g in stream.run.globals:
            names.add(g.full)
            outcome = verdict(g.full, g.uses, role)
            if outcome is None or (stream.entry, g.full, outcome) in seen:
                continue
            seen.add((stream.entry, g.full, outcome))
            result.issues.append(_global_issue(stream, g.full, g.opcode, g.offset, g.uses, outcome, role))
        for p in stream.run.problems:
            result.issues.append(ScanIssue(p.kind, f"{_pickle_label(stream)}: {p.detail}", stream.entry, p.offset))
    result.globals = sorted(names)


def _global_issue(stream: Stream, full: str, opcode: str, offset: int, uses: set[str], outcome: str,
                  role: str | None) -> ScanIssue:
    how = ", ".join(_USES[u] for u in sorted(uses) if u in _USES) or "referenced"
    label = _pickle_label(stream)
    if outcome == "unvetted":
        return ScanIssue("unvetted-global", f"{label} instantiates {full} ({opcode}), a class that is not on the "
                         "vetted list for training_args.bin; it is only instantiated, never called",
                         stream.entry, offset, full, "warning")
    if outcome == "misused":
        return ScanIssue("misused-global", f"{label} uses {full} ({opcode}; {how}) in a way a {role} file never "
                         "does", stream.entry, offset, full)
    danger = ("a code-execution primitive: torch.load(weights_only=False) or pickle.load would run it"
              if is_dangerous(full) else "not on the allow-list of torch's weights_only loader")
    return ScanIssue("disallowed-global", f"{label} imports {full} ({opcode}; {how}): {danger}",
                     stream.entry, offset, full)


def _pickle_label(stream: Stream) -> str:
    extra = " (after the data a loader reads)" if stream.extra else ""
    return f"pickle #{stream.index}{extra}"


def _format_mismatch(path: str, walk: Walk) -> ScanIssue | None:
    suffix = PurePath(path).suffix.lower()
    # a container we could not identify (a broken zip) is SEC004's to report, not a mismatch
    if suffix in PICKLE_SUFFIXES and walk.format not in PICKLE_FORMATS and walk.detail:
        severity = "warning" if walk.format == "safetensors" else "error"
        hint = {"safetensors": ": rename it to .safetensors",
                "lfs-pointer": ": run `git lfs pull` or download the real file"}.get(walk.format, "")
        return ScanIssue("wrong-format", f"named {suffix} but it is {walk.detail}, not a pickle{hint}",
                         severity=severity)
    if suffix == ".safetensors" and (walk.format in PICKLE_FORMATS or walk.format.startswith("zip")):
        return ScanIssue("wrong-format", f"named .safetensors but it is {walk.detail}: safetensors loaders "
                         "reject it, and torch.load would unpickle it")
    return None


def tensor_infos(path: str | os.PathLike[str]) -> dict[str, TensorMeta]:
    """Tensor names, dtypes (safetensors names: F16, BF16, F32, ...) and shapes of a torch
    checkpoint, read statically (no torch import, nothing executed; safe on any file).

    Nested mappings give dotted names. Raises ``ArtifactError`` when the file is not a readable
    torch checkpoint or pickle."""
    path = str(path)
    try:
        walk = walk_file(path)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read: {e.strerror or e}") from None
    main = _main_stream(walk)
    if main is None:
        reason = next((m for k, m, *_ in walk.notes if k == "malformed"), walk.detail or walk.format)
        raise ArtifactError(f"{path}: no readable state-dict pickle ({reason})")
    return collect(main.run.result, walk.tar_tensors)


def inert_object(path: str | os.PathLike[str]) -> Any:
    """The saved object of a pickle file as the scanner's inert stand-ins: dicts, lists, tuples and
    plain values as themselves; imports as ``Global`` (``.module``, ``.name``); calls and object
    builds as ``Call`` (``.func``, ``.args``, ``.state`` = the BUILD state, ``.items``). Nothing is
    imported or called, so it is safe on any file; check ``scan(path).ok`` before trusting it.
    Raises ``ArtifactError`` when there is no readable main pickle."""
    path = str(path)
    try:
        walk = walk_file(path)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read: {e.strerror or e}") from None
    main = _main_stream(walk)
    if main is None:
        raise ArtifactError(f"{path}: no readable pickle ({walk.detail or walk.format})")
    return main.run.result


def _main_stream(walk: Walk) -> Stream | None:
    """The pickle that holds the saved object, as torch.load picks it."""
    wanted: dict[str, tuple[str | None, int]] = {"torch-legacy": (None, 4), "pickle": (None, 1),
                                                 "torch-tar": ("pickle", 1)}
    for s in walk.streams:
        if walk.format in ("torch-zip", "zip-pickle"):
            if s.entry and re.search(r"(^|/)data\.pkl$", s.entry) and s.index == 1:
                return s
        elif (s.entry, s.index) == wanted.get(walk.format):
            return s
    return None


def torch_load_is_safe(version: str | None = None) -> tuple[bool, str | None]:
    """torch.load is exploitable before 2.6 even with weights_only=True (CVE-2025-32434)."""
    if version is None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            version = dist_version("torch")
        except PackageNotFoundError:
            return False, "torch is not installed"
    m = re.match(r"(\d+)\.(\d+)", version)
    if m and (int(m.group(1)), int(m.group(2))) < (2, 6):
        return False, (f"torch {version} is older than 2.6: torch.load can run code even with weights_only=True "
                       "(CVE-2025-32434); upgrade torch, or convert the file to safetensors on a machine that has")
    return True, None


def safe_load(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, torch.Tensor]:
    """Scan ``path``; only if the scan is clean, ``torch.load(..., weights_only=True)`` it and
    return its tensors (nested mappings flattened to dotted names, non-tensors dropped).
    Raises ``UnsafePickleError`` naming every reason it refused."""
    path = str(path)
    result = scan(path, role="")  # weights only: no Trainer extras
    errors = [i for i in result.issues if i.severity == "error"]
    if errors:
        lines = "\n".join(f"  - {i.message}" + (f" ({i.where})" if i.where else "") for i in errors[:20])
        raise UnsafePickleError(f"{path}: refusing to load:\n{lines}")
    if result.format == "torch-tar":
        raise UnsafePickleError(f"{path}: torch's old tar format cannot be loaded with weights_only=True")
    if not result.is_pickle:
        raise UnsafePickleError(f"{path}: not a pickle ({result.detail})")
    import torch

    ok, why = torch_load_is_safe(torch.__version__)
    if not ok:
        raise UnsafePickleError(f"{path}: refusing torch.load: {why}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=result.format == "torch-zip")
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise UnsafePickleError(f"{path}: torch.load(weights_only=True) failed: {type(e).__name__}: {e}") from None
    return _flatten(obj, torch)


def _flatten(obj: Any, torch: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor) and prefix:
        out[prefix[:-1]] = obj
    elif isinstance(obj, dict) and depth <= 8:
        for k, v in obj.items():
            out.update(_flatten(v, torch, f"{prefix}{k}.", depth + 1))
    return out

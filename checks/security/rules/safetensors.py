"""SEC1xx: one check per safetensors reference rule (safetensors ``src/tensor.rs``), so each
violation has its own stable code. The header is read by ``doctor.io.safetensors_header`` (pure
Python, header only, never a large allocation); each ``HeaderProblem.rule`` maps to one check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doctor.checks.security.rules.pickles import ARTIFACTS, _looks_pickled, ckp_owns_lfs_pointer

from doctor.artifacts import Artifact
from doctor.findings import Location, Severity
from doctor.registry import Check, fixture, register

_WHAT = ("Reads the 8-byte length and the JSON header of every .safetensors file in the artifact "
         "(never the tensor data) and applies the reference implementation's rule: {what}")
_FIX_REDOWNLOAD = "Download or save the file again; compare its size and sha256 with the source."

# code, rule, name, title, what, why, example, fix, severity
RULES: tuple[tuple[str, str, str, str, str, str, str, str, Severity], ...] = (
    ("SEC101", "unreadable", "safetensors-unreadable", "A .safetensors file cannot be read.",
     "the file must be readable.", "Loaders fail with a permission or I/O error before reading anything.",
     "`model.safetensors: cannot read file: Permission denied`.", "Fix the file's permissions or re-copy it.",
     Severity.ERROR),
    ("SEC102", "file-too-small", "safetensors-too-small", "A .safetensors file is shorter than its 8-byte header length.",
     "a file starts with an 8-byte little-endian header length.",
     "safetensors raises `HeaderTooSmall`; the file is empty or cut off.", "A 0-byte `adapter_model.safetensors`.",
     _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC103", "lfs-pointer", "safetensors-lfs-pointer", "A .safetensors file is a Git-LFS pointer, not the weights.",
     "the file must not be a Git-LFS pointer text file. In a model folder the pointers among its own "
     "files are CKP203's (one finding for the folder); SEC103 reports them everywhere else.",
     "A clone without `git lfs` leaves 130-byte pointer files; loaders fail with `HeaderTooLarge` or "
     "`Error while deserializing header`.", "`version https://git-lfs.github.com/spec/v1` in model.safetensors.",
     "Run `git lfs install && git lfs pull`, or download with `huggingface-cli download`.", Severity.ERROR),
    ("SEC104", "header-too-large", "header-too-large", "The declared safetensors header length exceeds 100,000,000 bytes.",
     "the header length is at most 100,000,000 bytes (`HeaderTooLarge`).",
     "safetensors refuses the file; a huge length also means the file is corrupt or not safetensors at all.",
     "The first 8 bytes decode to 7,310,593,858,020,254,331.", _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC105", "header-truncated", "header-truncated", "The safetensors header runs past the end of the file.",
     "8 + header length must fit in the file (`InvalidHeaderLength`).",
     "The download or save was interrupted; nothing in the file can be trusted.",
     "A 4,096-byte file declaring a 50,000-byte header.", _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC106", "header-not-utf8", "header-not-utf8", "The safetensors header is not UTF-8.",
     "the header bytes must be UTF-8 (`InvalidHeader`).", "safetensors refuses the file.",
     "A header containing the byte 0xff.", _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC107", "header-not-json", "header-not-json", "The safetensors header is not valid JSON.",
     "the header must parse as JSON (`InvalidHeaderDeserialization`).", "safetensors refuses the file.",
     "A header cut in the middle of a tensor entry.", _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC108", "header-not-object", "header-not-object", "The safetensors header is not a JSON object.",
     "the header must be a JSON object mapping tensor names to entries.", "safetensors refuses the file.",
     "A header `[1, 2, 3]`.", _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC109", "duplicate-name", "duplicate-tensor-name", "A tensor name appears twice in a safetensors header.",
     "tensor names must be unique.", "A parser differential: the reference reader (serde, and Python's `json`) "
     "silently keeps the last entry, first-wins readers keep the other, so two tools load different tensors under "
     "one name and a scanner can be shown a harmless copy; when the copies differ the loaded model is silently "
     "not the one another reader sees. An error: no writer produces it.",
     "`{\"w\": {...}, \"w\": {...}}`.", "Re-save the state dict with `safetensors.torch.save_file`.", Severity.ERROR),
    ("SEC110", "nul-in-name", "nul-in-tensor-name", "A tensor name contains a NUL byte.",
     "tensor names must not contain NUL.", "C-string based readers truncate the name, so two tensors can collide.",
     "`\"model.layers.0\\u0000.weight\"`.", "Re-save the state dict with clean tensor names.", Severity.WARNING),
    ("SEC111", "bad-entry", "bad-tensor-entry", "A safetensors header entry is not a tensor description.",
     "every entry except `__metadata__` is an object with `dtype`, `shape` and `data_offsets`.",
     "safetensors refuses the file (`InvalidHeaderDeserialization`).", "`\"w\": 3`.", _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC112", "bad-dtype", "bad-tensor-dtype", "A tensor has a dtype safetensors does not know.",
     "`dtype` is one of BOOL, U8, I8, F8_*, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64, F4, F6_*.",
     "safetensors refuses the file; an unknown dtype also makes the byte size unknowable.", "`\"dtype\": \"FP16\"`.",
     "Re-save with a supported dtype (`F16`, not `FP16`).", Severity.ERROR),
    ("SEC113", "bad-shape", "bad-tensor-shape", "A tensor's shape is not a list of non-negative integers.",
     "`shape` is a list of non-negative integers.", "safetensors refuses the file.", "`\"shape\": [4, -1]`.",
     _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC114", "bad-offsets", "bad-data-offsets", "A tensor's data_offsets are not [begin, end] with begin <= end.",
     "`data_offsets` is two non-negative integers, begin <= end.", "safetensors refuses the file (`InvalidOffset`).",
     "`\"data_offsets\": [64, 32]`.", _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC115", "offsets-gap", "data-offsets-gap", "Tensor data in a safetensors file leaves a gap.",
     "sorted by offset, each tensor starts where the previous ended (`InvalidOffset`).",
     "safetensors refuses the file; hidden bytes between tensors are a smuggling channel.",
     "`a: [0, 16]`, `b: [32, 48]`.", "Re-save the state dict with `safetensors.torch.save_file`.", Severity.ERROR),
    ("SEC116", "offsets-overlap", "data-offsets-overlap", "Two tensors' data overlap in a safetensors file.",
     "tensor byte ranges must not overlap (`InvalidOffset`).",
     "safetensors refuses the file; overlapping ranges make two tensors alias the same bytes.",
     "`a: [0, 16]`, `b: [8, 24]`.", "Re-save the state dict with `safetensors.torch.save_file`.", Severity.ERROR),
    ("SEC117", "offsets-outside-file", "data-offsets-outside-file", "A tensor's data lies past the end of the file.",
     "every tensor ends inside the file.", "safetensors refuses the file when it opens it: the file is truncated.",
     "A 1 GB tensor in a 600 MB file.", _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC118", "size-mismatch", "tensor-size-mismatch", "A tensor's byte range does not match its dtype and shape.",
     "end - begin = number of elements x dtype size (`TensorInvalidInfo`).", "safetensors refuses the file.",
     "F16 [4, 4] (32 bytes) with `data_offsets` [0, 64].", _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC119", "file-length-mismatch", "file-length-mismatch", "The file is longer or shorter than its header says.",
     "the last tensor ends exactly at the end of the file (`MetadataIncompleteBuffer`).",
     "safetensors refuses the file: truncated, or with trailing bytes appended.",
     "A header describing 4,096 data bytes in a file holding 4,100.", _FIX_REDOWNLOAD, Severity.ERROR),
    ("SEC120", "metadata-not-strings", "metadata-not-strings", "`__metadata__` is not a map of strings to strings.",
     "`__metadata__` maps strings to strings.",
     "safetensors refuses the file; transformers also needs `{\"format\": \"pt\"}` there.",
     "`\"__metadata__\": {\"format\": \"pt\", \"step\": 100}`.", "Re-save with string metadata values (`\"100\"`).",
     Severity.ERROR),
)
KNOWN_RULES = frozenset(r[1] for r in RULES)


@fixture
def sec_safetensors_headers(sec_files: list[str]) -> dict[str, Any]:
    from doctor.io.safetensors_header import read_header

    return {p: read_header(p) for p in sec_files if p.lower().endswith(".safetensors") and not _looks_pickled(p)}


SHOWN_TENSORS = 3  # tensors named in a finding that stands for many


class _SafetensorsRule(Check):
    """Base: one finding per rule and file (one cause, once), with the count and the first few
    tensors when the rule is broken by many (a truncated file puts every later tensor outside it)."""

    rule: str = ""
    artifacts = ARTIFACTS

    def run(self, sec_safetensors_headers: dict[str, Any], artifact: Artifact) -> Iterator:
        for path, header in sec_safetensors_headers.items():
            hits = [p for p in header.problems
                    if p.rule == self.rule or (not self.rule and p.rule not in KNOWN_RULES)]
            if self.rule == "lfs-pointer" and ckp_owns_lfs_pointer(path, artifact):
                continue
            for rule in dict.fromkeys(p.rule for p in hits):
                same = [p for p in hits if p.rule == rule]
                first = same[0]
                message = f"{Path(path).name}: {first.message}"
                if len(same) > 1:
                    tensors = [p.tensor for p in same if p.tensor]
                    shown = ", ".join(repr(t) for t in tensors[:SHOWN_TENSORS])
                    more = f", ... ({len(tensors) - SHOWN_TENSORS} more)" if len(tensors) > SHOWN_TENSORS else ""
                    message += f"; {len(same)} tensors in all break this rule" + (f": {shown}{more}" if shown else "")
                yield self.finding(message, path=path,
                                   location=Location(tensor=first.tensor) if first.tensor else None)


def _doc(title: str, what: str, why: str, example: str, fix: str) -> str:
    return (f"{title}\n\n## What it does\n{_WHAT.format(what=what)}\n\n## Why is this bad?\n{why}\n\n"
            f"## Example\n{example}\n\n## How to fix\n{fix}\n")


def _make(code: str, rule: str, name: str, title: str, what: str, why: str, example: str, fix: str,
          severity: Severity) -> type[Check]:
    cls_name = "".join(part.capitalize() for part in name.split("-"))
    attrs = {"__doc__": _doc(title, what, why, example, fix), "code": code, "name": name, "rule": rule,
             "severity": severity, "__module__": __name__}
    return register(type(cls_name, (_SafetensorsRule,), attrs))


SAFETENSORS_CHECKS = [_make(*row) for row in RULES]
MalformedSafetensors = register(type("MalformedSafetensors", (_SafetensorsRule,), {
    "__doc__": _doc("A .safetensors file breaks a structural rule not covered by SEC101-SEC120.",
                    "any other problem the header reader reports.",
                    "safetensors refuses files that break its structural rules.",
                    "A problem reported by a newer header reader.", _FIX_REDOWNLOAD),
    "code": "SEC100", "name": "malformed-safetensors", "rule": "", "severity": Severity.ERROR, "__module__": __name__,
}))

__all__ = ["SAFETENSORS_CHECKS", "MalformedSafetensors", "RULES", "KNOWN_RULES"]

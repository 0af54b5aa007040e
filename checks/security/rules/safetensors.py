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


@register
class SafetensorsUnreadable(_SafetensorsRule):
    """A .safetensors file cannot be read.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: the file must be readable.

    ## Why is this bad?
    Loaders fail with a permission or I/O error before reading anything.

    ## Example
    `model.safetensors: cannot read file: Permission denied`.

    ## How to fix
    Fix the file's permissions or re-copy it.
    """

    code = "SEC101"
    name = "safetensors-unreadable"
    rule = "unreadable"
    severity = Severity.ERROR


@register
class SafetensorsTooSmall(_SafetensorsRule):
    """A .safetensors file is shorter than its 8-byte header length.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: a file starts with an 8-byte little-
    endian header length.

    ## Why is this bad?
    safetensors raises `HeaderTooSmall`; the file is empty or cut off.

    ## Example
    A 0-byte `adapter_model.safetensors`.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC102"
    name = "safetensors-too-small"
    rule = "file-too-small"
    severity = Severity.ERROR


@register
class SafetensorsLfsPointer(_SafetensorsRule):
    """A .safetensors file is a Git-LFS pointer, not the weights.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: the file must not be a Git-LFS pointer
    text file. In a model folder the pointers among its own files are CKP203's (one finding for the
    folder); SEC103 reports them everywhere else.

    ## Why is this bad?
    A clone without `git lfs` leaves 130-byte pointer files; loaders fail with `HeaderTooLarge` or
    `Error while deserializing header`.

    ## Example
    `version https://git-lfs.github.com/spec/v1` in model.safetensors.

    ## How to fix
    Run `git lfs install && git lfs pull`, or download with `huggingface-cli download`.
    """

    code = "SEC103"
    name = "safetensors-lfs-pointer"
    rule = "lfs-pointer"
    severity = Severity.ERROR


@register
class HeaderTooLarge(_SafetensorsRule):
    """The declared safetensors header length exceeds 100,000,000 bytes.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: the header length is at most
    100,000,000 bytes (`HeaderTooLarge`).

    ## Why is this bad?
    safetensors refuses the file; a huge length also means the file is corrupt or not safetensors at
    all.

    ## Example
    The first 8 bytes decode to 7,310,593,858,020,254,331.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC104"
    name = "header-too-large"
    rule = "header-too-large"
    severity = Severity.ERROR


@register
class HeaderTruncated(_SafetensorsRule):
    """The safetensors header runs past the end of the file.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: 8 + header length must fit in the file
    (`InvalidHeaderLength`).

    ## Why is this bad?
    The download or save was interrupted; nothing in the file can be trusted.

    ## Example
    A 4,096-byte file declaring a 50,000-byte header.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC105"
    name = "header-truncated"
    rule = "header-truncated"
    severity = Severity.ERROR


@register
class HeaderNotUtf8(_SafetensorsRule):
    """The safetensors header is not UTF-8.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: the header bytes must be UTF-8
    (`InvalidHeader`).

    ## Why is this bad?
    safetensors refuses the file.

    ## Example
    A header containing the byte 0xff.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC106"
    name = "header-not-utf8"
    rule = "header-not-utf8"
    severity = Severity.ERROR


@register
class HeaderNotJson(_SafetensorsRule):
    """The safetensors header is not valid JSON.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: the header must parse as JSON
    (`InvalidHeaderDeserialization`).

    ## Why is this bad?
    safetensors refuses the file.

    ## Example
    A header cut in the middle of a tensor entry.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC107"
    name = "header-not-json"
    rule = "header-not-json"
    severity = Severity.ERROR


@register
class HeaderNotObject(_SafetensorsRule):
    """The safetensors header is not a JSON object.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: the header must be a JSON object
    mapping tensor names to entries.

    ## Why is this bad?
    safetensors refuses the file.

    ## Example
    A header `[1, 2, 3]`.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC108"
    name = "header-not-object"
    rule = "header-not-object"
    severity = Severity.ERROR


@register
class DuplicateTensorName(_SafetensorsRule):
    """A tensor name appears twice in a safetensors header.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: tensor names must be unique.

    ## Why is this bad?
    A parser differential: the reference reader (serde, and Python's `json`) silently keeps the last
    entry, first-wins readers keep the other, so two tools load different tensors under one name and a
    scanner can be shown a harmless copy; when the copies differ the loaded model is silently not the
    one another reader sees. An error: no writer produces it.

    ## Example
    `{"w": {...}, "w": {...}}`.

    ## How to fix
    Re-save the state dict with `safetensors.torch.save_file`.
    """

    code = "SEC109"
    name = "duplicate-tensor-name"
    rule = "duplicate-name"
    severity = Severity.ERROR


@register
class NulInTensorName(_SafetensorsRule):
    """A tensor name contains a NUL byte.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: tensor names must not contain NUL.

    ## Why is this bad?
    C-string based readers truncate the name, so two tensors can collide.

    ## Example
    `"model.layers.0\u0000.weight"`.

    ## How to fix
    Re-save the state dict with clean tensor names.
    """

    code = "SEC110"
    name = "nul-in-tensor-name"
    rule = "nul-in-name"
    severity = Severity.WARNING


@register
class BadTensorEntry(_SafetensorsRule):
    """A safetensors header entry is not a tensor description.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: every entry except `__metadata__` is
    an object with `dtype`, `shape` and `data_offsets`.

    ## Why is this bad?
    safetensors refuses the file (`InvalidHeaderDeserialization`).

    ## Example
    `"w": 3`.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC111"
    name = "bad-tensor-entry"
    rule = "bad-entry"
    severity = Severity.ERROR


@register
class BadTensorDtype(_SafetensorsRule):
    """A tensor has a dtype safetensors does not know.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: `dtype` is one of BOOL, U8, I8, F8_*,
    I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64, F4, F6_*.

    ## Why is this bad?
    safetensors refuses the file; an unknown dtype also makes the byte size unknowable.

    ## Example
    `"dtype": "FP16"`.

    ## How to fix
    Re-save with a supported dtype (`F16`, not `FP16`).
    """

    code = "SEC112"
    name = "bad-tensor-dtype"
    rule = "bad-dtype"
    severity = Severity.ERROR


@register
class BadTensorShape(_SafetensorsRule):
    """A tensor's shape is not a list of non-negative integers.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: `shape` is a list of non-negative
    integers.

    ## Why is this bad?
    safetensors refuses the file.

    ## Example
    `"shape": [4, -1]`.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC113"
    name = "bad-tensor-shape"
    rule = "bad-shape"
    severity = Severity.ERROR


@register
class BadDataOffsets(_SafetensorsRule):
    """A tensor's data_offsets are not [begin, end] with begin <= end.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: `data_offsets` is two non-negative
    integers, begin <= end.

    ## Why is this bad?
    safetensors refuses the file (`InvalidOffset`).

    ## Example
    `"data_offsets": [64, 32]`.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC114"
    name = "bad-data-offsets"
    rule = "bad-offsets"
    severity = Severity.ERROR


@register
class DataOffsetsGap(_SafetensorsRule):
    """Tensor data in a safetensors file leaves a gap.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: sorted by offset, each tensor starts
    where the previous ended (`InvalidOffset`).

    ## Why is this bad?
    safetensors refuses the file; hidden bytes between tensors are a smuggling channel.

    ## Example
    `a: [0, 16]`, `b: [32, 48]`.

    ## How to fix
    Re-save the state dict with `safetensors.torch.save_file`.
    """

    code = "SEC115"
    name = "data-offsets-gap"
    rule = "offsets-gap"
    severity = Severity.ERROR


@register
class DataOffsetsOverlap(_SafetensorsRule):
    """Two tensors' data overlap in a safetensors file.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: tensor byte ranges must not overlap
    (`InvalidOffset`).

    ## Why is this bad?
    safetensors refuses the file; overlapping ranges make two tensors alias the same bytes.

    ## Example
    `a: [0, 16]`, `b: [8, 24]`.

    ## How to fix
    Re-save the state dict with `safetensors.torch.save_file`.
    """

    code = "SEC116"
    name = "data-offsets-overlap"
    rule = "offsets-overlap"
    severity = Severity.ERROR


@register
class DataOffsetsOutsideFile(_SafetensorsRule):
    """A tensor's data lies past the end of the file.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: every tensor ends inside the file.

    ## Why is this bad?
    safetensors refuses the file when it opens it: the file is truncated.

    ## Example
    A 1 GB tensor in a 600 MB file.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC117"
    name = "data-offsets-outside-file"
    rule = "offsets-outside-file"
    severity = Severity.ERROR


@register
class TensorSizeMismatch(_SafetensorsRule):
    """A tensor's byte range does not match its dtype and shape.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: end - begin = number of elements x
    dtype size (`TensorInvalidInfo`).

    ## Why is this bad?
    safetensors refuses the file.

    ## Example
    F16 [4, 4] (32 bytes) with `data_offsets` [0, 64].

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC118"
    name = "tensor-size-mismatch"
    rule = "size-mismatch"
    severity = Severity.ERROR


@register
class FileLengthMismatch(_SafetensorsRule):
    """The file is longer or shorter than its header says.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: the last tensor ends exactly at the
    end of the file (`MetadataIncompleteBuffer`).

    ## Why is this bad?
    safetensors refuses the file: truncated, or with trailing bytes appended.

    ## Example
    A header describing 4,096 data bytes in a file holding 4,100.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC119"
    name = "file-length-mismatch"
    rule = "file-length-mismatch"
    severity = Severity.ERROR


@register
class MetadataNotStrings(_SafetensorsRule):
    """`__metadata__` is not a map of strings to strings.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and applies the reference implementation's rule: `__metadata__` maps strings to
    strings.

    ## Why is this bad?
    safetensors refuses the file; transformers also needs `{"format": "pt"}` there.

    ## Example
    `"__metadata__": {"format": "pt", "step": 100}`.

    ## How to fix
    Re-save with string metadata values (`"100"`).
    """

    code = "SEC120"
    name = "metadata-not-strings"
    rule = "metadata-not-strings"
    severity = Severity.ERROR


@register
class SafetensorsHeaderNotBrace(_SafetensorsRule):
    """A safetensors header does not start with `{`.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and checks that the header's first byte is `{`, as the format specifies.

    ## Why is this bad?
    The safetensors reference reader (serde) skips leading whitespace, so `safe_open` and
    `from_pretrained` load the file (tested with safetensors 0.8); a warning, not an error. But the
    format says the header starts with `{`, readers that check the first byte refuse it, and no
    safetensors writer produces it: the file was written or edited by hand or by another tool.

    ## Example
    A header `   {"w": {"dtype": "F32", ...}}` (three spaces first).

    ## How to fix
    Re-save the tensors with `safetensors.torch.save_file` (or `save_pretrained`).
    """

    code = "SEC121"
    name = "safetensors-header-not-brace"
    rule = "header-not-brace"
    severity = Severity.WARNING


@register
class MalformedSafetensors(_SafetensorsRule):
    """A .safetensors file breaks a structural rule not covered by SEC101-SEC121.

    ## What it does
    Reads the 8-byte length and the JSON header of every .safetensors file in the artifact (never the
    tensor data) and reports any other problem the header reader reports.

    ## Why is this bad?
    safetensors refuses files that break its structural rules.

    ## Example
    A problem reported by a newer header reader.

    ## How to fix
    Download or save the file again; compare its size and sha256 with the source.
    """

    code = "SEC100"
    name = "malformed-safetensors"
    rule = ""
    severity = Severity.ERROR


# One check per rule of the reference reader; a rule the header reader names and no class owns
# falls to SEC100.
SAFETENSORS_CHECKS = [c for c in _SafetensorsRule.__subclasses__() if c.rule]
KNOWN_RULES = frozenset(c.rule for c in SAFETENSORS_CHECKS)

__all__ = ["SAFETENSORS_CHECKS", "MalformedSafetensors", "KNOWN_RULES"]

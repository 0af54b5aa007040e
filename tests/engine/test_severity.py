"""Severity means what the loader does: the table of changed severities in docs/severity.md is
what the registry says, and the cases behind the changes are proven on real files with the real
readers (each with a clean twin)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

import doctor
from doctor.findings import Severity
from doctor.registry import REGISTRY, load_all

DOC = Path(__file__).resolve().parents[2] / "docs" / "severity.md"


def _changed_rows() -> list[tuple[str, str, str]]:
    """(code, was, now) of every row of the 'Changed' table."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Changed", 1)[1].split("\n## ", 1)[0]
    return [(m[1], m[2], m[3]) for m in re.finditer(r"^\| (\w{3}\d{3}) \| [^|]+ \| (\w+) \| (\w+) \|", section, re.M)]


def test_the_changed_table_is_what_the_registry_says():
    load_all()
    rows = _changed_rows()
    assert {"CKP401", "SEC109"} <= {code for code, *_ in rows}
    for code, was, now in rows:
        assert code in REGISTRY, code
        assert REGISTRY[code].severity.value == now, (code, REGISTRY[code].severity.value, now)
        assert was in ("error", "warning", "info", "new") and was != now


LOADERS = re.compile(r"load|pretrained|Auto[A-Z]|peft|safetensors|transformers|torch|LLaVA|xtuner|Trainer|processor|tokeniz|pip|import"
                     r"|unpickl|reader|builder|CUDA", re.I)


def test_every_reviewed_check_says_what_the_loader_does():
    load_all()
    silent = [code for code, cls in REGISTRY.items() if code[:3] in ("CKP", "ADP", "LLV", "XTN", "ENV", "SEC")
              and not LOADERS.search(cls.doc_section("Why is this bad?") or "")]
    assert not silent, f"these explanations name no loader: {silent}"


def test_a_severity_paragraph_belongs_to_its_own_check():
    """A "Severity: ..." paragraph of an explanation names the check's own severity, once (the RUN
    family once carried its siblings' paragraphs in the first class of each file)."""
    load_all()
    wrong = []
    for code, cls in REGISTRY.items():
        paragraphs = [p for p in (cls.__doc__ or "").split("\n\n") if p.strip().startswith("Severity:")]
        words = [re.match(r"\s*Severity:\s*(\w+)", p).group(1).lower() for p in paragraphs]
        if len(words) > 1 or words and words[0] != cls.severity.value:
            wrong.append((code, cls.severity.value, words))
    assert not wrong


def _safetensors(path: Path, header: str, data: bytes) -> Path:
    raw = header.encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_duplicate_tensor_name_is_a_parser_differential(tmp_path):
    """Both entries are valid alone: safetensors keeps the last, a first-wins reader the first."""
    from safetensors import safe_open

    data = bytes(range(16))
    dup = _safetensors(tmp_path / "model.safetensors",
                       '{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, '
                       '"w": {"dtype": "F16", "shape": [8], "data_offsets": [0, 16]}}', data)
    with safe_open(str(dup), "pt") as f:
        loaded = f.get_tensor("w")
    raw = dup.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    first_wins = json.loads(raw[8:8 + n].decode(),
                            object_pairs_hook=lambda kv: {k: v for k, v in reversed(kv)})
    assert (str(loaded.dtype), list(loaded.shape)) == ("torch.float16", [8])
    assert (first_wins["w"]["dtype"], first_wins["w"]["shape"]) == ("F32", [4])  # another tensor
    [f] = [f for f in doctor.check(str(dup), select=["SEC"]).findings if f.code == "SEC109"]
    assert f.severity.value == "error" and "'w'" in f.message

    (tmp_path / "clean").mkdir()
    clean = _safetensors(tmp_path / "clean" / "model.safetensors",
                         '{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', data)
    assert not doctor.check(str(clean), select=["SEC"]).findings


@pytest.mark.parametrize("lead", [" ", "\n", "\t"])
def test_header_not_starting_with_brace_still_loads(tmp_path, lead):
    """Why a header that does not start with `{` is only a warning: the reference reader loads it."""
    from safetensors.torch import load_file

    path = _safetensors(tmp_path / "model.safetensors",
                        lead + '{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', bytes(16))
    assert list(load_file(str(path))["w"].shape) == [4]
    assert not doctor.check(str(path), select=["SEC"]).at_or_above(Severity.ERROR)
    # ... and it is reported, once, as a warning naming what comes first (SEC121)
    (f,) = [f for f in doctor.check(str(path), select=["SEC"]).findings]
    assert (f.code, f.severity.value) == ("SEC121", "warning") and repr(lead) in f.message


def test_a_header_starting_with_brace_is_not_sec121(tmp_path):
    path = _safetensors(tmp_path / "model.safetensors",
                        '{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', bytes(16))
    assert doctor.check(str(path), select=["SEC121"]).findings == []

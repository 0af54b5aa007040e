"""SEC checks on real artifacts: malicious pickles in LLaVA / adapter / run folders, files that
are not what their name says, one malformed safetensors file per reference rule (each with its
own code, never a traceback), and the safetensors conversion fix loaded back by transformers."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from doctor.checks.security.rules.safetensors import SAFETENSORS_CHECKS  # noqa: E402

import doctor  # noqa: E402

from tests.helpers.pickle_corpus import build_corpus, exec_reduce, not_what_it_says  # noqa: E402

torch = pytest.importorskip("torch")


def sec(path: Path, **kwargs: object) -> doctor.report.Report:  # type: ignore[name-defined]
    report = doctor.check(str(path), select=["SEC"], **kwargs)
    assert not report.internal_errors, [f.message for f in report.internal_errors]
    return report


def codes(report: object) -> list[str]:
    return sorted(f.code for f in report.findings)  # type: ignore[attr-defined]


# ---- pickles in artifacts -------------------------------------------------------------------
@pytest.fixture(scope="module")
def llava_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An original-LLaVA LoRA output whose non_lora_trainables.bin carries a payload."""
    root = tmp_path_factory.mktemp("lora") / "llava-v1.5-7b-lora"
    root.mkdir()
    (root / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                          "target_modules": ["q_proj"]}))
    (root / "config.json").write_text(json.dumps({"model_type": "llava_llama", "mm_projector_type": "mlp2x_gelu"}))
    torch.save({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 8)},
               root / "adapter_model.bin")
    (root / "non_lora_trainables.bin").write_bytes(exec_reduce(root / "PWNED", 2))
    return root


def test_payload_in_non_lora_trainables_is_named(llava_lora: Path) -> None:
    report = sec(llava_lora)
    errors = [f for f in report.findings if f.code == "SEC001"]
    assert len(errors) == 1
    finding = errors[0]
    assert finding.path == str(llava_lora / "non_lora_trainables.bin")
    assert "builtins.exec" in finding.message and "non_lora_trainables.bin" in finding.message
    assert "LLaVA's builder" in (finding.hint or "")
    assert finding.why and "weights_only" in finding.why
    assert not (llava_lora / "PWNED").exists()
    # the clean adapter weights are offered a conversion, the hostile file is not
    offered = [f for f in report.findings if f.code == "SEC009"]
    assert [Path(f.path).name for f in offered] == ["adapter_model.bin"]


def test_every_corpus_sample_fails_as_a_weights_file(tmp_path: Path) -> None:
    for sample in build_corpus(tmp_path / "corpus"):
        report = sec(sample.path)
        assert not report.ok, sample.name
        wanted = {"<unresolved>": "SEC002"}.get(sample.expect, "SEC001")
        assert wanted in codes(report), (sample.name, codes(report))
        if sample.expect != "<unresolved>":
            assert any(sample.expect in f.message for f in report.findings), sample.name
        assert not sample.marker.exists(), sample.name


def test_specific_codes_for_chains_polyglots_and_disguises(tmp_path: Path) -> None:
    corpus = {s.name: s for s in build_corpus(tmp_path / "corpus")}
    assert "SEC003" in codes(sec(corpus["pkgutil-resolve-name"].path))
    assert "SEC006" in codes(sec(corpus["zip-prefix-polyglot"].path))
    disguise = sec(corpus["safetensors-extension"].path)
    assert {"SEC001", "SEC005"} <= set(codes(disguise))
    assert not any(c.startswith("SEC1") for c in codes(disguise))  # not also reported as a broken header


def test_files_that_are_not_what_their_name_says(tmp_path: Path) -> None:
    for name, (path, fmt) in not_what_it_says(tmp_path / "other").items():
        findings = [f for f in sec(path).findings if f.code == "SEC005"]
        assert len(findings) == 1, name
        assert findings[0].severity.value == ("warning" if fmt == "safetensors" else "error")


def test_run_folder_with_real_trainer_files_is_clean_until_one_is_poisoned(tmp_path: Path) -> None:
    import os
    import random

    import numpy as np

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import TrainingArguments

    run = tmp_path / "run"
    ckpt = run / "checkpoint-10"
    ckpt.mkdir(parents=True)
    (run / "trainer_state.json").write_text(json.dumps({"log_history": [], "global_step": 10}))
    (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": [], "global_step": 10}))
    torch.save(TrainingArguments(output_dir=str(run), report_to=[]), ckpt / "training_args.bin")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()},
               ckpt / "rng_state.pth")
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    torch.save(opt.state_dict(), ckpt / "optimizer.pt")
    assert codes(sec(run)) == []
    (ckpt / "scheduler.pt").write_bytes(exec_reduce(ckpt / "PWNED", 4))
    report = sec(run)
    assert codes(report) == ["SEC001"]
    assert report.findings[0].path.endswith("checkpoint-10/scheduler.pt")


def test_llava_plain_torch_load_warning_only_on_old_torch(llava_lora: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "SEC008" not in codes(sec(llava_lora))
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "2.1.2" if d == "torch" else real(d))
    findings = [f for f in sec(llava_lora).findings if f.code == "SEC008"]
    assert len(findings) == 1 and findings[0].severity.value == "error"  # that file also failed the scan
    assert "CVE-2025-32434" in findings[0].message


# ---- safetensors structure: one file per reference rule -------------------------------------
def _st(header: object = None, data: bytes = b"", raw: bytes | None = None) -> bytes:
    h = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _f32(n: int, start: int = 0, end: int | None = None) -> dict[str, object]:
    return {"dtype": "F32", "shape": [n], "data_offsets": [start, start + 4 * n if end is None else end]}


MALFORMED: dict[str, bytes] = {
    "file-too-small": b"\x01\x02\x03",
    "lfs-pointer": b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 9\n",
    "header-too-large": struct.pack("<Q", 200_000_000) + b"{}",
    "header-truncated": struct.pack("<Q", 1000) + b'{"w": 1}',
    "header-not-utf8": _st(raw=b'{"\xff": 1}'),
    "header-not-json": _st(raw=b'{"w": {"dtype": '),
    "header-not-object": _st([1, 2]),
    "duplicate-name": _st(raw=b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                          b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', data=b"\0" * 4),
    "nul-in-name": _st({"w\u0000x": _f32(2)}, b"\0" * 8),
    "bad-entry": _st({"w": 3}),
    "bad-dtype": _st({"w": {"dtype": "FP16", "shape": [2], "data_offsets": [0, 4]}}),
    "bad-shape": _st({"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}}),
    "bad-offsets": _st({"w": _f32(2, 8, 0)}),
    "offsets-gap": _st({"a": _f32(1), "b": _f32(1, 8)}, b"\0" * 12),
    "offsets-overlap": _st({"a": _f32(2), "b": _f32(2, 4)}, b"\0" * 12),
    "offsets-outside-file": _st({"w": _f32(100)}, b"\0" * 16),
    "size-mismatch": _st({"w": _f32(2, 0, 16)}, b"\0" * 16),
    "file-length-mismatch": _st({"w": _f32(2)}, b"\0" * 12),
    "metadata-not-strings": _st({"__metadata__": {"format": "pt", "step": 1}, "w": _f32(2)}, b"\0" * 8),
}
CODE_OF = {cls.rule: cls.code for cls in SAFETENSORS_CHECKS}
TOLERATED = {"nul-in-name", "duplicate-name"}  # identical duplicate entries: serde keeps the last
DIFFERENTIAL = {"duplicate-name"}  # loads, but readers disagree on which entry wins: an error


@pytest.mark.parametrize("rule", sorted(MALFORMED))
def test_each_rule_has_its_own_finding(tmp_path: Path, rule: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(MALFORMED[rule])
    report = sec(path)
    found = [f for f in report.findings if f.code == CODE_OF[rule]]
    assert len(found) == 1, codes(report)
    from safetensors import SafetensorError, safe_open

    if rule in TOLERATED:  # the reference reader loads these: warnings, unless a parser differential
        assert found[0].severity.value == ("error" if rule in DIFFERENTIAL else "warning")
        with safe_open(str(path), "pt") as f:
            [f.get_tensor(k) for k in f.keys()]
    else:
        assert found[0].severity.value == "error"
        with pytest.raises(SafetensorError), safe_open(str(path), "pt") as f:
            [f.get_tensor(k) for k in f.keys()]


def test_every_rule_is_exercised() -> None:
    # unreadable: test_dangling_link_is_unreadable; header-not-brace (a warning: safetensors loads
    # it): tests/engine/test_severity.py
    assert set(MALFORMED) | {"unreadable", "header-not-brace"} == set(CODE_OF)


def test_dangling_link_is_unreadable(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "model.safetensors").symlink_to(tmp_path / "blobs" / "gone")
    assert "SEC101" in codes(sec(model))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.binary(max_size=200), declared=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
       data=st.binary(max_size=64))
def test_random_headers_never_crash_the_checks(tmp_path: Path, header: bytes, declared: int | None,
                                               data: bytes) -> None:
    path = tmp_path / "model.safetensors"
    size = len(header) if declared is None else declared
    path.write_bytes(struct.pack("<Q", size) + header + data)
    sec(path)


# ---- the fix: .bin -> safetensors -----------------------------------------------------------
def test_fix_converts_sharded_bin_and_transformers_loads_it(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from doctor.testing import make_text_model

    src = tmp_path / "vicuna-tiny"
    make_text_model(src, weights="bin", shard_size="40KB")
    shards = sorted(p.name for p in src.glob("pytorch_model-*.bin"))
    assert len(shards) > 1
    before = {p.name: p.stat().st_mtime_ns for p in src.iterdir()}
    report = sec(src, fix=True)
    assert [f.code for f in report.findings] == ["SEC009"] * len(shards)
    out = tmp_path / "vicuna-tiny-safetensors"
    assert report.fixes and report.fixes[0].written == [str(out)], report.fixes
    assert {p.name: p.stat().st_mtime_ns for p in src.iterdir()} == before  # input untouched
    assert not list(out.glob("pytorch_model*"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in out.glob("model-*.safetensors")}
    ref = AutoModelForCausalLM.from_pretrained(src)
    new, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name, tensor in ref.state_dict().items():
        assert torch.equal(tensor, new.state_dict()[name]), name
    assert codes(sec(out)) == []  # the converted folder is clean and has nothing left to offer


def test_fix_keeps_tied_weights_tied(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    src = tmp_path / "tied"
    src.mkdir()
    model = LlamaForCausalLM(config)
    config.save_pretrained(src)
    state = model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    torch.save(state, src / "pytorch_model.bin")
    report = sec(src, fix=True)
    assert report.fixes and not report.fixes[0].error, report.fixes
    out = tmp_path / "tied-safetensors"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys() and "model.embed_tokens.weight" in f.keys()
        assert f.metadata()["lm_head.weight"] == "model.embed_tokens.weight"
        assert f.metadata()["format"] == "pt"
    new, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    assert torch.equal(new.lm_head.weight, model.model.embed_tokens.weight)


def test_fix_of_a_single_file_writes_beside_it_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "mm_projector.pt"
    torch.save({"model.mm_projector.0.weight": torch.randn(4, 4).half()}, path)
    report = sec(path, fix=True)
    assert report.fixes[0].written == [str(tmp_path / "mm_projector.safetensors")]
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(tmp_path / "mm_projector.safetensors"))["model.mm_projector.0.weight"],
                       torch.load(path, weights_only=True)["model.mm_projector.0.weight"])
    again = sec(path, fix=True)
    assert again.fixes[0].error and "already exists" in again.fixes[0].error


def test_fix_is_not_offered_for_a_file_that_failed_the_scan(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(exec_reduce(tmp_path / "PWNED", 2))
    report = sec(path, fix=True)
    assert "SEC009" not in codes(report) and not report.fixes
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "pytorch_model.safetensors").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)


# ---- one finding per cause -------------------------------------------------------------------
def _model_folder(root: Path, weights: bytes, name: str = "model.safetensors") -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (root / name).write_bytes(weights)
    return root


def test_a_truncated_file_is_one_finding_with_the_count(tmp_path: Path) -> None:
    header = {f"model.layers.{i}.w": _f32(4, i * 16, i * 16 + 16) for i in range(20)}
    folder = _model_folder(tmp_path / "m", _st(header, bytes(100)))  # room for 6 of the 20 tensors
    findings = [f for f in sec(folder).findings if f.code == "SEC117"]
    assert len(findings) == 1
    assert "14 tensors in all" in findings[0].message and "'model.layers.7.w'" in findings[0].message
    assert findings[0].location is not None and findings[0].location.tensor == "model.layers.6.w"
    clean = _model_folder(tmp_path / "clean", _st(header, bytes(320)))
    assert codes(sec(clean)) == []


LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 1000\n"


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_lfs_pointer_in_a_model_folder_is_ckp203_alone(tmp_path: Path, name: str) -> None:
    folder = _model_folder(tmp_path / "m", LFS, name)
    found = codes(doctor.check(str(folder), select=["SEC", "CKP203"]))
    assert found == ["CKP203"]


def test_lfs_pointer_outside_a_model_folder_is_sec103(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                             "target_modules": ["q_proj"]}))
    (adapter / "adapter_model.safetensors").write_bytes(LFS)
    assert codes(doctor.check(str(adapter), select=["SEC", "CKP203"])) == ["SEC103"]
    (adapter / "adapter_model.safetensors").write_bytes(_st({"w": _f32(4)}, bytes(16)))
    assert codes(doctor.check(str(adapter), select=["SEC", "CKP203"])) == []


def test_old_torch_with_a_clean_llava_pickle_is_env003_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    root = tmp_path / "llava-v1.5-7b-lora"
    root.mkdir()
    (root / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                          "target_modules": ["q_proj"]}))
    (root / "config.json").write_text(json.dumps({"model_type": "llava_llama", "mm_projector_type": "mlp2x_gelu"}))
    torch.save({"model.mm_projector.0.weight": torch.zeros(4, 8)}, root / "non_lora_trainables.bin")
    import dataclasses

    from doctor.envprobe import probe

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "2.1.2" if d == "torch" else real(d))
    env = probe()
    monkeypatch.setattr("doctor.checks.environment.probe",
                        lambda: dataclasses.replace(env, versions={**env.versions, "torch": "2.1.2"}))
    found = {f.code for f in doctor.check(str(root), select=["SEC008", "ENV003"]).findings}
    assert found == {"ENV003"}
    (root / "non_lora_trainables.bin").write_bytes(exec_reduce(root / "PWNED", 2))  # twin: a file that fails
    found = {f.code for f in doctor.check(str(root), select=["SEC008", "ENV003"]).findings}
    assert found == {"ENV003", "SEC008"}


def test_the_same_import_in_several_pickles_of_a_file_is_one_finding(tmp_path: Path) -> None:
    import pickle
    import zipfile

    class Payload:
        def __reduce__(self) -> tuple[object, ...]:
            import os

            return (os.system, ("echo pwned",))

    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Payload()}, protocol=2))
        z.writestr("archive/extra.pkl", pickle.dumps({"v": Payload()}, protocol=2))
        z.writestr("archive/more.pkl", pickle.dumps({"u": Payload()}, protocol=2))
    (finding,) = [f for f in sec(tmp_path / "model.pt").findings if f.code == "SEC001"]
    assert "also in 2 more place(s)" in finding.message and "archive/" in finding.message
    with zipfile.ZipFile(tmp_path / "one.pt", "w") as z:  # twin: one pickle, one finding, no "also"
        z.writestr("archive/data.pkl", pickle.dumps({"w": Payload()}, protocol=2))
    (finding,) = [f for f in sec(tmp_path / "one.pt").findings if f.code == "SEC001"]
    assert "also in" not in finding.message

"""The inference sanity pass on CPU with tiny factory models: each stage passes on a clean model
and catches its planted defect (missing projector, zeroed projector, cut mllama cross-attention,
NaN adapter, a merge that disagrees)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from doctor.errors import UsageError  # noqa: E402
from doctor.sanity import run_sanity  # noqa: E402
from doctor.testing.adapters import make_lora_adapter  # noqa: E402
from doctor.testing.models import make_llava_model  # noqa: E402

from tests.helpers.sanity import open_gates, rewrite_tensors  # noqa: E402

PROBE = Path(__file__).resolve().parents[2] / "doctor" / "data" / "pope_example.jsonl"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sanity")
    m = {fam: make_llava_model(root / fam, family=fam).path for fam in ("llava", "llava_next", "mllama")}
    open_gates(m["mllama"])
    m["adapter"] = make_lora_adapter(m["llava"], root / "adapter")
    return m


def statuses(result) -> dict[int, str]:
    return {s.number: s.status for s in result.stages}


def messages(result, stage: int) -> str:
    return " | ".join(f.message for f in result.stage(stage).findings)


@pytest.mark.parametrize("family", ["llava", "llava_next", "mllama"])
def test_clean_model_passes_every_stage(models, family):
    result = run_sanity(str(models[family]), device="cpu")
    assert statuses(result) == {1: "pass", 2: "pass", 3: "pass", 4: "pass", 5: "skip", 6: "skip"}, result.findings
    assert result.ok and result.family == family and result.dtype == "fp32"
    for st in result.stages[:4]:
        assert st.seconds > 0 and st.memory_kind == "rss" and st.peak_memory_bytes > 0
    assert result.stage(3).metrics["new_tokens"] >= 1 and result.stage(3).metrics["text"].strip()
    assert result.stage(4).metrics["relative_difference_noise"] > result.stage(4).metrics["tolerance"]


def test_llava_next_runs_every_pinpoint_shape_with_its_own_tiling(models):
    result = run_sanity(str(models["llava_next"]), device="cpu")
    images = result.stage(2).metrics["images"]
    labels = [i.split(":")[0] for i in images]
    # the factory's pinpoints [28, 28], [56, 28], [28, 56] ([height, width]): one image each at its size
    assert labels == ["default (square) 336x336", "pinpoint [28, 28] 28x28", "pinpoint [28, 56] 56x28",
                      "pinpoint [56, 28] 28x56", "very tall 20x200", "very wide 200x20"]
    tokens = {i.split(":")[0]: int(i.split(": ")[1].split()[0]) for i in images[1:4]}
    assert len(set(tokens.values())) == 3, tokens  # each pinpoint takes a different tiling path


def test_missing_projector_fails_stage_1_naming_the_tensors(tmp_path):
    folder = make_llava_model(tmp_path / "m", drop_tensors=("multi_modal_projector",)).path
    result = run_sanity(str(folder), device="cpu")
    assert statuses(result)[1] == "fail" and not result.ok
    assert all(statuses(result)[n] == "skip" for n in range(2, 7))
    finding = result.stage(1).findings[0]
    assert finding.code == "SAN001" and finding.message.startswith("projector not loaded: 4 tensor(s)")
    assert "multi_modal_projector.linear_1.weight" in finding.message
    assert finding.location.tensor.endswith("multi_modal_projector.linear_1.bias")
    assert "non_lora_trainables.bin" in finding.hint


def test_zeroed_projector_is_caught_by_stage_4(tmp_path):
    folder = make_llava_model(tmp_path / "m").path
    rewrite_tensors(folder, lambda k, t: t.zero_() if k.startswith("multi_modal_projector.") else t)
    result = run_sanity(str(folder), device="cpu")
    assert statuses(result)[1] == "pass" and statuses(result)[4] == "fail"
    assert result.stage(4).metrics["relative_difference_blank"] == 0.0
    assert "every projector weight is zero" in messages(result, 4)


def test_mllama_with_untrained_gates_is_caught_by_stage_4(tmp_path):
    folder = make_llava_model(tmp_path / "m", family="mllama").path  # fresh init: gates at 0
    result = run_sanity(str(folder), device="cpu")
    assert statuses(result)[2] == "pass" and statuses(result)[4] == "fail"
    assert "cross-attention gates are 0" in messages(result, 4)


def test_mllama_with_cross_attention_layers_outside_the_text_model_is_caught(tmp_path):
    folder = make_llava_model(tmp_path / "m", family="mllama", cross_attention_layers=[7]).path
    result = run_sanity(str(folder), device="cpu")
    assert statuses(result)[4] == "fail"
    assert "cross_attention_layers [7] names no layer of the 2-layer text model" in messages(result, 4)


def test_nan_adapter_fails_stage_2_and_its_merge(models, tmp_path):
    adapter = make_lora_adapter(models["llava"], tmp_path / "nan", nan=True)
    result = run_sanity(str(adapter), device="cpu")
    assert statuses(result)[1] == "pass" and statuses(result)[2] == "fail"
    finding = result.stage(2).findings[0]
    assert "NaN or inf" in finding.message and "lora_B" in finding.location.tensor
    assert finding.path == str(adapter)
    assert statuses(result)[3] == "skip" and statuses(result)[5] == "fail"
    assert "NaNs detected" in messages(result, 5)


def test_adapter_and_its_in_memory_merge_agree(models):
    result = run_sanity(str(models["llava"]), adapter=str(models["adapter"]), device="cpu")
    assert statuses(result) == {1: "pass", 2: "pass", 3: "pass", 4: "pass", 5: "pass", 6: "skip"}
    m = result.stage(5).metrics
    assert m["relative_difference"] < m["tolerance"] and m["top1_agreement"] == 1.0 and m["adapter_effect"] > 0
    assert result.adapter == str(models["adapter"]) and result.base == str(models["llava"])


def test_adapter_folder_as_model_uses_its_recorded_base(models):
    result = run_sanity(str(models["adapter"]), device="cpu")
    assert result.model == str(models["llava"]) and statuses(result)[5] == "pass"


def test_merged_output_agrees_and_a_wrong_merge_disagrees(models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    merged = tmp_path / "merged"
    base = AutoModelForImageTextToText.from_pretrained(models["llava"])
    PeftModel.from_pretrained(base, models["adapter"]).merge_and_unload().save_pretrained(merged)
    AutoProcessor.from_pretrained(models["llava"]).save_pretrained(merged)
    good = run_sanity(str(merged), adapter=str(models["adapter"]), base=str(models["llava"]), device="cpu")
    assert statuses(good)[5] == "pass" and good.ok
    # The base itself passed off as the merge: the LoRA is not in it.
    bad = run_sanity(str(models["llava"]), adapter=str(models["adapter"]), base=str(models["llava"]), device="cpu")
    assert statuses(bad)[5] == "fail" and "disagree" in messages(bad, 5)


def test_untrained_adapter_warns_that_it_changes_nothing(models, tmp_path):
    adapter = make_lora_adapter(models["llava"], tmp_path / "zero", zero_lora_b=True)
    result = run_sanity(str(adapter), device="cpu")
    assert statuses(result)[5] == "warn" and result.ok
    assert "changes nothing" in messages(result, 5)


def test_probe_reports_accuracy(models):
    result = run_sanity(str(models["llava"]), device="cpu", probe=str(PROBE), probe_min_accuracy=0.0)
    st = result.stage(6)
    assert st.status in ("pass", "warn") and st.metrics["questions"] == 8
    assert 0.0 <= st.metrics["accuracy"] <= 1.0 and "accuracy" in st.detail
    assert st.metrics["scoring"] == "answer log-likelihood"  # the factory vocabulary spells yes in pieces


def test_probe_scoring_and_bad_lines(tmp_path):
    from doctor.sanity.probe import _score, read_probe
    from doctor.sanity.results import StageResult

    (tmp_path / "img.png").write_bytes(PROBE.with_name("default_image.png").read_bytes())
    probe = tmp_path / "p.jsonl"
    probe.write_text('{"image": "img.png", "question": "Q?", "answer": "Yes"}\nnot json\n\n'
                     '{"image": "nope.png", "question": "Q?", "answer": "no"}\n{"image": "img.png", "answer": "maybe"}\n')
    records = read_probe(str(probe))
    assert [r for _, r in records][0]["answer"] == "yes"
    problems = [(i, r) for i, r in records if isinstance(r, str)]
    assert [i for i, _ in problems] == [1, 3, 4] and "not found" in problems[1][1] and "question" in problems[2][1]
    st = StageResult(6)
    _score(st, "p", tp=2, fp=3, tn=1, fn=4, min_accuracy=0.6)
    assert st.status == "fail" and st.metrics["accuracy"] == 0.3 and st.metrics["yes_ratio"] == 0.5
    st = StageResult(6)
    _score(st, "p", tp=5, fp=5, tn=0, fn=0, min_accuracy=0.0)
    assert st.status == "warn" and "answers yes to every question" in st.findings[0].message


def test_generation_timeout_is_a_warning(models):
    result = run_sanity(str(models["llava"]), device="cpu", timeout=1e-9)
    st = result.stage(3)
    assert st.status == "warn" and "timeout" in st.findings[0].message
    assert st.metrics["new_tokens"] < 16


def test_out_of_memory_is_reported_with_what_was_needed(models, monkeypatch):
    import doctor.sanity.load as load

    monkeypatch.setattr(load, "free_memory", lambda device: 1000)
    result = run_sanity(str(models["llava"]), device="cpu")
    msg = messages(result, 1)
    assert statuses(result)[1] == "fail" and "out of memory" in msg
    assert "KiB in fp32" in msg and "1 KiB is free" in msg  # ~80k fp32 params need ~300 KiB


def test_quantization_off_gpu_skips_every_stage_with_the_reason(models):
    result = run_sanity(str(models["llava"]), device="cpu", load_4bit=True)
    assert set(statuses(result).values()) == {"skip"} and result.ok
    assert "bitsandbytes on a CUDA GPU" in result.stage(1).detail


def test_unregistered_model_type_fails_stage_1(models, tmp_path):
    import shutil

    folder = tmp_path / "orig"
    shutil.copytree(models["llava"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "llava_llama"}))
    result = run_sanity(str(folder), device="cpu")
    assert result.stage(1).findings[0].location.key == "model_type"


def test_usage_errors(models, tmp_path):
    with pytest.raises(UsageError, match="no such model folder"):
        run_sanity(str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="exclude each other"):
        run_sanity(str(models["llava"]), load_4bit=True, load_8bit=True)
    with pytest.raises(UsageError, match="no such image"):
        run_sanity(str(models["llava"]), image=str(tmp_path / "x.png"), device="cpu")
    with pytest.raises(UsageError, match="no such probe file"):
        run_sanity(str(models["llava"]), probe=str(tmp_path / "p.jsonl"), device="cpu")
    with pytest.raises(UsageError, match="--base"):
        run_sanity(str(models["adapter"]), base=None, adapter=str(models["adapter"]))

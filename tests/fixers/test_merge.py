"""The streaming merge of PEFT adapters against peft's own ``merge_and_unload()`` on tiny real
models (llava, llava_next, mllama), and the promises of the output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from safetensors import safe_open  # noqa: E402

from doctor.fixers.merge import merge  # noqa: E402

from doctor.errors import ArtifactError, UsageError  # noqa: E402
from doctor.testing.adapters import make_lora_adapter  # noqa: E402
from doctor.testing.models import make_llava_model, tiny_inputs  # noqa: E402

ADAPTERS = {
    # name: make_lora_adapter kwargs
    "plain": dict(r=4, alpha=8),
    "rslora": dict(r=4, alpha=8, use_rslora=True),
    "patterns": dict(r=4, alpha=8, rank_pattern={"layers.1.self_attn.q_proj": 2, "v_proj": 3},
                     alpha_pattern={"layers.0.self_attn.v_proj": 5, "q_proj": 16}),
}


def load(path: Path):
    from transformers import AutoModelForImageTextToText

    model, info = AutoModelForImageTextToText.from_pretrained(str(path), output_loading_info=True)
    return model.eval(), info


def peft_merged(base: Path, adapter: Path):
    from peft import PeftModel

    model, _ = load(base)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits.float()


def clean_load(info: dict) -> bool:
    return not info["missing_keys"] and not info["unexpected_keys"] and not info.get("mismatched_keys")


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    info = make_llava_model(root / "base", family="llava", seed=1)
    adapters = {name: make_lora_adapter(info, root / f"ad-{name}", seed=2, **kw) for name, kw in ADAPTERS.items()}
    adapters["vision+mts"] = make_lora_adapter(info, root / "ad-vision", target_modules=["q_proj", "fc1", "linear_1"],
                                               modules_to_save=["lm_head"], seed=3)
    return root, info, adapters


@pytest.mark.parametrize("name", [*ADAPTERS, "vision+mts"])
def test_fp32_merge_equals_peft(llava, name):
    root, info, adapters = llava
    out = root / f"merged-{name}"
    result = merge(adapters[name], base=info.path, out=out, dtype="fp32", check=False)
    assert result.lora_modules > 0
    model, loading = load(out)
    assert clean_load(loading), loading
    reference = peft_merged(info.path, adapters[name])
    inputs = tiny_inputs(info)
    ours, theirs = logits(model, inputs), logits(reference, inputs)
    base_logits = logits(load(info.path)[0], inputs)
    assert (theirs - base_logits).abs().max() > 1e-3  # the adapter changes the model ...
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)  # ... exactly as peft merges it


def test_rank_and_alpha_patterns_resolved_per_module(llava):
    """peft's get_pattern_key: first matching key wins; r from rank_pattern, alpha from alpha_pattern."""
    from doctor.fixers.merge.lora import load_adapter
    from doctor.fixers.merge.tensor_io import TensorReader

    _, _, adapters = llava
    mods = load_adapter(adapters["patterns"], TensorReader()).modules
    q1 = next(m for n, m in mods.items() if n.endswith("layers.1.self_attn.q_proj"))
    v0 = next(m for n, m in mods.items() if n.endswith("layers.0.self_attn.v_proj"))
    q0 = next(m for n, m in mods.items() if n.endswith("layers.0.self_attn.q_proj"))
    assert (q1.r, q1.alpha, q1.scale) == (2, 16, 8.0)
    assert (v0.r, v0.alpha) == (3, 5) and v0.scale == pytest.approx(5 / 3)
    assert (q0.r, q0.alpha, q0.scale) == (4, 16, 4.0)


def test_modules_to_save_replaces_the_base_tensor(llava):
    root, info, adapters = llava
    out = root / "merged-mts"
    merge(adapters["vision+mts"], base=info.path, out=out, dtype="fp32", check=False)
    with safe_open(str(adapters["vision+mts"] / "adapter_model.safetensors"), "pt") as f:
        saved = f.get_tensor("base_model.model.lm_head.weight")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        written = f.get_tensor("language_model.lm_head.weight")
    assert torch.equal(saved, written)


@pytest.mark.parametrize("dtype, torch_dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_half_precision_within_one_rounding(llava, dtype, torch_dtype):
    """Computed in fp32 and cast once: every tensor equals peft's fp32 merge rounded to the
    output dtype (at most one unit in the last place apart)."""
    root, info, adapters = llava
    out = root / f"merged-{dtype}"
    merge(adapters["patterns"], base=info.path, out=out, dtype=dtype, check=False)
    reference = peft_merged(info.path, adapters["patterns"])
    from doctor.fixers.merge.keys import canonical

    ref = {canonical(k): v for k, v in reference.state_dict().items()}
    half = getattr(torch, torch_dtype)
    eps = torch.finfo(half).eps
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        for key in f.keys():
            ours = f.get_tensor(key)
            assert ours.dtype == half
            expect = ref[canonical(key)].float()
            bound = eps * expect.abs() + torch.finfo(half).tiny * 2
            assert ((ours.float() - expect).abs() <= bound).all(), key
    assert json.loads((out / "config.json").read_text())["dtype"] == torch_dtype
    model, loading = load(out)
    assert clean_load(loading) and model.dtype == half


def test_legacy_key_layout_adapter_merges_like_the_native_one(llava, tmp_path):
    """An adapter saved by transformers 4.36-4.51 (language_model.model.layers...) lands on
    the same tensors as the 5.x-named one."""
    from safetensors.torch import load_file, save_file

    root, info, adapters = llava
    src = adapters["plain"]
    legacy = tmp_path / "ad-legacy"
    legacy.mkdir()
    (legacy / "adapter_config.json").write_bytes((src / "adapter_config.json").read_bytes())
    state = load_file(str(src / "adapter_model.safetensors"))
    renamed = {k.replace("base_model.model.model.language_model.", "base_model.model.language_model.model."): v
               for k, v in state.items()}
    assert renamed != state
    save_file(renamed, str(legacy / "adapter_model.safetensors"), metadata={"format": "pt"})
    a = merge(src, base=info.path, out=tmp_path / "native", dtype="fp32", check=False)
    b = merge(legacy, base=info.path, out=tmp_path / "legacy", dtype="fp32", check=False)
    assert a.lora_modules == b.lora_modules > 0
    with safe_open(str(tmp_path / "native/model.safetensors"), "pt") as fa, \
            safe_open(str(tmp_path / "legacy/model.safetensors"), "pt") as fb:
        for key in fa.keys():
            assert torch.equal(fa.get_tensor(key), fb.get_tensor(key)), key


def test_output_folder_is_complete_and_documented(llava):
    root, info, adapters = llava
    out = root / "merged-doc"
    result = merge(adapters["plain"], base=info.path, out=out, max_shard_size="60KB")
    names = sorted(p.name for p in out.iterdir())
    assert len(result.shards) > 1 and "model.safetensors.index.json" in names
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(result.shards)
    for extra in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "config.json",
                  "generation_config.json"):
        assert extra in names
    with safe_open(str(out / result.shards[0]), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["base"] == str(info.path) and meta["adapter"] == str(adapters["plain"])
    assert meta["vlm-doctor"]
    assert not [p for p in root.iterdir() if p.name.startswith(".merged-doc")]  # no temp folder left
    from transformers import AutoConfig, AutoProcessor

    assert AutoConfig.from_pretrained(str(out)).model_type == "llava"
    assert AutoProcessor.from_pretrained(str(out)) is not None
    assert result.report is not None and not result.errors  # the checkpoint doctor ran on OUT
    assert any(a.path == str(out) for a in result.report.artifacts)


def test_bf16_base_merge_close_to_peft(tmp_path):
    info = make_llava_model(tmp_path / "base", family="llava", seed=4, dtype="bfloat16", weights="bin",
                            shard_size="40KB")
    adapter = make_lora_adapter(info, tmp_path / "ad", seed=5)
    merge(adapter, base=info.path, out=tmp_path / "out", check=False)  # auto: stays bf16
    model, loading = load(tmp_path / "out")
    assert clean_load(loading) and model.dtype == torch.bfloat16
    inputs = tiny_inputs(info)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    torch.testing.assert_close(logits(model, inputs), logits(peft_merged(info.path, adapter), inputs),
                               rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("family", ["llava_next", "mllama"])
def test_other_families_equal_peft(tmp_path, family):
    info = make_llava_model(tmp_path / "base", family=family, seed=6, shard_size="30KB")
    adapter = make_lora_adapter(info, tmp_path / "ad", seed=7, rank_pattern={"q_proj": 2},
                                alpha_pattern={"layers.0.self_attn.v_proj": 5})
    merge(adapter, base=info.path, out=tmp_path / "out", dtype="fp32", max_shard_size="40KB", check=False)
    model, loading = load(tmp_path / "out")
    assert clean_load(loading), loading
    reference = peft_merged(info.path, adapter)
    for shape in ((28, 56), (56, 28)):  # portrait and landscape (llava_next tiles them differently)
        inputs = tiny_inputs(info, image_shape=shape)
        torch.testing.assert_close(logits(model, inputs), logits(reference, inputs), rtol=1e-5, atol=1e-5)


def test_dora_and_lora_bias_equal_peft(llava, tmp_path):
    from peft import LoraConfig, get_peft_model

    root, info, _ = llava
    inputs = tiny_inputs(info)
    for name, kw in (("dora", dict(use_dora=True, target_modules=r".*language_model.*\.(q_proj|v_proj)")),
                     ("bias", dict(lora_bias=True, target_modules=["fc1", "linear_1"]))):
        model, _ = load(info.path)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, **kw))
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "lora_" in n:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1)
        peft_model.save_pretrained(str(tmp_path / name))
        merge(tmp_path / name, base=info.path, out=tmp_path / f"out-{name}", dtype="fp32", check=False)
        ours = logits(load(tmp_path / f"out-{name}")[0], inputs)
        torch.testing.assert_close(ours, logits(peft_merged(info.path, tmp_path / name), inputs),
                                   rtol=1e-5, atol=1e-5)


# ---- refusals and safety ---------------------------------------------------------------------

def test_unsupported_adapters_are_refused_with_the_reason(llava, tmp_path):
    root, info, adapters = llava
    for key, value, words in (("peft_type", "IA3", "not LoRA"), ("init_lora_weights", "pissa", "modified base"),
                              ("trainable_token_indices", [5], "trainable_token_indices"),
                              ("layer_replication", [[0, 2]], "layer_replication")):
        ad = tmp_path / f"ad-{key}"
        ad.mkdir()
        cfg = json.loads((adapters["plain"] / "adapter_config.json").read_text())
        cfg[key] = value
        (ad / "adapter_config.json").write_text(json.dumps(cfg))
        (ad / "adapter_model.safetensors").write_bytes((adapters["plain"] / "adapter_model.safetensors").read_bytes())
        with pytest.raises(UsageError, match=words):
            merge(ad, base=info.path, out=tmp_path / f"out-{key}")
        assert not (tmp_path / f"out-{key}").exists()


def test_adapter_for_another_base_is_refused(llava, tmp_path):
    root, info, adapters = llava
    other = make_llava_model(tmp_path / "wide", family="llava", hidden=48)
    with pytest.raises(ArtifactError, match="does not fit base tensor"):
        merge(adapters["plain"], base=other.path, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_modules_matching_nothing_are_refused_not_dropped(llava, tmp_path):
    """peft would only log "Found missing adapter keys" and merge nothing."""
    from safetensors.torch import load_file, save_file

    root, info, adapters = llava
    ad = tmp_path / "ad"
    ad.mkdir()
    (ad / "adapter_config.json").write_bytes((adapters["plain"] / "adapter_config.json").read_bytes())
    state = load_file(str(adapters["plain"] / "adapter_model.safetensors"))
    save_file({k.replace("language_model", "text_decoder"): v for k, v in state.items()},
              str(ad / "adapter_model.safetensors"))
    with pytest.raises(ArtifactError, match="match no tensor of the base"):
        merge(ad, base=info.path, out=tmp_path / "out")


def test_existing_out_overlap_and_disk_space(llava, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    root, info, adapters = llava
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="--force"):
        merge(adapters["plain"], base=info.path, out=out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="overlaps the input"):
        merge(adapters["plain"], base=info.path, out=info.path, force=True)
    with pytest.raises(UsageError, match="overlaps the input"):
        merge(adapters["plain"], base=info.path, out=adapters["plain"] / "merged")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    with pytest.raises(ArtifactError, match="GB free"):
        merge(adapters["plain"], base=info.path, out=tmp_path / "new")
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    merge(adapters["plain"], base=info.path, out=out, force=True, check=False)
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()


def test_inputs_are_not_modified(llava, tmp_path):
    root, info, adapters = llava

    def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}

    before = snapshot(info.path) | snapshot(adapters["patterns"])
    merge(adapters["patterns"], base=info.path, out=tmp_path / "out", check=False)
    assert snapshot(info.path) | snapshot(adapters["patterns"]) == before


def test_cli_merge_prints_report_and_exit_codes(llava, tmp_path, capsys):
    from doctor.cli import main

    root, info, adapters = llava
    out = tmp_path / "out"
    assert main(["merge", str(adapters["plain"]), "--base", str(info.path), "-o", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "merged" in text and "Checkpoint doctor on" in text and str(out) in text
    assert main(["merge", str(adapters["plain"]), "--base", str(info.path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err
    assert main(["merge", str(tmp_path / "nope"), "-o", str(tmp_path / "o2")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["merge", str(adapters["plain"]), "-o", str(tmp_path / "o3"), "--base", str(tmp_path / "empty")]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_fixer_apply_writes_beside_the_adapter(llava):
    from doctor.fixers import merge as merge_fixer

    from doctor.artifacts import classify
    from doctor.runner import Options

    root, info, adapters = llava
    art = classify(adapters["rslora"])
    outcome = merge_fixer.apply(art, [], Options(base=str(info.path), diff=True))
    assert outcome.diff and not Path(str(adapters["rslora"]) + "-merged").exists()
    outcome = merge_fixer.apply(art, [], Options(base=str(info.path)))
    assert outcome.error is None and outcome.written == [str(adapters["rslora"]) + "-merged"]
    assert clean_load(load(Path(outcome.written[0]))[1])

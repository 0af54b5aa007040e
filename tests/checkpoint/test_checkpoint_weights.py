"""CKP100-CKP107: weights against config.json. The verdict is checked against the real loader:
wherever vlm-doctor predicts the load, ``from_pretrained(..., output_loading_info=True)`` reports
exactly the same missing, unexpected and mismatched keys, for llava, llava_next and mllama, in
the layout transformers 5 saves, the transformers 4.x layout, and the in-memory layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from doctor.testing import make_llava_model
from doctor.testing import weights as _weights

from tests.helpers.checkpoint import (
    FAMILIES,
    assert_fails,
    assert_passes,
    build_clean_models,
    clone,
    edit_json,
    run_ckp,
    to_layout,
)

LOAD_CODES = ("CKP100", "CKP101", "CKP102", "CKP103", "CKP104", "CKP105", "CKP106", "CKP107")
PROJECTOR = "multi_modal_projector"
VISION = {"llava": "vision_tower", "llava_next": "vision_tower", "mllama": "vision_model"}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_clean_models(tmp_path_factory)




def loader_report(path: Path) -> tuple[Any, dict[str, Any]]:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path, output_loading_info=True, ignore_mismatched_sizes=True)


def assert_agrees(path: Path) -> Any:
    """vlm-doctor's prediction == transformers' own load report, from the template and from the build."""
    from doctor.checks.checkpoint.expected import predict_load
    from doctor.checks.checkpoint.fixtures import read_model_weights

    weights = read_model_weights(path)
    pred = predict_load(path, weights)  # from the config's template (learned on first use)
    assert pred == predict_load(path, weights, use_templates=False)  # == the model built on the meta device
    model, info = loader_report(path)
    assert sorted(pred.missing) == sorted(info["missing_keys"])
    assert pred.unexpected_as_loaded == sorted(info["unexpected_keys"])
    loader_mismatched = {m[0] if isinstance(m, tuple) else m for m in info["mismatched_keys"]}
    assert {mem for _, mem, _, _ in pred.mismatched} == loader_mismatched
    return model, pred


@pytest.mark.parametrize("layout", ("saved", "v4", "memory"))
@pytest.mark.parametrize("family", FAMILIES)
def test_clean_in_every_layout_agrees_with_from_pretrained(clean: dict[str, Any], tmp_path: Path, family: str,
                                                           layout: str) -> None:
    model = to_layout(clone(clean[family].path, tmp_path / "m"), layout)
    _, pred = assert_agrees(model)
    assert not pred.missing and not pred.unexpected and not pred.mismatched
    report = run_ckp(model)
    for code in LOAD_CODES:
        assert_passes(report, code)


@pytest.mark.parametrize("layout", ("saved", "v4"))
@pytest.mark.parametrize("family", FAMILIES)
def test_missing_projector_is_really_random(clean: dict[str, Any], tmp_path: Path, family: str, layout: str) -> None:
    import torch

    from doctor.checks.checkpoint.fixtures import read_model_weights

    info = make_llava_model(tmp_path / "m", family=family, drop_tensors=[PROJECTOR])
    to_layout(info.path, layout)
    [f] = assert_fails(run_ckp(info.path), "CKP104", "the projector", "initializes them at random")
    # named as save_pretrained writes them, so the user knows what to add to the file
    assert f.location is not None and (f.location.tensor or "").startswith("multi_modal_projector.")
    model, pred = assert_agrees(info.path)
    assert pred.missing and all("multi_modal_projector" in k for k in pred.missing)
    # transformers really initialized it at random: it differs from the trained projector (same seed)
    trained = _weights.load(clean[family].path / "model.safetensors")
    name = next(k for k in trained if k.startswith(PROJECTOR) and k.endswith("weight"))
    loaded = model.get_parameter("model." + name)
    assert loaded.shape == trained[name].shape and not torch.allclose(loaded, trained[name])
    assert read_model_weights(info.path).complete


def test_missing_image_newline(tmp_path: Path) -> None:
    info = make_llava_model(tmp_path / "m", family="llava_next", drop_tensors=["image_newline"])
    assert_fails(run_ckp(info.path), "CKP104", "image_newline: 1 tensor(s) missing from the weights (image_newline)")
    _, pred = assert_agrees(info.path)
    assert pred.missing == ["model.image_newline"]


@pytest.mark.parametrize("family", FAMILIES)
def test_missing_vision_tower(tmp_path: Path, family: str) -> None:
    info = make_llava_model(tmp_path / "m", family=family, drop_tensors=[VISION[family]])
    assert_fails(run_ckp(info.path), "CKP104", "the vision tower")
    assert_agrees(info.path)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_leftovers(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    import torch

    model = clone(clean[family].path, tmp_path / "m")
    q = "language_model.model.layers.0.self_attn.q_proj"

    def unfold(state: dict[str, Any]) -> dict[str, Any]:
        state[f"{q}.base_layer.weight"] = state.pop(f"{q}.weight")
        state[f"{q}.lora_A.default.weight"] = torch.zeros(4, state[f"{q}.base_layer.weight"].shape[1])
        state[f"{q}.lora_B.default.weight"] = torch.zeros(state[f"{q}.base_layer.weight"].shape[0], 4)
        return state

    _weights.rewrite_weights(model, unfold)
    report = run_ckp(model)
    assert_fails(report, "CKP103", "3 LoRA tensors", ".base_layer.")
    assert_fails(report, "CKP104", "the language model: 1 tensor(s)", "q_proj.weight")
    assert_passes(report, "CKP105")  # the LoRA names are CKP103's, not repeated
    _, pred = assert_agrees(model)
    assert len(pred.unexpected) == 3


def test_adapter_saved_instead_of_merged_model(clean: dict[str, Any], tmp_path: Path) -> None:
    from doctor.testing import make_lora_adapter

    adapter = make_lora_adapter(clean["llava"].path, tmp_path / "adapter", train_steps=0)
    model = tmp_path / "merged"
    model.mkdir()
    (model / "config.json").write_bytes((clean["llava"].path / "config.json").read_bytes())
    (model / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    report = run_ckp(model)
    assert_fails(report, "CKP102", "adapter_model.safetensors")
    assert_passes(report, "CKP101")
    # the same tensors saved under the model's file name
    (model / "adapter_model.safetensors").rename(model / "model.safetensors")
    assert_fails(run_ckp(model), "CKP102", "are LoRA tensors")


def test_no_weights_at_all_and_shards_without_index(clean: dict[str, Any], tmp_path: Path) -> None:
    model = tmp_path / "merged"
    model.mkdir()
    (model / "config.json").write_bytes((clean["llava"].path / "config.json").read_bytes())
    report = run_ckp(model)
    assert_fails(report, "CKP101", "no weights")
    assert all(r.status.value == "skip" for r in report.results if r.code in ("CKP104", "CKP105", "CKP106"))
    sharded = make_llava_model(tmp_path / "sharded", family="llava", shard_size="40KB")
    (sharded.path / "model.safetensors.index.json").unlink()
    assert_fails(run_ckp(sharded.path), "CKP101", "index file is missing")
    with pytest.raises(OSError):
        loader_report(sharded.path)


@pytest.mark.parametrize("family", FAMILIES)
def test_vocab_resized_without_config_is_a_shape_mismatch(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    from transformers import AutoModelForImageTextToText

    model = clone(clean[family].path, tmp_path / "m")
    vocab = json.loads((model / "config.json").read_text())["text_config"]["vocab_size"]
    edit_json(model / "config.json", text_config__vocab_size=vocab + 16)
    found = assert_fails(run_ckp(model), "CKP106", "embed_tokens.weight")
    assert any("lm_head" in f.message for f in found)
    _, pred = assert_agrees(model)
    assert pred.mismatched
    with pytest.raises(RuntimeError, match="mismatch"):
        AutoModelForImageTextToText.from_pretrained(model)


def test_unexpected_tensor(clean: dict[str, Any], tmp_path: Path) -> None:
    import torch

    model = clone(clean["llava_next"].path, tmp_path / "m")
    _weights.rewrite_weights(model, lambda s: {**s, "value_head.weight": torch.ones(1, 32)})
    [f] = assert_fails(run_ckp(model), "CKP105", "value_head.weight", "drops them")
    assert f.severity.value == "warning"
    _, pred = assert_agrees(model)
    assert pred.unexpected == ["value_head.weight"]


def test_legacy_position_ids_buffer_is_not_unexpected(clean: dict[str, Any], tmp_path: Path) -> None:
    """4.x CLIP checkpoints carry a persistent ``position_ids``; transformers 5 ignores it."""
    import torch

    model = to_layout(clone(clean["llava"].path, tmp_path / "m"), "v4")
    name = "vision_tower.vision_model.embeddings.position_ids"
    _weights.rewrite_weights(model, lambda s: {**s, name: torch.arange(5).unsqueeze(0)})
    _, pred = assert_agrees(model)
    assert not pred.unexpected
    assert_passes(run_ckp(model), "CKP105")


@pytest.mark.parametrize("family", ("llava", "llava_next"))
def test_tied_embeddings_without_lm_head(tmp_path: Path, family: str) -> None:
    info = make_llava_model(tmp_path / "m", family=family, drop_tensors=["language_model.lm_head"],
                            config_overrides={"tie_word_embeddings": True, "text_config.tie_word_embeddings": True})
    _, pred = assert_agrees(info.path)
    assert not pred.missing and pred.tied
    assert_passes(run_ckp(info.path), "CKP104")
    # not tied: the same file leaves lm_head at random
    edit_json(info.path / "config.json", tie_word_embeddings=False, text_config__tie_word_embeddings=False)
    assert_fails(run_ckp(info.path), "CKP104", "lm_head")
    assert_agrees(info.path)


def test_mllama_never_ties_lm_head(tmp_path: Path) -> None:
    """mllama's embedding has 8 more rows than lm_head, so tie_word_embeddings cannot tie them."""
    info = make_llava_model(tmp_path / "m", family="mllama", drop_tensors=["language_model.lm_head"],
                            config_overrides={"tie_word_embeddings": True, "text_config.tie_word_embeddings": True})
    _, pred = assert_agrees(info.path)
    assert pred.missing == ["lm_head.weight"]
    assert_fails(run_ckp(info.path), "CKP104", "lm_head")


def test_config_the_class_cannot_build(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["llava"].path, tmp_path / "m")
    edit_json(model / "config.json", text_config__pad_token_id=5000)
    with pytest.raises(Exception, match="Padding_idx"):
        loader_report(model)
    report = run_ckp(model)
    assert_fails(report, "CKP100", "Padding_idx")
    assert all(r.status.value == "skip" for r in report.results if r.code in ("CKP104", "CKP105", "CKP106"))


@pytest.mark.parametrize("family", FAMILIES)
def test_bin_weights_read_statically(tmp_path: Path, family: str) -> None:
    info = make_llava_model(tmp_path / "clean", family=family, weights="bin")
    assert info.weight_files == ["pytorch_model.bin"]
    report = run_ckp(info.path)
    for code in LOAD_CODES:
        assert_passes(report, code)
    assert_agrees(info.path)
    broken = make_llava_model(tmp_path / "noproj", family=family, weights="bin", drop_tensors=[PROJECTOR])
    assert_fails(run_ckp(broken.path), "CKP104", "the projector")


def test_mixed_dtypes_in_model_and_lone_file(clean: dict[str, Any], tmp_path: Path) -> None:
    import torch

    model = clone(clean["llava"].path, tmp_path / "m")
    name = "language_model.model.layers.0.self_attn.q_proj.weight"
    _weights.rewrite_weights(model, lambda s: {**s, name: s[name].to(torch.float16)})
    [f] = assert_fails(run_ckp(model), "CKP107", "F32", "F16", name)
    assert f.location is not None and f.location.tensor == name
    assert_fails(run_ckp(model / "model.safetensors"), "CKP107", name)
    assert_passes(run_ckp(clean["llava"].path / "model.safetensors"), "CKP107")


def test_broken_header_skips_instead_of_reporting_everything_missing(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["mllama"].path, tmp_path / "m")
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[:-100])  # truncated download
    report = run_ckp(model)
    assert "CKP104" not in {f.code for f in report.findings}
    assert all(r.status.value == "skip" for r in report.results if r.code in ("CKP104", "CKP105", "CKP106"))

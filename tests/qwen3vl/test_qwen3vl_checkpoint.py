"""Qwen3-VL (``qwen3_vl``) as a family: the builder's folders load clean with the installed
transformers, CKP is clean on them, the load prediction equals ``from_pretrained``'s report, and
each table-driven CKP5xx defect is found and shown real (with a clean twin). Also what the table
measured: one naming world, and an interleaved rotary embedding that never fails on its sections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from doctor import layouts
from doctor.families import family_of
from doctor.testing.qwen3_vl import make_qwen3_vl_model, qwen3_vl_inputs

from tests.helpers.qwen import codes, fails, passes, run

pytestmark = pytest.mark.filterwarnings("ignore")

FORMS = [("hub", "split"), ("v5", "native")]


def build(tmp: Path, name: str, **kw: Any):
    return make_qwen3_vl_model(tmp / name, **kw)


def forward(info: Any, image_shape: tuple[int, int] = (64, 96)) -> Any:
    """Logits of one image + text forward through the real processor and model."""
    import torch
    import transformers

    from doctor.testing.torch_context import single_thread

    with single_thread():
        model = transformers.AutoModelForImageTextToText.from_pretrained(info.path).eval()
        with torch.no_grad():
            return model(**qwen3_vl_inputs(info, image_shape)).logits


def forward_error(info: Any) -> str | None:
    try:
        forward(info)
    except Exception as e:  # noqa: BLE001 - any failure is the evidence
        return f"{type(e).__name__}: {e}"
    return None


def loading_info(info: Any) -> dict[str, Any]:
    import transformers

    _, loading = transformers.AutoModelForImageTextToText.from_pretrained(info.path, output_loading_info=True)
    return loading


@pytest.mark.parametrize(("form", "processor_layout"), FORMS)
def test_builder_folder_loads_clean_and_ckp_is_clean(tmp_path: Path, form: str, processor_layout: str) -> None:
    import transformers

    info = build(tmp_path, "clean", config_form=form, processor_layout=processor_layout)
    model, loading = transformers.AutoModelForImageTextToText.from_pretrained(info.path, output_loading_info=True)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert not any(loading[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))
    assert model.model.language_model.rotary_emb.mrope_section == info.mrope_section  # the hub's rope_scaling is read
    report = run(info.path, "CKP")
    assert codes(report) == set(), [(f.code, f.message) for f in report.findings]
    for code in ("CKP104", "CKP105", "CKP106", "CKP403", "CKP406", "CKP502", "CKP503", "CKP504", "CKP505", "CKP506"):
        passes(report, code)
    assert forward_error(info) is None


def test_one_naming_world(tmp_path: Path) -> None:
    """The saved names are the in-memory ones; Qwen2-VL's on-disk spelling does not load (no key
    conversion for qwen3_vl), so the table has no legacy row."""
    from safetensors import safe_open

    from doctor.testing import weights as _weights
    from doctor.testing.qwen import to_v4_keys

    info = build(tmp_path, "m")
    with safe_open(str(info.path / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert any(".deepstack_merger_list.0." in n for n in names)
    guess = layouts.classify(names)
    assert guess.layout is layouts.QWEN_MODERN and not guess.mixed
    assert layouts.disk_to_memory(names, "qwen3_vl", "5.25.0") == {n: n for n in names}
    assert layouts.in_memory_layout("qwen3_vl", "4.57.0")[0] is layouts.QWEN_MODERN
    parts = {n: layouts.part_of(n) for n in names}
    assert {n for n, p in parts.items() if p == "projector"} == {n for n in names if n.startswith("model.visual.merger.")}
    assert all(p == "vision" for n, p in parts.items() if ".deepstack_merger_list." in n or ".blocks." in n)
    assert [lay.name for lay in family_of("qwen3_vl").layouts] == ["qwen-modern"]
    legacy = build(tmp_path, "legacy")
    _weights.rewrite_weights(legacy.path, to_v4_keys)
    loading = loading_info(legacy)
    assert loading["missing_keys"] and all(k.startswith("model.language_model.") for k in loading["missing_keys"])


# ---- the load prediction against from_pretrained ---------------------------------------------------


@pytest.mark.parametrize("plant", ["clean", "drop-merger", "drop-deepstack", "drop-layer", "extra", "shards"])
def test_prediction_equals_from_pretrained(tmp_path: Path, plant: str) -> None:
    import torch

    from doctor.checks.checkpoint.expected import predict_load
    from doctor.checks.checkpoint.fixtures import read_model_weights

    from doctor.testing import weights as _weights

    info = build(tmp_path, "m", shard_size="40KB" if plant == "shards" else None)
    drop = {"drop-merger": ".merger.linear_fc2.", "drop-deepstack": ".deepstack_merger_list.0.",
            "drop-layer": ".layers.1.mlp."}.get(plant)
    if drop:
        _weights.rewrite_weights(info.path, lambda s: {k: v for k, v in s.items() if drop not in k})
    elif plant == "extra":
        _weights.rewrite_weights(info.path, lambda s: {**s, "model.visual.extra_head.weight": torch.zeros(2, 2)})
    pred = predict_load(info.path, read_model_weights(info.path))
    loading = loading_info(info)
    assert sorted(pred.missing) == sorted(loading["missing_keys"])
    assert pred.unexpected_as_loaded == sorted(loading["unexpected_keys"])
    assert [m[1] for m in pred.mismatched] == sorted(k for k, *_ in loading["mismatched_keys"])
    if plant in ("clean", "shards"):
        assert not pred.missing and not pred.unexpected
    if drop:
        assert pred.missing and all(drop in k for k in pred.missing)
    if plant == "extra":
        assert pred.unexpected_as_loaded == ["model.visual.extra_head.weight"]


def test_dropped_merger_is_the_projector(tmp_path: Path) -> None:
    info = build(tmp_path, "nomerger", drop_tensors=["model.visual.merger."])
    (found,) = fails(run(info.path, "CKP"), "CKP104", "the projector", "visual.merger.")
    assert set(loading_info(info)["missing_keys"]) >= {"model.visual.merger.linear_fc2.weight"}
    twin = build(tmp_path, "twin")
    passes(run(twin.path, "CKP"), "CKP104")


# ---- mrope: interleaved, so CKP501's sum rule does not apply ---------------------------------------


def test_mrope_sections_are_not_a_split(tmp_path: Path) -> None:
    """Qwen2-VL's rotary embedding splits head_dim / 2 by the sections and raises when they do not
    add up (CKP501). Qwen3-VL's interleaves: it reads only the height / width sections as strided
    slices, clipped to the head, and never raises. Sections summing to 15 for a head of 16 run and
    give the very logits of [2, 3, 3]; so CKP501 stays silent (an error here would be false)."""
    import torch

    twin = build(tmp_path, "twin", mrope_section=[2, 3, 3])
    odd = build(tmp_path, "odd", mrope_section=[5, 5, 5])
    assert sum(odd.mrope_section) * 2 != odd.head_dim
    assert torch.equal(forward(twin), forward(odd))
    for info in (odd, twin):
        report = run(info.path, "CKP")
        assert "CKP501" not in codes(report)
    assert family_of("qwen3_vl").rope is None and family_of("qwen2_5_vl").rope == "mrope"


# ---- processor geometry (CKP503) --------------------------------------------------------------------


@pytest.mark.parametrize("processor_layout", ["split", "native"])
def test_processor_merge_size_other_than_spatial_merge_size(tmp_path: Path, processor_layout: str) -> None:
    bad = build(tmp_path, "bad", processor_layout=processor_layout, processor_overrides={"merge_size": 1})
    (found,) = fails(run(bad.path, "CKP"), "CKP503", "merge_size is 1", "vision_config.spatial_merge_size is 2")
    assert found.location.pointer.endswith("/merge_size")
    assert "Image features and image tokens do not match" in (forward_error(bad) or "")
    twin = build(tmp_path, "twin", processor_layout=processor_layout)
    passes(run(twin.path, "CKP"), "CKP503")


def test_processor_patch_size_left_out_takes_qwen2_vl_default(tmp_path: Path) -> None:
    """``qwen3_vl`` maps to Qwen2-VL's image processor, whose class default patch_size is 14: a
    preprocessor_config.json without ``patch_size`` cuts 14-px patches for a 16-px encoder."""
    from doctor.testing import DELETE

    bad = build(tmp_path, "bad", processor_overrides={"patch_size": DELETE})
    fails(run(bad.path, "CKP"), "CKP503", "has no patch_size (the processor then uses 14)",
          "vision_config.patch_size is 16")
    assert forward_error(bad) is not None


# ---- token ids (CKP505) ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["video_token_id", "vision_start_token_id", "vision_end_token_id"])
def test_token_id_beyond_the_embedding(tmp_path: Path, key: str) -> None:
    import torch
    import transformers

    bad = build(tmp_path, "bad", config_overrides={key: 400})
    (found,) = fails(run(bad.path, "CKP"), "CKP505", f"{key} is 400", "307 rows")
    assert found.location.key == key
    # shown real: the embedding has no row 400
    model = transformers.AutoModelForImageTextToText.from_pretrained(bad.path)
    with pytest.raises(IndexError):
        model.get_input_embeddings()(torch.tensor([[getattr(model.config, key)]]))
    twin = build(tmp_path, "twin")
    passes(run(twin.path, "CKP"), "CKP505")


def test_chat_template_writes_the_placeholder(tmp_path: Path) -> None:
    info = build(tmp_path, "m")
    template = json.loads((info.path / "chat_template.json").read_text())["chat_template"]
    assert "<|vision_start|><|image_pad|><|vision_end|>" in template
    passes(run(info.path, "CKP"), "CKP506")


# ---- merger width (CKP502) -------------------------------------------------------------------------


def test_merger_width_mismatch(tmp_path: Path) -> None:
    bad = build(tmp_path, "wide", vision_out_hidden=32)
    (found,) = fails(run(bad.path, "CKP"), "CKP502", "vision_config.out_hidden_size is 32", "hidden_size is 64")
    assert forward_error(bad) is not None
    passes(run(build(tmp_path, "twin").path, "CKP"), "CKP502")
    # config.json edited against the weights (merger.linear_fc2 is 64 wide): CKP106 names the tensors, not CKP502
    edited = build(tmp_path, "edited", config_overrides={"vision_config.out_hidden_size": 32})
    report = run(edited.path, "CKP")
    fails(report, "CKP106", "model.visual.merger.linear_fc2.weight")
    assert "CKP502" not in codes(report)


def _class_defaults(module: str, cls: str) -> dict[str, Any]:
    """Literal class attributes of an installed transformers class, read from its source (the
    video processor class cannot be imported without torchvision)."""
    import ast
    import importlib.util

    source = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls)
    out = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            try:  # literals and constant arithmetic (128 * 32 * 32), nothing named
                out[stmt.targets[0].id] = eval(compile(ast.Expression(stmt.value), cls, "eval"), {"__builtins__": {}})
            except Exception:  # noqa: BLE001 - a name or call: not a literal default
                pass
    return out


def test_table_defaults_are_the_installed_classes() -> None:
    import transformers

    fam = family_of("qwen3_vl")
    video = _class_defaults("transformers.models.qwen3_vl.video_processing_qwen3_vl", "Qwen3VLVideoProcessor")
    assert {k: video[k] for k in ("patch_size", "merge_size", "temporal_patch_size")} == \
        {k: fam.video_processor_defaults[k] for k in ("patch_size", "merge_size", "temporal_patch_size")}
    size = video["size"]
    assert (size["shortest_edge"], size["longest_edge"]) == (fam.video_processor_defaults["min_pixels"],
                                                             fam.video_processor_defaults["max_pixels"])
    image = transformers.Qwen2VLImageProcessorPil
    assert (image.patch_size, image.merge_size, image.temporal_patch_size) == (14, 2, 2)
    assert (image.size["shortest_edge"], image.size["longest_edge"]) == (fam.processor_defaults["min_pixels"],
                                                                         fam.processor_defaults["max_pixels"])


@pytest.mark.parametrize("processor_layout", ["split", "native"])
def test_video_processor_key_left_out_takes_the_video_class_default(tmp_path: Path, processor_layout: str) -> None:
    """Qwen3VLVideoProcessor's own default patch_size is 16 (the image class's is 14): a video
    processor file without it is fine, one saying 14 is not."""
    from doctor.testing import weights as _weights

    def edit(info: Any, value: Any) -> Path:
        if processor_layout == "split":
            target, key = info.path / "video_preprocessor_config.json", "patch_size"
        else:
            target, key = info.path / "processor_config.json", "video_processor.patch_size"
        _weights.patch_json(target, {key: value})
        return target

    from doctor.testing import DELETE

    left_out = build(tmp_path, "left-out", processor_layout=processor_layout)
    edit(left_out, DELETE)
    passes(run(left_out.path, "CKP"), "CKP503")
    bad = build(tmp_path, "bad", processor_layout=processor_layout)
    target = edit(bad, 14)
    (found,) = fails(run(bad.path, "CKP"), "CKP503", "patch_size is 14", "vision_config.patch_size is 16")
    assert found.path == str(target)


def test_pixel_limits_against_the_training_length(tmp_path: Path) -> None:
    import torch
    import transformers

    from doctor.testing.images import pil_image
    from doctor.testing.qwen3_vl import processor

    def truncated_error(info: Any) -> str | None:
        proc = processor(info)
        text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                        tokenize=False, add_generation_prompt=True)
        model = transformers.AutoModelForImageTextToText.from_pretrained(info.path)
        try:
            inputs = proc(images=pil_image((32 * 32, 32 * 40), 0, "blank"), text=text, truncation=True,
                          max_length=512, return_tensors="pt")
            with torch.no_grad():
                model(**inputs)
        except Exception as e:  # noqa: BLE001
            return str(e)
        return None

    big = build(tmp_path, "big", max_pixels=32 * 32 * 1280, tokenizer_overrides={"model_max_length": 512})
    (found,) = fails(run(big.path, "CKP"), "CKP504", "up to 1280 image tokens", "model_max_length 512")
    assert found.location.pointer == "/size/longest_edge"
    assert "image" in (truncated_error(big) or "")
    twin = build(tmp_path, "twin", max_pixels=32 * 32 * 256, tokenizer_overrides={"model_max_length": 512})
    passes(run(twin.path, "CKP"), "CKP504")
    assert truncated_error(twin) is None

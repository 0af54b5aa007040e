"""CKP on tiny real Gemma 3 folders in both key layouts: the builder's folders load clean and are
CKP-clean (no errors), the load prediction equals ``from_pretrained(output_loading_info=True)``
for clean, dropped, extra and sharded weights, a missing projector is named as the projector, and
token ids beyond the embedding are found (each shown real with the installed transformers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from doctor.findings import Severity
from doctor.testing import weights as _weights
from doctor.testing.gemma3 import BOI_TOKEN, make_gemma3_model

from tests.helpers.gemma3 import codes, fails, forward_error, passes, run

pytestmark = pytest.mark.filterwarnings("ignore")

LAYOUTS = ("saved", "modern")


def build(tmp: Path, name: str, layout: str = "saved", **kw: Any):
    return make_gemma3_model(tmp / name, layout=layout, **kw)  # type: ignore[arg-type]


def errors(report) -> list[tuple[str, str]]:
    return [(f.code, f.message) for f in report.findings if f.severity is Severity.ERROR and f.path != "<environment>"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_builder_folder_loads_clean_and_is_ckp_clean(tmp_path: Path, layout: str) -> None:
    import transformers

    info = build(tmp_path, "clean", layout)
    _, loading = transformers.AutoModelForImageTextToText.from_pretrained(info.path, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"] and not loading["mismatched_keys"]
    report = run(info.path, "CKP")
    assert errors(report) == []
    for code in ("CKP005", "CKP104", "CKP105", "CKP106", "CKP402", "CKP403", "CKP505", "CKP506"):
        passes(report, code)
    # the only warnings: Gemma's RMSNorm weights, stored as an offset from 1 and zero-initialised
    zero = [f for f in report.findings if f.code == "CKP303"]
    assert {f.code for f in report.findings if f.path != "<environment>"} <= {"CKP303"}
    assert all("norm" in f.message for f in zero)
    assert forward_error(info) is None


# ---- the load prediction against from_pretrained ---------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("plant", ["clean", "drop-projector", "drop-layer", "extra", "shards"])
def test_prediction_equals_from_pretrained(tmp_path: Path, layout: str, plant: str) -> None:
    import torch
    import transformers

    from doctor.checks.checkpoint.expected import predict_load
    from doctor.checks.checkpoint.fixtures import read_model_weights

    info = build(tmp_path, "m", layout, shard_size="40KB" if plant == "shards" else None)
    if plant == "drop-projector":
        _weights.rewrite_weights(info.path, lambda s: {k: v for k, v in s.items() if "multi_modal_projector." not in k})
    elif plant == "drop-layer":
        _weights.rewrite_weights(info.path, lambda s: {k: v for k, v in s.items() if ".layers.1.mlp." not in k})
    elif plant == "extra":
        name = "model.vision_tower.extra_head.weight" if layout == "modern" else "vision_tower.extra_head.weight"
        _weights.rewrite_weights(info.path, lambda s: {**s, name: torch.zeros(2, 2)})
    pred = predict_load(info.path, read_model_weights(info.path))
    _, loading = transformers.AutoModelForImageTextToText.from_pretrained(info.path, output_loading_info=True)
    assert sorted(pred.missing) == sorted(loading["missing_keys"])
    assert pred.unexpected_as_loaded == sorted(loading["unexpected_keys"])
    assert [m[1] for m in pred.mismatched] == sorted(k for k, *_ in loading["mismatched_keys"])
    if plant in ("clean", "shards"):
        assert not pred.missing and not pred.unexpected
    if plant == "drop-projector":
        assert set(pred.missing) == {"model.multi_modal_projector.mm_input_projection_weight",
                                     "model.multi_modal_projector.mm_soft_emb_norm.weight"}
    if plant == "extra":
        assert len(pred.unexpected) == 1 and not pred.missing


@pytest.mark.parametrize("layout", LAYOUTS)
def test_projector_missing_is_named_the_projector(tmp_path: Path, layout: str) -> None:
    import transformers

    prefix = "model.multi_modal_projector" if layout == "modern" else "multi_modal_projector"
    info = build(tmp_path, "noproj", layout, drop_tensors=[prefix])
    found = fails(run(info.path, "CKP"), "CKP104", "the projector", "multi_modal_projector")
    assert len(found) == 1
    _, loading = transformers.AutoModelForImageTextToText.from_pretrained(info.path, output_loading_info=True)
    assert "model.multi_modal_projector.mm_input_projection_weight" in loading["missing_keys"]
    # the clean twin keeps the projector
    passes(run(build(tmp_path, "twin", layout).path, "CKP"), "CKP104")


def test_a_dropped_language_tensor_is_missing(tmp_path: Path) -> None:
    info = build(tmp_path, "nolayer", drop_tensors=["language_model.model.layers.1.mlp.down_proj"])
    fails(run(info.path, "CKP"), "CKP104", "layers.1.mlp.down_proj")


# ---- token ids ------------------------------------------------------------------------------------


def test_image_token_beyond_the_embedding(tmp_path: Path) -> None:
    """Gemma 3 maps image token ids >= the text vocab_size to 0 before the embedding lookup, so a
    forward passes; training on labels that keep the image tokens raises in the loss."""
    import torch
    import transformers

    from doctor.testing.gemma3 import gemma3_inputs

    clean = build(tmp_path, "clean")
    beyond = build(tmp_path, "beyond", text_vocab_size=clean.image_token_id)  # <image_soft_token> gets no row
    assert beyond.image_token_id == beyond.text_vocab_size
    report = run(beyond.path, "CKP")
    fails(report, "CKP005", f"image_token_index is {beyond.image_token_id}", f"{beyond.text_vocab_size} rows")
    assert "CKP505" not in codes(report)  # the image token is CKP005's
    assert forward_error(beyond) is None
    model = transformers.AutoModelForImageTextToText.from_pretrained(beyond.path)
    inputs = gemma3_inputs(beyond)
    with pytest.raises(IndexError, match="out of bounds"), torch.no_grad():
        model(**inputs, labels=inputs["input_ids"])
    passes(run(clean.path, "CKP"), "CKP005")


def test_image_token_id_not_the_tokenizers(tmp_path: Path) -> None:
    info = build(tmp_path, "other", config_overrides={"image_token_index": 300})  # <start_of_image>'s id
    fails(run(info.path, "CKP"), "CKP403", "'<image_soft_token>' is 305")
    assert "Image features and image tokens do not match" in (forward_error(info) or "")
    twin = build(tmp_path, "twin")
    passes(run(twin.path, "CKP"), "CKP403")


def test_chat_template_writes_the_begin_of_image_placeholder(tmp_path: Path) -> None:
    from doctor.testing.gemma3 import processor

    info = build(tmp_path, "m")
    proc = processor(info)
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                    tokenize=False, add_generation_prompt=True)
    assert BOI_TOKEN in text and proc.image_token == BOI_TOKEN


@pytest.mark.parametrize("saved", [9, None])
def test_image_seq_length_that_disagrees_with_the_model_is_ckp507(tmp_path: Path, saved: int | None) -> None:
    """processor_config.json writes another run of soft tokens than the projector pools to: the
    real processor + model raise; the twin that agrees passes."""
    import json

    info = build(tmp_path, "m")  # mm_tokens_per_image 4
    conf = info.path / "processor_config.json"
    data = json.loads(conf.read_text())
    if saved is None:
        del data["image_seq_length"]  # the processor's default, 256
    else:
        data["image_seq_length"] = saved
    conf.write_text(json.dumps(data))
    shown = 256 if saved is None else saved
    (found,) = fails(run(info.path, "CKP"), "CKP507", "mm_tokens_per_image is 4", f"writes {shown} image tokens")
    assert found.severity is Severity.ERROR and found.location.pointer == "/image_seq_length"
    assert "Image features and image tokens do not match" in (forward_error(info) or "")
    twin = build(tmp_path, "twin")
    passes(run(twin.path, "CKP"), "CKP507")
    assert forward_error(twin) is None

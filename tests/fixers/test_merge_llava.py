"""Merging an original-LLaVA LoRA run (finetune_lora.sh) and consolidating an XTuner release:
the projector in the result is the trained one, the LLM and vision weights are what peft's
merge gives, and the result computes what LLaVA's own builder would have loaded."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from doctor.fixers.merge import merge  # noqa: E402

from doctor.errors import ArtifactError, UsageError  # noqa: E402
from doctor.testing.original import make_llava_original_lora  # noqa: E402
from doctor.testing.xtuner import make_xtuner_release  # noqa: E402

from tests.helpers.convert import IMAGE_TOKEN_INDEX, hf_forward, original_forward, read_state  # noqa: E402


def peft_merged_state(base_cls: Any, base: Path, adapter: Path) -> dict[str, Any]:
    from peft import PeftModel

    model = base_cls.from_pretrained(str(base), dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().state_dict()


def non_lora(folder: Path) -> dict[str, Any]:
    """non_lora_trainables.bin with LLaVA's builder's prefix stripping."""
    state = torch.load(folder / "non_lora_trainables.bin", weights_only=True)
    state = {(k[11:] if k.startswith("base_model.") else k): v for k, v in state.items()}
    if any(k.startswith("model.model.") for k in state):
        state = {(k[6:] if k.startswith("model.") else k): v for k, v in state.items()}
    return state


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava-lora")
    info = make_llava_original_lora(root, seed=11)
    out = root / "merged"
    result = merge(info.path, out=out, dtype="fp32")  # base and tower from the recorded local paths
    return info, out, result


def test_original_lora_projector_is_the_trained_one(lora_run):
    info, out, result = lora_run
    assert result.kind == "llava-lora" and not result.errors, [f.message for f in result.errors]
    trained = non_lora(info.path)
    new = read_state(out)
    assert set(trained) == {"model.mm_projector.0.weight", "model.mm_projector.0.bias",
                            "model.mm_projector.2.weight", "model.mm_projector.2.bias"}
    for key, value in trained.items():
        hf = key.replace("model.mm_projector.0", "multi_modal_projector.linear_1").replace(
            "model.mm_projector.2", "multi_modal_projector.linear_2")
        assert torch.equal(new[hf], value.float()), hf


def test_original_lora_llm_equals_peft_merge(lora_run):
    from transformers import AutoModelForCausalLM

    info, out, _ = lora_run
    reference = peft_merged_state(AutoModelForCausalLM, info.base_dir, info.path)
    new = read_state(out)
    for key, value in reference.items():
        ours = new["language_model.lm_head.weight" if key == "lm_head.weight" else "language_model." + key]
        torch.testing.assert_close(ours[: value.shape[0]], value, rtol=1e-6, atol=1e-6)


def test_original_lora_computes_what_llava_would_load(lora_run):
    """LLaVA's builder: base + non_lora_trainables + PeftModel merge, the tower from
    mm_vision_tower; written out by hand and compared with the converted model."""
    from transformers import AutoModelForCausalLM

    info, out, _ = lora_run
    state = dict(peft_merged_state(AutoModelForCausalLM, info.base_dir, info.path))
    state.update(non_lora(info.path))
    config = json.loads((info.path / "config.json").read_text())
    ids = [1, 33, 34, IMAGE_TOKEN_INDEX, 44, 45, 46]
    size = json.loads((info.vision_tower_dir / "config.json").read_text())["image_size"]
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    expected = original_forward(state, config, info.vision_tower_dir, ids, pixels)
    got, loading = hf_forward(out, ids, pixels)
    assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
    torch.testing.assert_close(got[..., : expected.shape[-1]], expected, rtol=1e-4, atol=1e-4)


def test_original_lora_without_non_lora_trainables_is_refused(tmp_path):
    info = make_llava_original_lora(tmp_path, with_non_lora=False, seed=12)
    with pytest.raises(ArtifactError, match="non_lora_trainables.bin"):
        merge(info.path, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_original_lora_needs_a_local_tower(tmp_path, capsys):
    from doctor.cli import main

    info = make_llava_original_lora(tmp_path, model_type="llava_mistral", seed=13)
    cfg = json.loads((info.path / "config.json").read_text())
    cfg["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"
    (info.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="--vision-tower"):
        merge(info.path, out=tmp_path / "out")
    code = main(["merge", str(info.path), "--vision-tower", str(info.vision_tower_dir), "-o", str(tmp_path / "out"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr()
    text_cfg = json.loads((tmp_path / "out" / "config.json").read_text())["text_config"]
    assert text_cfg["model_type"] == "mistral"


@pytest.fixture(scope="module")
def xtuner(tmp_path_factory):
    root = tmp_path_factory.mktemp("xtuner")
    info = make_xtuner_release(root, seed=21)
    out = root / "hf"
    result = merge(info.path, out=out, dtype="fp32")
    return info, out, result


def test_xtuner_consolidation_loads_and_keeps_the_projector(xtuner):
    from transformers import AutoModelForImageTextToText

    info, out, result = xtuner
    assert result.kind == "xtuner" and not result.errors, [f.message for f in result.errors]
    _, loading = AutoModelForImageTextToText.from_pretrained(str(out), output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
    new = read_state(out)
    projector = load_file(str(info.projector / "model.safetensors"))
    for i, layer in ((0, "linear_1"), (2, "linear_2")):
        for p in ("weight", "bias"):
            assert torch.equal(new[f"multi_modal_projector.{layer}.{p}"], projector[f"model.{i}.{p}"].float())


def test_xtuner_llm_and_vision_equal_peft_merges(xtuner, tmp_path):
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    info, out, _ = xtuner
    new = read_state(out)
    llm = peft_merged_state(AutoModelForCausalLM, info.llm_dir, info.llm_adapter)
    for key, value in llm.items():
        ours = new["language_model.lm_head.weight" if key == "lm_head.weight" else "language_model." + key]
        torch.testing.assert_close(ours[: value.shape[0]], value, rtol=1e-6, atol=1e-6)
    # The release names the CLIP LoRA as transformers 4.x did (vision_model.*): peft 0.21 on
    # transformers 5 would drop those keys, so the reference gets the names it can load.
    native = tmp_path / "visual-native"
    shutil.copytree(info.visual_encoder_adapter, native)
    state = load_file(str(native / "adapter_model.safetensors"))
    save_file({re.sub(r"^base_model\.model\.vision_model\.", "base_model.model.", k): v for k, v in state.items()},
              str(native / "adapter_model.safetensors"))
    clip = peft_merged_state(CLIPVisionModel, info.visual_encoder_dir, native)
    changed = 0
    base_clip = {re.sub(r"^vision_model\.", "", k): v for k, v in read_state(info.visual_encoder_dir).items()}
    for key, value in clip.items():
        rest = re.sub(r"^vision_model\.", "", key)
        if rest.endswith("position_ids"):
            continue
        torch.testing.assert_close(new["vision_tower.vision_model." + rest], value, rtol=1e-6, atol=1e-6)
        changed += not torch.equal(value, base_clip[rest].float())
    assert changed >= 12  # the visual-encoder LoRA was really folded in (q, k, v, out, fc1, fc2 x 2 layers)


def test_xtuner_without_projector_is_refused(tmp_path):
    info = make_xtuner_release(tmp_path, seed=22, visual_encoder_lora=False)
    shutil.rmtree(info.projector)
    with pytest.raises(UsageError, match="projector"):
        merge(info.path, out=tmp_path / "out")

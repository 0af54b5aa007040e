"""`vlm-doctor merge` on PEFT adapters over Qwen2-VL / Qwen2.5-VL bases (both key layouts): the
merged folder loads with no missing or unexpected keys and its logits equal peft's
``merge_and_unload()`` on an image prompt, LoRA on the language model, vision blocks and merger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from doctor.testing import weights as _weights
from doctor.testing.qwen import make_qwen_lora_adapter, make_qwen_model, qwen_inputs

pytestmark = pytest.mark.filterwarnings("ignore")
torch = pytest.importorskip("torch")

TARGETS = r".*(language_model.*\.(q_proj|v_proj|down_proj)|visual\.blocks.*\.qkv|visual\.merger\.mlp\.0)"


def _reference_logits(base, adapter: Path, inputs):
    import transformers
    from peft import PeftModel

    model = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    with torch.no_grad():
        return merged(**inputs).logits


def _merged_logits(folder: Path, inputs):
    import transformers

    model, info = transformers.AutoModelForImageTextToText.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize(("family", "layout"), [("qwen2_vl", "v4"), ("qwen2_5_vl", "v5")])
def test_merge_equals_peft_merge_and_unload(tmp_path, family, layout):
    base = make_qwen_model(tmp_path / "base", family=family, layout=layout, seed=3)
    adapter = make_qwen_lora_adapter(base, tmp_path / "adapter", target_modules=TARGETS, seed=4)
    out = tmp_path / "merged"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "doctor", "merge", str(adapter), "--base", str(base.path),
                           "-o", str(out), "--dtype", "fp32"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("preprocessor_config.json", "tokenizer.json", "chat_template.json"):
        assert (out / name).is_file()
    inputs = qwen_inputs(base, (56, 84))
    merged, reference = _merged_logits(out, inputs), _reference_logits(base, adapter, inputs)
    torch.testing.assert_close(merged, reference, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # and the merge changed the model
        import transformers

        plain = transformers.AutoModelForImageTextToText.from_pretrained(base.path)(**inputs).logits
    assert (merged - plain).abs().max() > 1e-4


def test_merge_takes_an_adapter_saved_under_transformers_4(tmp_path):
    """Keys written by transformers < 4.52 (model.layers.*, visual.*), which peft 0.21 drops on
    transformers 5 (tests/qwen/test_qwen_adapter.py), still merge: same logits as the adapter
    saved with today's names."""
    from doctor.fixers.merge import merge

    base = make_qwen_model(tmp_path / "base", family="qwen2_vl", layout="v4", seed=5)
    adapter = make_qwen_lora_adapter(base, tmp_path / "adapter", target_modules=TARGETS, seed=6)
    legacy = tmp_path / "legacy"
    import shutil

    shutil.copytree(adapter, legacy)
    _weights.rewrite_weights(legacy, lambda s: {
        k.replace("base_model.model.model.language_model.", "base_model.model.model.")
         .replace("base_model.model.model.visual.", "base_model.model.visual."): v for k, v in s.items()})
    result = merge(legacy, base=base.path, out=tmp_path / "merged", dtype="fp32")
    assert result.lora_modules == 8
    inputs = qwen_inputs(base, (84, 56))
    torch.testing.assert_close(_merged_logits(tmp_path / "merged", inputs), _reference_logits(base, adapter, inputs),
                               rtol=1e-5, atol=1e-5)

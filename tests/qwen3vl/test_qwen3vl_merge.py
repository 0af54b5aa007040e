"""`vlm-doctor merge` of a PEFT adapter over a Qwen3-VL base: the merged folder loads with nothing
missing or unexpected and gives the logits of peft's ``merge_and_unload()`` on an image prompt,
with LoRA on the language model, the vision attention, the merger and a DeepStack merger."""

from __future__ import annotations

import pytest

from doctor.testing.qwen import make_qwen_lora_adapter
from doctor.testing.qwen3_vl import make_qwen3_vl_model, qwen3_vl_inputs

pytestmark = pytest.mark.filterwarnings("ignore")
torch = pytest.importorskip("torch")

TARGETS = (r".*(language_model.*\.(q_proj|v_proj|down_proj)|visual\.blocks.*\.qkv|visual\.merger\.linear_fc1"
           r"|visual\.deepstack_merger_list\.0\.linear_fc2)")


def test_merge_equals_peft_merge_and_unload(tmp_path):
    import transformers
    from peft import PeftModel

    from doctor.fixers.merge import merge

    base = make_qwen3_vl_model(tmp_path / "base", seed=3)
    adapter = make_qwen_lora_adapter(base, tmp_path / "adapter", target_modules=TARGETS, seed=4)
    result = merge(adapter, base=base.path, out=tmp_path / "merged", dtype="fp32")
    assert result.lora_modules == 2 * 3 + 2 + 1 + 1  # 2 text layers x 3, 2 vision blocks, merger, deepstack
    for name in ("preprocessor_config.json", "video_preprocessor_config.json", "tokenizer.json",
                 "chat_template.json"):
        assert (tmp_path / "merged" / name).is_file()
    inputs = qwen3_vl_inputs(base, (64, 96))
    merged, loading = transformers.AutoModelForImageTextToText.from_pretrained(tmp_path / "merged",
                                                                               output_loading_info=True)
    assert not any(loading.values()), loading
    reference = PeftModel.from_pretrained(transformers.AutoModelForImageTextToText.from_pretrained(base.path),
                                          str(adapter)).merge_and_unload()
    plain = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    with torch.no_grad():
        got, want, before = merged(**inputs).logits, reference(**inputs).logits, plain(**inputs).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - before).abs().max() > 1e-4  # the merge changed the model

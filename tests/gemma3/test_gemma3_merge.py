"""`vlm-doctor merge` of PEFT adapters over Gemma 3 bases (both key layouts): the merged folder
loads with no missing or unexpected keys and its logits equal peft's ``merge_and_unload()`` on an
image prompt, LoRA on the language model and on SigLIP's attention."""

from __future__ import annotations

from pathlib import Path

import pytest

from doctor.testing.gemma3 import gemma3_inputs, make_gemma3_lora_adapter, make_gemma3_model

pytestmark = pytest.mark.filterwarnings("ignore")
torch = pytest.importorskip("torch")

TARGETS = r".*(language_model.*\.(q_proj|v_proj|down_proj)|vision_tower.*\.(q_proj|fc1))"


@pytest.mark.parametrize("layout", ["saved", "modern"])
def test_merge_equals_peft_merge_and_unload(tmp_path: Path, layout: str) -> None:
    import transformers
    from peft import PeftModel

    from doctor.fixers.merge import merge

    base = make_gemma3_model(tmp_path / "base", layout=layout, seed=3)  # type: ignore[arg-type]
    adapter = make_gemma3_lora_adapter(base, tmp_path / "adapter", target_modules=TARGETS, seed=4)
    out = tmp_path / "merged"
    merge(adapter, base=base.path, out=out, dtype="fp32")
    for name in ("preprocessor_config.json", "processor_config.json", "tokenizer.json"):
        assert (out / name).is_file(), name
    inputs = gemma3_inputs(base, (56, 84))
    model, info = transformers.AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    reference = PeftModel.from_pretrained(transformers.AutoModelForImageTextToText.from_pretrained(base.path),
                                          str(adapter)).merge_and_unload()
    plain = transformers.AutoModelForImageTextToText.from_pretrained(base.path)
    with torch.no_grad():
        merged, want, before = model(**inputs).logits, reference(**inputs).logits, plain(**inputs).logits
    torch.testing.assert_close(merged, want, rtol=1e-5, atol=1e-5)
    assert (merged - before).abs().max() > 1e-4  # the merge changed the model

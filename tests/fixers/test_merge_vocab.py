"""Merges beyond the VLM families: a text-only base (LLaVA's vicuna), ``.bin`` adapters, and
an adapter trained after adding tokens (grown embeddings saved with ``modules_to_save``)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from doctor.fixers.merge import merge  # noqa: E402

from doctor.testing.adapters import make_lora_adapter  # noqa: E402
from doctor.testing.models import make_llava_model, make_text_model  # noqa: E402


def test_text_model_with_bin_adapter_equals_peft(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = make_text_model(tmp_path / "vicuna", seed=41, weights="bin")
    adapter = make_lora_adapter(base, tmp_path / "ad", target_modules=["q_proj", "v_proj", "down_proj"],
                                save_format="bin", seed=42, use_rslora=True)
    assert (adapter / "adapter_model.bin").exists()
    merge(adapter, base=base.path, out=tmp_path / "out", dtype="fp32")
    model, info = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base.path)),
                                          str(adapter)).merge_and_unload()
    ids = torch.tensor([[1, 40, 50, 60, 70, 80]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)


def test_adapter_with_added_tokens_grows_the_vocabulary(tmp_path):
    """Tokens added before training: the adapter folder holds the bigger tokenizer and full
    copies of embed_tokens / lm_head; the merge takes both and the config follows."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    info = make_llava_model(tmp_path / "base", family="llava", seed=43)
    tok = AutoTokenizer.from_pretrained(str(info.path))
    tok.add_tokens(["<box>", "</box>"])
    model = AutoModelForImageTextToText.from_pretrained(str(info.path))
    model.resize_token_embeddings(len(tok))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)",
                        modules_to_save=["embed_tokens", "lm_head"])
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    adapter = tmp_path / "ad"
    peft_model.save_pretrained(str(adapter))
    tok.save_pretrained(str(adapter))
    result = merge(adapter, base=info.path, out=tmp_path / "out", dtype="fp32")
    assert any("grew by 2" in n for n in result.notes)
    out_cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert out_cfg["text_config"]["vocab_size"] == len(tok)
    assert len(AutoTokenizer.from_pretrained(str(tmp_path / "out"))) == len(tok)
    merged, loading = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"] and not loading["mismatched_keys"]
    base = AutoModelForImageTextToText.from_pretrained(str(info.path))
    base.resize_token_embeddings(len(tok))
    reference = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    ids = torch.tensor([[1, 40, len(tok) - 1, len(tok) - 2, 60]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, reference(input_ids=ids).logits,
                                   rtol=1e-5, atol=1e-5)

"""Tiny, REAL Gemma 3 model folders (transformers' own ``Gemma3Config`` /
``Gemma3ForConditionalGeneration``, seeded random weights), with a tokenizer carrying Gemma 3's
special tokens and chat template, and the processor files the hub repos ship.

``make_gemma3_model(dir, layout="saved")`` writes:

- ``config.json`` as transformers 5 saves it (``text_config`` with a valid ``layer_types`` for the
  layer count, ``vision_config`` a ``siglip_vision_model``, ``mm_tokens_per_image``,
  ``image_token_index`` / ``boi_token_index`` / ``eoi_token_index`` = the tokenizer's ids);
- weights: ``"saved"`` what ``save_pretrained`` of transformers 5.25 still writes, and the hub
  checkpoints hold (the names of transformers < 4.52: ``language_model.model.*``,
  ``vision_tower.vision_model.*``, ``multi_modal_projector.*``; ``lm_head`` tied, not saved);
  ``"modern"`` the in-memory module names of transformers >= 4.52 (``model.language_model.*``,
  ``model.vision_tower.*``, ``model.multi_modal_projector.*``). Both load with no missing or
  unexpected keys;
- tokenizer files: the BPE tokenizer of ``doctor.testing.tokenizer`` plus ``<start_of_image>``,
  ``<end_of_image>``, ``<image_soft_token>``, ``<start_of_turn>``, ``<end_of_turn>`` as special
  tokens (named ``boi_token`` / ``eoi_token`` / ``image_token`` in ``extra_special_tokens``, as
  Gemma 3's tokenizer_config.json does) and ``"\\n\\n"`` as one token (a piece of Gemma's
  vocabulary), with a Gemma 3 style chat template (``<start_of_turn>user`` ..., an image part is
  ``<start_of_image>``);
- processor files: ``preprocessor_config.json`` (``Gemma3ImageProcessor``, ``size`` = the tower's
  ``image_size``, the pan-and-scan keys null unless given), ``processor_config.json``
  (``image_seq_length``), ``chat_template.json``.

``AutoProcessor`` would pick ``Gemma3ImageProcessor`` (torchvision backend, never installed):
``processor(info)`` builds ``Gemma3Processor`` over the PIL image processor from the folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from doctor.testing import weights as _weights
from doctor.testing.models import ModelInfo
from doctor.testing.tokenizer import make_tokenizer
from doctor.testing.torch_context import seeded

Layout = Literal["saved", "modern"]

IMAGE_SOFT_TOKEN = "<image_soft_token>"
BOI_TOKEN = "<start_of_image>"
EOI_TOKEN = "<end_of_image>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
DOUBLE_NEWLINE = "\n\n"
GEMMA3_SPECIALS = (BOI_TOKEN, EOI_TOKEN, START_OF_TURN, END_OF_TURN, IMAGE_SOFT_TOKEN)

# What TRL's VLM examples / unsloth users write for LoRA: the seven projection names of the LLM.
TRL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The same seven, only inside the language model (a regex peft matches with re.fullmatch).
GEMMA3_LANGUAGE_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

# Gemma 3's chat template, reduced: BOS, the system text folded into the first user turn,
# "assistant" renamed "model", an image part written as <start_of_image>.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% if messages[0]['content'] is string %}{% set first_user_prefix = messages[0]['content'] + '\\n\\n' %}"
    "{% else %}{% set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' %}{% endif %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@dataclass
class Gemma3Info(ModelInfo):
    """A ``ModelInfo`` for a Gemma 3 folder, plus the begin / end-of-image ids, the key
    ``layout`` and the processor's ``image_seq_length``."""

    layout: str = "saved"
    boi_token_id: int | None = None
    eoi_token_id: int | None = None
    mm_tokens_per_image: int = 4

    def num_image_tokens(self, height: int, width: int) -> int:
        return count_image_tokens(self, height, width)


def make_gemma3_model(
    dir: str | Path,
    layout: Layout = "saved",
    seed: int = 0,
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    shard_size: str | int | None = None,
    drop_tensors: Iterable[str] = (),
    text_layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 16,
    intermediate: int = 64,
    vision_layers: int = 1,
    vision_hidden: int = 32,
    vision_heads: int = 2,
    image_size: int = 56,
    patch_size: int = 14,
    mm_tokens_per_image: int = 4,
    vocab_size: int = 300,
    text_vocab_size: int | None = None,
    pan_and_scan: Mapping[str, Any] | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    processor_overrides: Mapping[str, Any] | None = None,
) -> Gemma3Info:
    """Write a tiny Gemma 3 folder into ``dir``; return its ``Gemma3Info``.

    ``mm_tokens_per_image`` must be a square whose side divides ``image_size // patch_size`` (the
    projector average-pools the patch grid to it). ``text_vocab_size`` (default: the tokenizer's
    size) sets the text ``vocab_size``, i.e. the embedding rows. ``pan_and_scan`` sets the
    pan-and-scan keys of preprocessor_config.json (``{"do_pan_and_scan": True}``).
    ``drop_tensors`` removes tensors whose ON-DISK name starts with a prefix;
    ``config_overrides`` / ``processor_overrides`` set dotted keys in config.json /
    preprocessor_config.json after saving (``DELETE`` removes one).
    """
    import torch
    import transformers

    if layout not in ("saved", "modern"):
        raise ValueError(f"layout must be 'saved' or 'modern', got {layout!r}")
    path = Path(dir)
    tok = _write_tokenizer(path, vocab_size)
    ids = tok.special_ids
    # Gemma 3's pattern: five sliding-window layers, then a global one; the last layer global here
    layer_types = ["sliding_attention"] * (text_layers - 1) + ["full_attention"]
    text = dict(
        vocab_size=text_vocab_size if text_vocab_size is not None else tok.size, hidden_size=hidden,
        intermediate_size=intermediate, num_hidden_layers=text_layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, max_position_embeddings=512, sliding_window=32,
        layer_types=layer_types, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = dict(model_type="siglip_vision_model", hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                  num_hidden_layers=vision_layers, num_attention_heads=vision_heads, image_size=image_size,
                  patch_size=patch_size, vision_use_head=False)
    config = transformers.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=mm_tokens_per_image,
        image_token_index=ids[IMAGE_SOFT_TOKEN], boi_token_index=ids[BOI_TOKEN], eoi_token_index=ids[EOI_TOKEN])
    with seeded(seed):
        model = transformers.Gemma3ForConditionalGeneration(config).to(getattr(torch, dtype)).eval()
        # zero-initialised: a random projector makes image features reach the text
        torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.02)
        model.save_pretrained(path, max_shard_size=shard_size if shard_size is not None else "5GB")
    if layout == "modern":
        _weights.rewrite_weights(path, to_modern_keys)
    _write_processor(path, image_size, mm_tokens_per_image, tok.chat_template, pan_and_scan)
    if processor_overrides:
        _weights.patch_json(path / "preprocessor_config.json", processor_overrides)
    drop = tuple(drop_tensors)
    files = (_weights.rewrite_weights(path, _weights.drop_prefixes(drop)) if drop else _weights.weight_files(path))
    saved = _weights.patch_json(path / "config.json", config_overrides)
    return Gemma3Info(
        path=path, family="gemma3", config=saved, tokenizer=tok, image_token=IMAGE_SOFT_TOKEN,
        image_token_id=ids[IMAGE_SOFT_TOKEN], image_size=image_size, patch_size=patch_size,
        image_seq_length=mm_tokens_per_image, hidden_size=hidden, vision_hidden_size=vision_hidden,
        text_vocab_size=text["vocab_size"], weight_files=files, layout=layout, boi_token_id=ids[BOI_TOKEN],
        eoi_token_id=ids[EOI_TOKEN], mm_tokens_per_image=mm_tokens_per_image,
    )


def to_modern_keys(state: dict[str, Any]) -> dict[str, Any]:
    """An ``edit`` for ``_weights.rewrite_weights``: the saved names -> transformers 5's module names."""
    out = {}
    for key, value in state.items():
        if key.startswith("language_model.model."):
            key = "model.language_model." + key[len("language_model.model."):]
        elif key.startswith("language_model.lm_head."):
            key = key[len("language_model."):]
        elif key.startswith(("vision_tower.", "multi_modal_projector.")):
            key = "model." + key
        out[key] = value
    return out


def image_processor(info: Gemma3Info | str | Path) -> Any:
    """The saved image processor, as the PIL class (no torchvision)."""
    import transformers

    path = Path(info.path if isinstance(info, ModelInfo) else info)
    return transformers.Gemma3ImageProcessorPil.from_pretrained(path)


def processor(info: Gemma3Info | str | Path) -> Any:
    """``Gemma3Processor`` over the saved tokenizer, PIL image processor and processor_config.json."""
    import transformers

    path = Path(info.path if isinstance(info, ModelInfo) else info)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    saved = json.loads((path / "processor_config.json").read_text(encoding="utf-8"))
    return transformers.Gemma3Processor(
        image_processor=image_processor(path), tokenizer=tokenizer, chat_template=tokenizer.chat_template,
        image_seq_length=saved.get("image_seq_length", 256))


def gemma3_inputs(info: Gemma3Info, image_shape: tuple[int, int] = (56, 84), prompt: str = "What is in this image?",
                  seed: int = 0, **kwargs: Any) -> Any:
    """Processor outputs (``return_tensors="pt"``) for one chat turn with one PIL image of
    ``image_shape`` = (height, width); ``kwargs`` go to the processor call."""
    from doctor.testing.images import pil_image

    height, width = image_shape
    proc = processor(info)
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
        add_generation_prompt=True, tokenize=False)
    return proc(images=pil_image((width, height), seed, "noise"), text=text, return_tensors="pt", **kwargs)


def count_image_tokens(info: Gemma3Info | str | Path, height: int, width: int, **kwargs: Any) -> int:
    """Tokens the processor's expansion of one ``<start_of_image>`` adds for one ``height`` x
    ``width`` image: the expanded ids minus the ids of the same text without the image."""
    from doctor.testing.images import pil_image

    proc = processor(info)
    text = f"Look.{BOI_TOKEN}What"
    with_image = proc(images=pil_image((width, height), 0, "blank"), text=text, **kwargs)["input_ids"][0]
    without = proc.tokenizer(text.replace(BOI_TOKEN, ""))["input_ids"]
    return len(with_image) - len(without)


def make_gemma3_lora_adapter(base: Gemma3Info | str | Path, out: str | Path,
                             target_modules: str | Iterable[str] | None = None, r: int = 4, alpha: int = 8,
                             seed: int = 0) -> Path:
    """A PEFT LoRA adapter on a Gemma 3 folder (default: ``GEMMA3_LANGUAGE_TARGETS``), with every
    ``lora_B`` made non-zero (no training: a fixed random draw)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from doctor.testing.adapters import _tidy_config

    base_path = Path(base.path if isinstance(base, ModelInfo) else base)
    model = transformers.AutoModelForImageTextToText.from_pretrained(base_path)
    targets = (GEMMA3_LANGUAGE_TARGETS if target_modules is None
               else target_modules if isinstance(target_modules, str) else list(target_modules))
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        target_modules=targets)
    with seeded(seed):
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.02)
        out = Path(out)
        peft_model.save_pretrained(out)
    _tidy_config(out, None)
    return out


def _write_tokenizer(path: Path, vocab_size: int) -> Any:
    """The BPE test tokenizer with Gemma 3's specials named as its tokenizer_config.json names
    them, ``<pad>`` inside the vocabulary, no dummy prefix, ``"\\n\\n"`` as one (non-special) token, and the Gemma 3
    chat template. ``<image_soft_token>`` has the largest id, as in Gemma 3 (262144, after the
    text specials), so a text ``vocab_size`` of that id leaves exactly it without an embedding row."""
    from tokenizers import Tokenizer

    tok = make_tokenizer(path, vocab_size=vocab_size, extra_special=GEMMA3_SPECIALS, pad_in_vocab=True,
                         chat_template=GEMMA3_CHAT_TEMPLATE, tokenizer_class="PreTrainedTokenizerFast",
                         model_max_length=131072)
    backend = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    # Gemma's tokenizer adds no dummy prefix: a text tokenizes the same alone as inside a prompt
    backend["pre_tokenizer"]["prepend_scheme"] = "never"
    image_id = tok.special_ids[IMAGE_SOFT_TOKEN]
    for added in backend["added_tokens"]:
        if added["content"] == IMAGE_SOFT_TOKEN:
            added["id"] = image_id + 1
    backend["added_tokens"].append({"id": image_id, "content": DOUBLE_NEWLINE, "single_word": False, "lstrip": False,
                                    "rstrip": False, "normalized": False, "special": False})
    backend["added_tokens"].sort(key=lambda a: a["id"])
    (path / "tokenizer.json").write_text(json.dumps(backend, ensure_ascii=False), encoding="utf-8")
    check = Tokenizer.from_file(str(path / "tokenizer.json"))
    config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["extra_special_tokens"] = {"boi_token": BOI_TOKEN, "eoi_token": EOI_TOKEN, "image_token": IMAGE_SOFT_TOKEN}
    _weights.dump_json(path / "tokenizer_config.json", config)
    ids = {**tok.special_ids, IMAGE_SOFT_TOKEN: image_id + 1, DOUBLE_NEWLINE: image_id}
    assert all(check.token_to_id(t) == i for t, i in ids.items()), "tokenizer ids"
    return replace(tok, size=check.get_vocab_size(with_added_tokens=True), image_token=IMAGE_SOFT_TOKEN,
                   image_token_id=image_id + 1, special_ids=ids)


def _write_processor(path: Path, image_size: int, image_seq_length: int, template: str | None,
                     pan_and_scan: Mapping[str, Any] | None) -> None:
    """The hub's three processor files: preprocessor_config.json, processor_config.json,
    chat_template.json."""
    image = {
        "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
        "resample": 2, "rescale_factor": 1 / 255, "size": {"height": image_size, "width": image_size},
        "do_pan_and_scan": None, "pan_and_scan_max_num_crops": None, "pan_and_scan_min_crop_size": None,
        "pan_and_scan_min_ratio_to_activate": None, **dict(pan_and_scan or {}),
    }
    _weights.dump_json(path / "preprocessor_config.json", image)
    _weights.dump_json(path / "processor_config.json",
                       {"image_seq_length": image_seq_length, "processor_class": "Gemma3Processor"})
    if template:
        _weights.dump_json(path / "chat_template.json", {"chat_template": template})

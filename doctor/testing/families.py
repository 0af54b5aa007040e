"""Per-family configs and processors for the tiny models (transformers imported lazily).

Image processors are the PIL/numpy ones (``*ImageProcessorPil`` in transformers 5, the "slow"
classes before): the default classes of transformers 5 need torchvision, which we never install.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from doctor.testing.tokenizer import TokenizerInfo

FAMILIES = ("llava", "llava_next", "mllama")
IMAGE_TOKENS = {"llava": "<image>", "llava_next": "<image>", "mllama": "<|image|>"}


@dataclass(frozen=True)
class Sizes:
    """Dimensions of a tiny model; defaults keep every forward pass in milliseconds."""

    text_layers: int = 2
    hidden: int = 32
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 64
    vision_layers: int = 2
    vision_hidden: int = 32
    vision_heads: int = 2
    image_size: int = 28
    patch_size: int = 14
    max_position_embeddings: int = 512


def text_config(arch: str, tok: TokenizerInfo, sizes: Sizes, vocab_size: int, **extra: Any) -> Any:
    """A LlamaConfig / MistralConfig for the language model."""
    from transformers import LlamaConfig, MistralConfig

    classes = {"llama": LlamaConfig, "mistral": MistralConfig}
    if arch not in classes:
        raise ValueError(f"text arch must be one of {sorted(classes)}, got {arch!r}")
    return classes[arch](
        hidden_size=sizes.hidden, intermediate_size=sizes.intermediate, num_hidden_layers=sizes.text_layers,
        num_attention_heads=sizes.heads, num_key_value_heads=sizes.kv_heads, vocab_size=vocab_size,
        max_position_embeddings=sizes.max_position_embeddings, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **extra,
    )


def clip_vision_config(sizes: Sizes) -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=sizes.vision_hidden, intermediate_size=2 * sizes.vision_hidden,
        num_hidden_layers=sizes.vision_layers, num_attention_heads=sizes.vision_heads,
        image_size=sizes.image_size, patch_size=sizes.patch_size, projection_dim=sizes.vision_hidden,
    )


def vlm_config(family: str, tok: TokenizerInfo, sizes: Sizes, text_arch: str = "llama",
               image_grid_pinpoints: Sequence[Sequence[int]] | None = None,
               cross_attention_layers: Sequence[int] | None = None,
               intermediate_layers_indices: Sequence[int] | None = None) -> Any:
    """The family's top-level config, wired to ``tok``'s image token."""
    import transformers

    patches = (sizes.image_size // sizes.patch_size) ** 2
    if family in ("llava", "llava_next"):
        common = dict(
            vision_config=clip_vision_config(sizes),
            text_config=text_config(text_arch, tok, sizes, vocab_size=tok.size),
            image_token_id=tok.image_token_id, vision_feature_select_strategy="default",
            vision_feature_layer=-2, image_seq_length=patches,
        )
        if family == "llava":
            return transformers.LlavaConfig(**common)
        return transformers.LlavaNextConfig(image_grid_pinpoints=pinpoints(sizes, image_grid_pinpoints), **common)
    if family == "mllama":
        indices = list(intermediate_layers_indices if intermediate_layers_indices is not None
                       else range(sizes.vision_layers))
        vision = transformers.MllamaVisionConfig(
            hidden_size=sizes.vision_hidden, num_hidden_layers=sizes.vision_layers, num_global_layers=1,
            attention_heads=sizes.vision_heads, intermediate_size=2 * sizes.vision_hidden,
            vision_output_dim=sizes.vision_hidden * (len(indices) + 1), image_size=sizes.image_size,
            patch_size=sizes.patch_size, max_num_tiles=4, intermediate_layers_indices=indices,
        )
        cross = list(cross_attention_layers if cross_attention_layers is not None else [sizes.text_layers - 1])
        # By design mllama's <|image|> id IS the text vocab_size; the embedding has vocab_size + 8 rows.
        text = transformers.MllamaTextConfig(
            vocab_size=tok.image_token_id, hidden_size=sizes.hidden, num_hidden_layers=sizes.text_layers,
            num_attention_heads=sizes.heads, num_key_value_heads=sizes.kv_heads,
            intermediate_size=sizes.intermediate, cross_attention_layers=cross,
            max_position_embeddings=sizes.max_position_embeddings, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        return transformers.MllamaConfig(vision_config=vision, text_config=text, image_token_index=tok.image_token_id)
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def pinpoints(sizes: Sizes, given: Sequence[Sequence[int]] | None) -> list[list[int]]:
    """llava_next tiling grid: one tile, two tiles tall, two tiles wide (unless given)."""
    s = sizes.image_size
    return [list(p) for p in given] if given is not None else [[s, s], [2 * s, s], [s, 2 * s]]


def clip_image_processor(sizes: Sizes) -> Any:
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": sizes.image_size},
               crop_size={"height": sizes.image_size, "width": sizes.image_size})


def processor(family: str, tokenizer: Any, config: Any, sizes: Sizes) -> Any:
    """The family's processor around ``tokenizer``, agreeing with ``config``."""
    import transformers

    template = tokenizer.chat_template
    if family == "llava":
        return transformers.LlavaProcessor(
            image_processor=clip_image_processor(sizes), tokenizer=tokenizer, patch_size=sizes.patch_size,
            vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=template)
    if family == "llava_next":
        cls = getattr(transformers, "LlavaNextImageProcessorPil", None) or transformers.LlavaNextImageProcessor
        image_processor = cls(size={"shortest_edge": sizes.image_size},
                              crop_size={"height": sizes.image_size, "width": sizes.image_size},
                              image_grid_pinpoints=config.image_grid_pinpoints)
        return transformers.LlavaNextProcessor(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=sizes.patch_size,
            vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=template)
    if family == "mllama":
        cls = getattr(transformers, "MllamaImageProcessorPil", None) or transformers.MllamaImageProcessor
        image_processor = cls(size={"height": sizes.image_size, "width": sizes.image_size}, max_image_tiles=4)
        return transformers.MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                            chat_template=template)
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

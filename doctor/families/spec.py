"""The shape of one family table (:class:`Family`) and of one key layout (:class:`KeyLayout`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: how a processor turns one image into placeholder tokens
#: fixed: (image_size / patch)^2 (+CLS); anyres: llava_next tiling; one: a single token (mllama);
#: dynamic: Qwen's smart_resize between min_pixels and max_pixels, (h'/f) * (w'/f), f = patch * merge;
#: fixed_wrapped: a count the config / processor file names (Gemma 3's image_seq_length) + the wrapping tokens
TokenRule = Literal["fixed", "anyres", "one", "dynamic", "fixed_wrapped"]


@dataclass(frozen=True)
class KeyLayout:
    """Where each part of a model sits in one naming world (prefixes end with ``"."``).

    ``vision`` lists the vision encoder's prefixes, most specific first; ``projector`` is the
    projector's module name (checked before ``vision``: Qwen's merger sits inside ``visual.``)."""

    name: str
    title: str
    language: str
    lm_head: str
    projector: str
    vision: tuple[str, ...]
    vision_style: str
    image_newline: str | None = None
    modern: bool = False  # the in-memory names of transformers >= the family's modern_since


@dataclass(frozen=True)
class Family:
    """Everything family-specific that the checks read (see the package docstring)."""

    name: str
    model_types: tuple[str, ...]
    title: str
    token_rule: TokenRule
    image_token: str | None
    projector: str                                   # what the family calls it, for messages
    layouts: tuple[KeyLayout, ...] = ()              # () -> transformers' generic LLaVA layouts
    modern_since: tuple[int, int] = (4, 52)          # in-memory names modern from this version
    tokens: dict[str, str] = field(default_factory=dict)        # config key -> token text
    tokens_per_image_extra: int = 0                  # tokens the template puts around each image
    vision_keys: dict[str, str] = field(default_factory=dict)   # role -> vision_config key
    processor_keys: dict[str, str] = field(default_factory=dict)  # image-processor key -> role
    processor_defaults: dict[str, int] = field(default_factory=dict)  # the processor class defaults
    video_processor_defaults: dict[str, int] = field(default_factory=dict)  # the video processor's, when it differs
    video_tokens_not_counted: str = ""                # why the DAT budget cannot count its videos ("": it can)
    rope: str | None = None                          # "mrope": sections must sum to head_dim / 2
    rope_default_sections: tuple[int, ...] = ()      # what the model uses when config names none
    vision_modules: tuple[str, ...] = ()             # Linear leaf names in the vision encoder
    projector_modules: tuple[str, ...] = ()          # Linear leaf names in the projector

    @property
    def layout_names(self) -> tuple[str, ...]:
        return tuple(lay.name for lay in self.layouts)

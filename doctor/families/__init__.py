"""What is family-specific about a vision-language model, as data: one table per family.

A :class:`Family` says, for the transformers ``model_type`` (s) it covers:

- ``layouts``: where the language model, ``lm_head``, the vision encoder and the projector sit in
  the tensor / module names, per naming world (``doctor.layouts`` builds its :class:`Layout`
  objects from these :class:`KeyLayout` rows and dispatches on them), and from which transformers
  version the in-memory names are the modern ones;
- ``projector``: what the family calls its projector (LLaVA's ``multi_modal_projector``,
  Qwen's ``visual.merger``);
- ``tokens``: the special tokens config.json names by id (``image_token_id`` ->
  ``<|image_pad|>`` ...), and how many tokens wrap each image in the prompt;
- ``token_rule``: how the processor turns one image into placeholder tokens
  (``"fixed"``, ``"anyres"``, ``"one"``, ``"dynamic"``), read by ``checks/dataset/vision.py``;
- ``vision_keys``: which ``vision_config`` key holds each role (depth, patch size, merge size,
  temporal patch size, output width), and ``processor_keys``: which image-processor key must
  equal which role;
- ``rope``: the rotary scheme whose sections must match the head dim (``"mrope"``);
- ``vision_modules``: the Linear leaf names inside the vision encoder and projector, so an
  adapter's bare ``target_modules`` entries that reach them are flagged.

Adding a family (idefics3 / SmolVLM, gemma3, ...) is a new module here with its table, one line in
:data:`FAMILIES`, and tests (see docs/families.md). Pure data and pure Python: no torch, no
transformers import.
"""

from __future__ import annotations

from collections.abc import Iterator

from doctor.families import gemma3, llava, mllama, qwen2_vl, qwen3_vl
from doctor.families.spec import Family, KeyLayout, TokenRule

#: every family, by name (the first model_type it covers)
FAMILIES: dict[str, Family] = {f.name: f for f in (
    llava.LLAVA, llava.LLAVA_NEXT, mllama.MLLAMA, qwen2_vl.QWEN2_VL, qwen2_vl.QWEN2_5_VL,
    qwen3_vl.QWEN3_VL, gemma3.GEMMA3)}

_BY_TYPE: dict[str, Family] = {t: f for f in FAMILIES.values() for t in f.model_types}


def family_of(model_type: object) -> Family | None:
    """The family table of a transformers ``model_type`` (None when no table covers it)."""
    return _BY_TYPE.get(model_type) if isinstance(model_type, str) else None


def families() -> Iterator[Family]:
    yield from FAMILIES.values()


def key_layouts() -> Iterator[tuple[Family, KeyLayout]]:
    """Every family-specific key layout (families that share transformers' generic LLaVA
    layouts declare none of their own)."""
    for fam in FAMILIES.values():
        for lay in fam.layouts:
            yield fam, lay


def default_image_tokens() -> dict[str, str]:
    """model_type -> the image placeholder the processor inserts when nothing names another."""
    return {t: f.image_token for f in FAMILIES.values() for t in f.model_types if f.image_token}


__all__ = ["FAMILIES", "Family", "KeyLayout", "TokenRule", "family_of", "families", "key_layouts",
           "default_image_tokens"]

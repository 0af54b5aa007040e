"""Model checkpoints (family CKP): config.json, the weights against the config, shards, tensor
values (``--deep``), tokenizer and processor.

Codes:

- CKP0xx config.json: JSON (001), ``model_type`` registered in the installed transformers (002),
  the original-LLaVA ``"llava"`` collision (003), architectures (004), image token id (005),
  vision layer indices (006), feature strategy (007), projector dimensions (008), llava_next
  pinpoints (009), mllama cross-attention layers (010), saved by a newer transformers (011),
  generation_config.json refused on save (012, fixer ``generation_config``).
- CKP1xx weights against the config: not buildable (100), no weights (101), an adapter instead
  of a model (102), LoRA leftovers (103), missing (104), unexpected (105), shape mismatches (106)
  as ``from_pretrained`` would report them, mixed dtypes (107).
- CKP2xx shards: index (201), missing shard (202), Git-LFS pointer (203), paths leaving the
  folder (204), unlisted shards (205), index vs headers (206, 209), a tensor in two shards (207),
  ``total_size`` (208).
- CKP3xx values, by default up to doctor.io.scan_budget.FULL_SCAN_BYTES, else with ``--deep``: NaN (301), Inf (302), all-zero tensors (303), not scanned (304).
- CKP4xx tokenizer and processor: files (401), tokenizer larger than the embedding (402), image
  token (403), chat template (404), special tokens (405), processor files (406), processor fields
  (407).
- CKP5xx family geometry from ``doctor.families`` tables: mrope sections vs head dim (501), merger
  width vs text width (502), processor patch / merge / temporal sizes vs the vision config (503),
  pixel limits (504), vision special-token ids (505), chat template writing no image placeholder (506).

Everything but CKP100 and CKP104-CKP106 reads only JSON and safetensors headers: no torch. The
structure of each .safetensors file and the safety of each pickle are the SEC family's; these
checks skip a file whose header is broken.
"""

from __future__ import annotations

from doctor.checks.checkpoint import fixtures  # noqa: F401  (importing a module registers its checks and fixtures)
from doctor.checks.checkpoint.rules import (  # noqa: F401
    config,
    generation,
    index,
    loading,
    processor,
    release,
    shards,
    tokenizer,
    values,
    vision,
    vision_tokens,
    weights,
)

"""LLV: outputs of the original LLaVA codebase (haotian-liu/LLaVA): the folder
``scripts/v1_5/finetune_lora.sh`` leaves (adapter + config.json + non_lora_trainables.bin), and
full checkpoints in its layout. Replays ``load_pretrained_model`` (builder.py) without running it;
reads pickles only through the static reader (``doctor.io.pickle_scan.tensor_infos``)."""

from __future__ import annotations

# The family's one registration point: importing a module registers its fixtures and checks.
from doctor.checks.llava.rules import outputs, routing  # noqa: F401

"""The kinds of artifact discovery recognises (``doctor.artifacts``); checks and families name
the kinds they apply to. A ``str`` enum, so a member equals its value and sets of either mix."""

from __future__ import annotations

import enum


class ArtifactKind(str, enum.Enum):
    DATASET = "dataset"  # a LLaVA / messages JSON or JSONL file, or a parquet / Arrow table
    ADAPTER = "adapter"  # a PEFT adapter folder (adapter_config.json)
    LLAVA_LORA = "llava-lora"  # an original-LLaVA LoRA output; also an adapter
    MODEL = "model"  # a transformers model folder (config.json + weights)
    LLAVA_ORIGINAL = "llava-original"  # a model folder in the original LLaVA layout
    XTUNER = "xtuner"  # an XTuner release (llm_adapter/, projector/, ...)
    RUN = "run"  # a training output folder (checkpoint-N/, trainer_state.json, global_stepN/)
    WEIGHTS = "weights"  # a single weights file
    PICKLE = "pickle"  # a pickle-bearing training-state file (optimizer, scheduler, rng, DeepSpeed)
    UNRECOGNIZED = "unrecognized"  # a path given that holds nothing vlm-doctor recognises (DOC002)
    ENVIRONMENT = "environment"  # the installed libraries (one per run)
    SANITY = "sanity"  # a model to load and run (--sanity)

    def __str__(self) -> str:
        return self.value


KINDS = frozenset(k.value for k in ArtifactKind)

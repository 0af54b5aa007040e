"""RUN: training runs. A training output folder (``checkpoint-N/`` saves, ``trainer_state.json``,
the final adapter, DeepSpeed ``global_stepN/`` and FSDP ``*.distcp`` shards) is judged on its own
record (the loss, learning-rate and grad-norm curves in ``log_history``) and across its saves
(which are complete, which stopped changing, which hold empty ZeRO-3 tensors or unfolded LoRA),
ending with the save to keep and the ones safe to delete.

Header-only by default: tensor values are read only to measure how much the adapter moved between
saves (a spread sample of modules; every LoRA tensor with ``--deep``). Never imports torch.

Codes: RUN0xx the record file, RUN1xx the curves, RUN2xx the saves (RUN205-RUN207: resuming from
them), RUN3xx the recommendation. Never imports torch, except RUN207 on a full fine-tune (the model
is built on the meta device to read its tensor names).
"""

from __future__ import annotations

# The family's one registration point: importing a module registers its fixtures and checks.
from doctor.checks.run import fixtures  # noqa: F401
from doctor.checks.run.rules import logs, recipe, resume, saves  # noqa: F401

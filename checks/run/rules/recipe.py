"""RUN107-RUN109: the learning-rate schedule, the hyper-parameters against LLaVA's recipe, and
gradients that never reach the adapter."""

from __future__ import annotations

import math

from doctor.errors import Skip
from doctor.findings import Location, Severity
from doctor.registry import Check, register
from doctor.runs.record import Record, all_zero, fmt, warmup_unfinished

RUN = frozenset({"run"})
# scripts/v1_5/finetune_lora.sh and finetune_task_lora.sh (haotian-liu/LLaVA)
RECIPE = {"r": 128, "lora_alpha": 256, "learning_rate": 2e-4, "mm_projector_lr": 2e-5}


@register
class WarmupNeverFinished(Check):
    """The learning rate was still warming up when the run ended.

    ## What it does
    On a finished run (global_step >= max_steps), reports a learning rate that rose or held at
    every logged step and ended above where it started.

    ## Why is this bad?
    Warmup as long as the run means most steps ran at a fraction of the intended learning rate:
    typically `warmup_steps` given in steps where a ratio was meant, or a run shortened after the
    warmup was set. The adapter is undertrained.

    Severity: warning. The model is undertrained, not wrong: nothing fails and more steps would fix it.

    ## Example
    `--warmup_steps 500 --max_steps 300`: the learning rate climbs to 60% of its peak and stops.

    ## How to fix
    Use `--warmup_ratio 0.03` (LLaVA's recipe) or warmup_steps well below max_steps.
    """

    code = "RUN107"
    name = "warmup-never-finished"
    severity = Severity.WARNING
    artifacts = RUN

    def run(self, run_record: Record, run_analysis):
        args = run_analysis.training_args()
        warmup = warmup_steps(args, run_record.max_steps)
        if warmup is not None and run_record.max_steps and warmup >= run_record.max_steps:
            yield self.finding(
                f"the warmup ({warmup} steps, from training_args.bin) is as long as the run ({run_record.max_steps} "
                "steps): the learning rate never reaches its peak",
                path=run_record.path, location=Location(key="warmup_steps"))
            return
        if not run_record.finished:
            raise Skip("the run has not reached max_steps, and training_args.bin does not give the warmup")
        if warmup_unfinished(run_record.lr) and not all_zero(run_record.lr):
            lr = [p for p in run_record.lr if math.isfinite(p.value)]
            yield self.finding(
                f"learning_rate rose at every logged step, from {fmt(lr[0].value)} to {fmt(lr[-1].value)} at the "
                f"last step ({run_record.global_step} of {run_record.max_steps}): warmup lasted the whole run",
                path=run_record.path, location=Location(pointer=run_record.pointer(lr[-1], "learning_rate")))


def warmup_steps(args: dict, max_steps: int) -> int | None:
    """Warmup in steps from TrainingArguments: ``warmup_steps`` (a float below 1 is a ratio in
    transformers 5), else ``warmup_ratio`` x max_steps."""
    steps, ratio = args.get("warmup_steps"), args.get("warmup_ratio")
    if isinstance(steps, float) and 0 < steps < 1:
        ratio, steps = steps, None
    if isinstance(steps, (int, float)) and steps > 0:
        return int(steps)
    if isinstance(ratio, (int, float)) and ratio > 0 and max_steps:
        return math.ceil(ratio * max_steps)
    return None


@register
class LoraRecipeDiffers(Check):
    """The LoRA hyper-parameters differ from LLaVA's published recipe.

    ## What it does
    Compares the adapter's `r` and `lora_alpha` (its adapter_config.json), the learning rate
    (training_args.bin through the safe pickle reader, else the peak logged learning rate) and
    LLaVA's `mm_projector_lr` with `scripts/v1_5/finetune_lora.sh`: r 128, alpha 256, lr 2e-4,
    projector lr 2e-5. Information, not an error: other values can be right for other data.

    ## Why is this bad?
    The update LoRA adds is scaled by alpha/r (alpha/sqrt(r) with rslora). LLaVA's train.py defaults
    (r 64, alpha 16: scale 0.25) are a common reason for "LoRA learned nothing" when the scripts'
    flags are dropped.

    Severity: info. A different recipe can be deliberate; it is named so it can be ruled out.

    ## Example
    `r 64, lora_alpha 16 (scale 0.25)` against the recipe's `r 128, lora_alpha 256 (scale 2)`.

    ## How to fix
    Start from the recipe (`--lora_r 128 --lora_alpha 256 --learning_rate 2e-4 --mm_projector_lr 2e-5`)
    and change one thing at a time.
    """

    code = "RUN108"
    name = "lora-recipe-differs"
    severity = Severity.INFO
    artifacts = RUN

    def run(self, run_analysis):
        config, where = run_analysis.adapter_config()
        args = run_analysis.training_args()
        if config is None and not run_analysis.layout.lora and any(st.kind == "model" for st in run_analysis.states):
            raise Skip("a full fine-tune: LLaVA's LoRA recipe does not apply")
        if config is None and not args:
            raise Skip("no adapter_config.json and no readable training_args.bin in the run")
        diffs: list[str] = []
        key = None
        if config is not None:
            r, alpha = config.get("r"), config.get("lora_alpha")
            if isinstance(r, (int, float)) and isinstance(alpha, (int, float)) and r > 0:
                scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
                if (r, alpha) != (RECIPE["r"], RECIPE["lora_alpha"]):
                    key = "r" if r != RECIPE["r"] else "lora_alpha"
                    diffs.append(f"r {r}, lora_alpha {alpha} (scale {scale:.3g}; recipe r 128, alpha 256: scale 2)")
        lr = args.get("learning_rate")
        source = "learning_rate"
        if not isinstance(lr, (int, float)) and run_analysis.record is not None:
            finite = [p.value for p in run_analysis.record.lr if math.isfinite(p.value)]
            lr, source = (max(finite), "peak logged learning rate") if finite else (None, "")
        if isinstance(lr, (int, float)) and lr > 0 and abs(lr - RECIPE["learning_rate"]) > 0.25 * RECIPE["learning_rate"]:
            diffs.append(f"{source} {fmt(lr)} (recipe 2e-4)")
        mm_lr = args.get("mm_projector_lr")
        if isinstance(mm_lr, (int, float)) and abs(mm_lr - RECIPE["mm_projector_lr"]) > 0.25 * RECIPE["mm_projector_lr"]:
            diffs.append(f"mm_projector_lr {fmt(mm_lr)} (recipe 2e-5)")
        if diffs:
            yield self.finding("differs from LLaVA v1.5's LoRA recipe: " + "; ".join(diffs),
                               path=where if key else str(run_analysis.layout.root),
                               location=Location(key=key) if key else None)


@register
class GradNormZero(Check):
    """The gradient norm was 0 at every logged step while the loss was not.

    ## What it does
    Reports a run whose every logged `grad_norm` is exactly 0 although the loss is finite and not 0.

    ## Why is this bad?
    No gradient reaches the trainable weights, so nothing is learned. The classic cause is gradient
    checkpointing (reentrant) on a model whose inputs do not require grad: with the base frozen
    for LoRA, the checkpointed blocks see no input that needs a gradient and return none.

    Severity: error. Nothing was learned and nothing fails: the saves silently equal the start.

    ## Example
    `--gradient_checkpointing True` with a PEFT model and no `enable_input_require_grads()`.

    ## How to fix
    Call `model.enable_input_require_grads()` before `get_peft_model` (LLaVA's train.py does this when
    gradient checkpointing is on), or pass `gradient_checkpointing_kwargs={"use_reentrant": False}`.
    """

    code = "RUN109"
    name = "grad-norm-zero"
    severity = Severity.ERROR
    artifacts = RUN

    def run(self, run_record: Record):
        losses = [p for p in run_record.loss if math.isfinite(p.value)]
        if len(run_record.grad_norm) >= 2 and all_zero(run_record.grad_norm) and losses and not all_zero(losses):
            yield self.finding(
                f"grad_norm is 0 at all {len(run_record.grad_norm)} logged steps while the loss is not "
                f"(last {fmt(losses[-1].value)})",
                path=run_record.path, location=Location(pointer=run_record.pointer(run_record.grad_norm[-1], "grad_norm")))

"""RUN0xx / RUN1xx: the run's record (``trainer_state.json`` log_history)."""

from __future__ import annotations

from typing import Any

from doctor.errors import Skip
from doctor.findings import Location, Severity
from doctor.registry import Check, register
from doctor.runs.record import (
    Record,
    all_zero,
    exact_zeros,
    fmt,
    non_finite,
    spikes,
    steps_text,
    trend,
)

RUN = frozenset({"run"})


def _before(analysis: Any, step: int) -> str:
    """The last save before ``step``, as advice on where to resume from."""
    earlier = [s for s in analysis.layout.checkpoints if s.step is not None and s.step < step]
    return f"resume from {earlier[-1].name}" if earlier else "restart (no checkpoint precedes it)"


@register
class TrainerStateUnreadable(Check):
    """trainer_state.json cannot be read.

    ## What it does
    Parses every `trainer_state.json` of the run (the top folder and each `checkpoint-N/`) and
    reports one that is not the JSON object `TrainerState.save_to_json` writes, with a `log_history` list.

    ## Why is this bad?
    `Trainer.train(resume_from_checkpoint=...)` loads this file and fails on it; and without it
    nothing records the loss curve, so the RUN1xx checks cannot judge that save.

    Severity: warning. No loader reads trainer_state.json for inference, so the weights are fine;
    resuming from that save raises, which RUN205 reports as an error when it is the newest save.

    ## Example
    A `trainer_state.json` cut short by a full disk: `{"best_metric": null, "epoch": 1.2, "log_his`

    ## How to fix
    Copy `trainer_state.json` from the next checkpoint of the same run (its log_history includes
    this one's), or resume from another checkpoint.
    """

    code = "RUN001"
    name = "trainer-state-unreadable"
    severity = Severity.WARNING
    artifacts = RUN

    def run(self, run_analysis):
        if run_analysis.record_error:
            where, why = run_analysis.record_error
            newest = run_analysis.newest_checkpoint
            if newest is not None and where == str(newest.save.path / "trainer_state.json"):
                return  # the newest save's: RUN205 reports it (resuming from it raises), one finding per cause
            yield self.finding(f"trainer_state.json {why}", path=where)


@register
class LossNotFinite(Check):
    """The logged training or eval loss is NaN or Inf.

    ## What it does
    Looks for NaN / Inf in `loss` and `eval_loss` in log_history.

    ## Why is this bad?
    A NaN loss makes NaN gradients; the optimizer step writes NaN into the adapter, and every save
    after that step holds NaN weights (a merged model then outputs garbage or `!!!!`).

    Severity: error. The optimizer steps on NaN gradients and silently writes NaN into the weights: the
    saves after it are a wrong model.

    ## Example
    `{"loss": NaN, "learning_rate": 0.0002, "step": 340}`

    ## How to fix
    Resume from the last checkpoint before the first NaN with a lower learning rate, bf16 instead of
    fp16 (fp16 overflows above 65504), `max_grad_norm 1.0`, and look at the batch of that step.
    """

    code = "RUN101"
    name = "loss-not-finite"
    severity = Severity.ERROR
    artifacts = RUN

    def run(self, run_record: Record, run_analysis):
        for key, series in (("loss", run_record.loss), ("eval_loss", run_record.eval_loss)):
            bad = non_finite(series)
            if not bad:
                continue
            first = bad[0]
            yield self.finding(
                f"{key} is NaN/Inf at {len(bad)} of {len(series)} logged steps (first at step {first.step}: "
                f"{fmt(first.value)}; steps {steps_text(bad)})",
                path=run_record.path, location=Location(pointer=run_record.pointer(first, key)),
                hint=f"{_before(run_analysis, first.step)} with a lower learning rate, bf16 instead of fp16 and "
                     "max_grad_norm 1.0; inspect the batch at that step.",
            )


@register
class LossZero(Check):
    """The logged training loss is exactly 0.0.

    ## What it does
    Counts log entries whose `loss` is exactly 0.0.

    ## Why is this bad?
    A cross-entropy loss is never exactly zero. The Trainer's `logging_nan_inf_filter` (on by
    default) replaces a NaN step loss by the mean of the window so far, which is 0.0 when every
    step since the last log was NaN: so 0.0 means no step in that window had a single label to
    learn from. In LLaVA the usual cause is `WARNING: tokenization mismatch`: the conversation
    template (`--version`) does not match the LLM, and every label is set to IGNORE_INDEX.

    Severity: error. The run trained on wrong data (no label to learn from) and nothing fails.

    ## Example
    `{"loss": 0.0, "grad_norm": 0.0, "learning_rate": 0.0002, "step": 10}` at every step.

    ## How to fix
    Check the training log for `tokenization mismatch` and pass the `--version` template that
    matches the LLM (`v1` for Vicuna, `llava_llama_2`, `mistral_instruct`, ...); `vlm-doctor check`
    on the dataset with `--tokenizer` dry-runs the label masking.
    """

    code = "RUN102"
    name = "loss-zero"
    severity = Severity.ERROR
    artifacts = RUN

    def run(self, run_record: Record):
        zeros = exact_zeros(run_record.loss)
        if not zeros:
            return
        scope = "every logged step" if len(zeros) == len(run_record.loss) else \
            f"{len(zeros)} of {len(run_record.loss)} logged steps (steps {steps_text(zeros)})"
        yield self.finding(f"training loss is exactly 0.0 at {scope}", path=run_record.path,
                           location=Location(pointer=run_record.pointer(zeros[0], "loss")))


@register
class LossNotDecreasing(Check):
    """The training loss never fell: the adapter learned nothing.

    ## What it does
    Compares the median loss of the first fifth of the logged steps with the median of the last
    half (finite, non-zero losses; at least 10 points). A fall under 2% is reported; medians ignore
    single spikes and the per-batch noise of `logging_steps 1`.

    ## Why is this bad?
    LoRA that does not lower the loss leaves the model as it was: the merged model answers like the
    base ("LoRA learned nothing"). Typical causes: a scale alpha/r far below 1 (LLaVA's train.py
    defaults r 64, alpha 16), a learning rate too low or stuck at 0, target modules that miss the
    LLM, or labels that are all masked.

    Severity: warning. Nothing fails and the run may still be right (a tiny learning rate on purpose);
    the causes that are certainly wrong have their own errors (RUN102, RUN106, RUN109).

    ## Example
    Median 2.31 over steps 1-20, median 2.30 over steps 51-100.

    ## How to fix
    Use the published recipe (r 128, alpha 256, lr 2e-4; see RUN108), check the learning-rate curve
    (RUN106/RUN107) and that the adapter's target modules are in the LLM (`vlm-doctor check` on it).
    """

    code = "RUN103"
    name = "loss-not-decreasing"
    severity = Severity.WARNING
    artifacts = RUN

    def run(self, run_record: Record):
        t = trend(run_record.loss)
        if t is None:
            raise Skip("fewer than 10 finite, non-zero losses logged")
        if t.change >= 0.02:
            return
        verb = "rose" if t.change < 0 else "did not fall"
        yield self.finding(
            f"training loss {verb}: median {fmt(t.head_median)} over steps {t.head[0].step}-{t.head[-1].step} vs "
            f"{fmt(t.tail_median)} over steps {t.tail[0].step}-{t.tail[-1].step} ({-t.change:+.1%})",
            path=run_record.path, location=Location(pointer=run_record.pointer(t.tail[-1], "loss")),
        )


@register
class LossSpike(Check):
    """The training loss jumped far above its recent level.

    ## What it does
    Flags a logged loss above twice the median of the previous 20 losses and 6 robust standard
    deviations above it, and says whether the loss came back down within 5 logs.

    ## Why is this bad?
    A spike that does not recover means the optimizer left a good region (too high a learning
    rate, fp16 overflow, a corrupt batch); saves after it are worse than the ones before.

    Severity: warning when the loss did not recover (later saves are likely worse), info when it did;
    nothing fails and the weights are what training made.

    ## Example
    Loss 1.1, 1.0, 1.05, ... then 7.9 at step 120, and 3.0 after.

    ## How to fix
    Keep a checkpoint from before the spike (see RUN301); lower the learning rate or set
    `max_grad_norm 1.0`, and inspect the batch at the spike's step.
    """

    code = "RUN104"
    name = "loss-spike"
    severity = Severity.WARNING
    artifacts = RUN

    def run(self, run_record: Record, run_analysis):
        found = spikes(run_record.loss)
        if not found:
            return
        worst = [s for s in found if not s.recovered] or found
        shown = "; ".join(f"{fmt(s.point.value)} at step {s.point.step} (median before {fmt(s.baseline)}, "
                          f"{'recovered' if s.recovered else 'did not recover'})" for s in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        first = worst[0].point
        yield self.finding(
            f"training loss spiked {len(found)} time(s): {shown}{more}",
            path=run_record.path, location=Location(pointer=run_record.pointer(first, "loss")),
            severity=Severity.WARNING if any(not s.recovered for s in found) else Severity.INFO,
            hint=f"{_before(run_analysis, first.step)} with a lower learning rate or max_grad_norm 1.0 if the "
                 "loss stayed up; inspect the batch at that step.",
        )


@register
class GradNormNotFinite(Check):
    """The logged gradient norm is NaN or Inf.

    ## What it does
    Looks for NaN / Inf in `grad_norm` (logged by transformers >= 4.38).

    ## Why is this bad?
    With fp16, dynamic loss scaling starts high and skips the first overflowing steps (Inf norm):
    a few at the start are harmless. Non-finite norms that persist, or under bf16/fp32, mean the
    optimizer is stepping on NaN gradients and the weights are being destroyed.

    Severity: error when non-finite norms persist (the weights are being silently destroyed), warning
    for the first fp16 steps the loss scaler skips (the weights are untouched by those steps).

    ## Example
    `{"grad_norm": NaN, "loss": 1.73, "step": 800}`

    ## How to fix
    Resume from a checkpoint before the first non-finite norm with bf16, a lower learning rate and
    `max_grad_norm 1.0`.
    """

    code = "RUN105"
    name = "grad-norm-not-finite"
    severity = Severity.ERROR
    artifacts = RUN

    def run(self, run_record: Record, run_analysis):
        series = run_record.grad_norm
        bad = non_finite(series)
        if not bad:
            return
        persistent = not series[-1].finite or len(bad) > max(1, len(series) // 10)
        yield self.finding(
            f"grad_norm is NaN/Inf at {len(bad)} of {len(series)} logged steps (steps {steps_text(bad)})"
            + ("" if persistent else "; finite afterwards, as when fp16 loss scaling skips overflowing steps"),
            path=run_record.path, location=Location(pointer=run_record.pointer(bad[0], "grad_norm")),
            severity=Severity.ERROR if persistent else Severity.WARNING,
            hint=f"{_before(run_analysis, bad[0].step)} with bf16, a lower learning rate and max_grad_norm 1.0."
            if persistent else "Harmless if the run used fp16 and the loss kept falling; otherwise resume from an "
                               "earlier checkpoint with bf16.",
        )


@register
class LearningRateZero(Check):
    """The learning rate was 0 at every logged step.

    ## What it does
    Reads `learning_rate` from log_history; reports when every logged value is 0.

    ## Why is this bad?
    Nothing was trained: the adapter at every save equals its initialisation (lora_B all zeros),
    so merging it changes nothing.

    Severity: error. The saves silently equal the initial adapter: the run yields a wrong (untrained)
    model without any failure.

    ## Example
    `--learning_rate 0`, or a custom scheduler / DeepSpeed `WarmupLR` with `warmup_max_lr: 0`.

    ## How to fix
    Set a learning rate (LLaVA's LoRA recipe: 2e-4) and check the scheduler: with a DeepSpeed
    scheduler in the config, its `warmup_max_lr` wins over `--learning_rate` unless set to "auto".
    """

    code = "RUN106"
    name = "learning-rate-zero"
    severity = Severity.ERROR
    artifacts = RUN

    def run(self, run_record: Record):
        if len(run_record.lr) >= 2 and all_zero(run_record.lr):
            yield self.finding(f"learning_rate is 0 at all {len(run_record.lr)} logged steps",
                               path=run_record.path, location=Location(pointer=run_record.pointer(run_record.lr[-1], "learning_rate")))

"""RUN205-RUN207: can training be resumed from the newest save, and does the resume restore it?"""

from __future__ import annotations

from doctor.findings import Location, Severity
from doctor.registry import Check, register
from doctor.runs.resume import Resume
from doctor.runs.triage import RunAnalysis, SaveState

RUN = frozenset({"run"})


def _newest(a: RunAnalysis) -> tuple[SaveState, Resume] | None:
    st = a.newest_checkpoint
    return (st, a.resume[st.save.name]) if st is not None else None


def _intact_before(a: RunAnalysis, st: SaveState) -> SaveState | None:
    from doctor.runs.triage import _order

    a.check_weights()
    return max((o for o in a.states if o is not st and a.resume[o.save.name].resumable and _order(o) < _order(st)),
               key=_order, default=None)


def _fallback(a: RunAnalysis, st: SaveState) -> str:
    intact = _intact_before(a, st)
    if intact is None:
        return "no earlier save of this run resumes intact either"
    return f"resume from {intact.save.name} instead: the newest save that resumes intact ({intact.save.path})"


def _covered(st: SaveState, file: str) -> bool:
    """Causes another RUN check already reports, with resume advice (one finding per cause): an
    empty or incomplete save (RUN201), empty, unreadable or unfolded weights (RUN203/RUN204, SEC)."""
    if st.kind == "empty" or file in st.missing:
        return True
    training_state = file in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "scaler.pt", "latest") \
        or file.startswith("rng_state") or "/" in file
    return not training_state and bool(st.missing or st.empty_tensors or st.no_tensors or st.unreadable)


@register
class ResumeRaises(Check):
    """Resuming from the newest save raises.

    ## What it does
    Judges `trainer.train(resume_from_checkpoint=<newest checkpoint-N>)` as the installed
    transformers does it: `train()` reads `trainer_state.json` unconditionally;
    `_load_from_checkpoint` needs model or adapter weights (and `adapter_config.json` for PEFT);
    the optimizer, scheduler, RNG and scaler files are `torch.load`ed when present, so an empty or
    truncated one raises; under DeepSpeed the `latest` tag, its `global_stepN/` model and optimizer
    states, and a `scheduler.pt` the run writes are all read without a fallback.

    ## Why is this bad?
    Error: the trainer fails. A run that was killed (pre-empted, out of disk) is restarted with
    `resume_from_checkpoint=True`, which picks the highest `checkpoint-N`; if that one lacks a file,
    the restart crashes with `FileNotFoundError` or `Can't find a valid checkpoint`, often hours
    into a queue.

    ## Example
    `checkpoint-4/` without `trainer_state.json` (deleted to save space, or the save was cut):
    `FileNotFoundError: .../checkpoint-4/trainer_state.json`.

    ## How to fix
    Resume from the earlier save the message names (pass its path to `resume_from_checkpoint`),
    or move the broken save aside so that `resume_from_checkpoint=True` skips it.
    """

    code = "RUN205"
    name = "resume-raises"
    severity = Severity.ERROR
    artifacts = RUN

    def run(self, run_analysis: RunAnalysis):
        found = _newest(run_analysis)
        if found is None:
            return
        st, r = found
        raises = [(f, why) for f, why in r.raises if not _covered(st, f)]
        err = run_analysis.record_error  # RUN001 leaves the newest save's broken trainer_state.json to this check
        if err and err[0] == str(st.save.path / "trainer_state.json"):
            raises = [(f, f"{err[1]}: TrainerState.load_from_json raises" if f == "trainer_state.json" else why)
                      for f, why in raises]
        if not raises:
            return
        what = "; ".join(f"{f}: {why}" for f, why in raises)
        first = raises[0][0]
        if "/" in first:  # global_stepN/*optim_states.pt: the folder
            path = st.save.path / first.split("/")[0]
        elif first.endswith((".json", ".pt", ".pth", ".bin", ".safetensors")) or first == "latest":
            path = st.save.path / first
        else:
            path = st.save.path
        hint = _fallback(run_analysis, st)
        if _intact_before(run_analysis, st) is None:
            hint += (": restore the file if a copy exists, or start a new run from this save's weights (load the "
                     "adapter or model, then train without resume_from_checkpoint: the optimizer restarts)")
        yield self.finding(f"{st.save.name} (the newest save) cannot be resumed: {what}", path=str(path),
                           hint=hint[:1].upper() + hint[1:] + ".")


@register
class ResumeLosesState(Check):
    """Resuming from the newest save silently restarts the optimizer, schedule or RNG.

    ## What it does
    Finds the training state the newest `checkpoint-N` lacks while the Trainer's resume goes on
    without it: `_load_optimizer_and_scheduler` loads neither unless `optimizer.pt` AND
    `scheduler.pt` exist; `_load_rng_state` only logs when `rng_state*.pth` is absent (the rank
    count is read from the earlier saves); `_load_scaler` skips a missing `scaler.pt` that earlier
    saves of the same (fp16) run have. Names the newest earlier save that resumes intact.

    ## Why is this bad?
    Warning: the resume works, and the weights are right, but the training after it is not the
    training that was planned: Adam's moments start from zero and the learning-rate schedule starts
    over (the warmup runs again, from a trained model), or the fp16 loss scale restarts, or the
    randomness differs. Nothing says so in the log at the default level.

    ## Example
    `checkpoint-4/` without `scheduler.pt`: the resumed run's learning rate is 0 at step 5 and
    climbs through the warmup again; the optimizer is fresh too.

    ## How to fix
    Resume from the save named in the message, which holds all of it; or accept the restart (and
    shorten the warmup) knowingly.
    """

    code = "RUN206"
    name = "resume-loses-state"
    severity = Severity.WARNING
    artifacts = RUN

    def run(self, run_analysis: RunAnalysis):
        found = _newest(run_analysis)
        if found is None:
            return
        st, r = found
        if r.raises or not r.lost:
            return  # a resume that raises is RUN205's
        lost = " and ".join(s for s, _ in r.lost)
        why = "; ".join(w for _, w in r.lost)
        hint = _fallback(run_analysis, st)
        if _intact_before(run_analysis, st) is None:
            hint += (f": resume from {st.save.name} knowing that this state restarts (shorten the warmup to match), "
                     "and find what keeps it from the saves (save_only_model=True, a cleanup script, a full disk)")
        yield self.finding(f"resuming from {st.save.name} (the newest save) restarts its {lost}: {why}",
                           path=str(st.save.path), hint=hint[:1].upper() + hint[1:] + ".")


@register
class ResumeDropsWeights(Check):
    """The Trainer's resume loads none of a full fine-tune's weights.

    ## What it does
    For each full fine-tune `checkpoint-N` (config.json + model weights), compares the tensor
    names in the file with the model class of its config.json built on the meta device (no
    weights), exactly as the Trainer's `_load_from_checkpoint` loads them:
    `model.load_state_dict(state_dict, strict=False)`, with no name conversion. Names that
    `from_pretrained` would map onto the model (transformers 5 renames the 4.x VLM layout
    `language_model.model.*` to `model.language_model.*`) but `load_state_dict` does not, are
    counted as dropped.

    ## Why is this bad?
    Error: the resume silently yields the wrong model. `strict=False` ignores every name it does
    not know, logs a warning and trains on from the BASE weights: transformers 5 saves a LLaVA full
    fine-tune under the 4.x names, so resuming its own checkpoint drops every trained weight.

    ## Example
    `checkpoint-2/model.safetensors` holds `language_model.model.layers.0.self_attn.q_proj.weight`;
    the model has `model.language_model.layers.0.self_attn.q_proj.weight`: 48 of 48 tensors dropped.

    ## How to fix
    Do not resume through the Trainer from this save: load it with
    `from_pretrained(checkpoint)` (which converts the names), and start a new run from that model
    (the optimizer restarts), or rewrite the file with the in-memory names
    (`model.state_dict()` of the loaded model) before resuming.
    """

    code = "RUN207"
    name = "resume-drops-weights"
    severity = Severity.ERROR
    artifacts = RUN

    def run(self, run_analysis: RunAnalysis):
        if not any(st.kind == "model" for st in run_analysis.states):
            return
        resume = run_analysis.check_weights()
        hit = [(st, resume[st.save.name].dropped) for st in run_analysis.states
               if resume[st.save.name].dropped is not None and resume[st.save.name].dropped.count]
        if not hit:
            return
        st, d = hit[-1]
        names = ", ".join(st.save.name for st, _ in hit)
        disk, mem = d.examples[0]
        yield self.finding(
            f"{names}: the Trainer's resume would drop {d.count} of {d.total} tensors of {d.file.name} "
            f"({d.model_class} has no tensor named like {disk!r}; from_pretrained maps it to {mem!r}) and train on "
            f"with {d.left_at_base} weights left at the base model",
            path=str(d.file), location=Location(tensor=disk),
            hint="Load the save with from_pretrained (which converts the names) and start a new run from it, or "
                 "rewrite the file with the model's own names (model.state_dict()) before resuming; do not pass "
                 "it to resume_from_checkpoint as it is.")

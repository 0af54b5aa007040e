"""RUN2xx / RUN3xx: the run's saves, across checkpoints, and the one to keep."""

from __future__ import annotations

from pathlib import Path

from doctor.files import FSDP_DIR_RE
from doctor.findings import Location, Severity
from doctor.io.pickle.dcp import saved_keys
from doctor.registry import Check, register
from doctor.runs.hints import deepspeed_recovery, extract_adapter, llava_extras_hint, sibling_with
from doctor.runs.triage import RunAnalysis, SaveState, human_size

RUN = frozenset({"run"})


@register
class CheckpointIncomplete(Check):
    """A save lacks files its loader needs.

    ## What it does
    Lists, for each `checkpoint-N/` and the final output, what a loader needs and is absent:
    `adapter_config.json` beside the adapter weights, the weights beside the config, `config.json`
    beside full-model weights, and for an original-LLaVA LoRA run `config.json` and
    `non_lora_trainables.bin` (the projector), which LLaVA's train.py writes only at the end of
    training. An empty checkpoint folder (a save cut short) is reported too.

    ## Why is this bad?
    `PeftModel.from_pretrained` needs adapter_config.json; LLaVA's `load_pretrained_model` on an
    intermediate checkpoint fails with `OSError: ... does not appear to have a file named
    config.json`, and without non_lora_trainables.bin the projector stays randomly initialised.

    Severity: error, as the loader raises on that save (PeftModel.from_pretrained without
    adapter_config.json, from_pretrained without config.json or weights), or the projector is lost (no
    save of the run holds non_lora_trainables.bin); warning for LLaVA's intermediate checkpoints while
    the run's final output holds both files: that is how LLaVA's train.py saves, and copying them in
    completes the save.

    ## Example
    `out/checkpoint-6000/` holds adapter_model.safetensors and adapter_config.json only.

    ## How to fix
    Copy the missing files from the same run, as the message says (a projector from another run or
    step gives abnormal output: take it from this run).
    """

    code = "RUN201"
    name = "checkpoint-incomplete"
    severity = Severity.ERROR
    artifacts = RUN

    def run(self, run_analysis: RunAnalysis):
        layout = run_analysis.layout
        extras = [st for st in run_analysis.states if st.extras_only]
        if extras:
            names = ", ".join(st.save.label for st in extras)
            sourced = all(sibling_with(layout, n, extras[0].save) for n in extras[0].missing)
            yield self.finding(
                f"{names} lack{'s' if len(extras) == 1 else ''} {' and '.join(extras[0].missing)}: LLaVA's train.py "
                "writes them only at the end of training, so these saves do not load on their own"
                + ("" if sourced else "; no save of this run holds them yet (the run did not finish)"),
                path=str(extras[0].save.path), hint=llava_extras_hint(layout, extras),
                severity=Severity.WARNING if sourced else Severity.ERROR)
        for st in run_analysis.states:
            if st.extras_only or st.empty_tensors or st.no_tensors or st.unfolded:
                continue
            if st.kind == "empty":
                yield self.finding(f"{st.save.label} is empty: the save was cut short (killed or out of disk)",
                                   path=str(st.save.path),
                                   hint=f"Delete {st.save.name} and resume from the save before it.")
            elif st.missing:
                yield self.finding(f"{st.save.label} lacks {', '.join(st.missing)}", path=str(st.save.path),
                                   hint=_copy_hint(run_analysis, st))


def _copy_hint(a: RunAnalysis, st: SaveState) -> str:
    hints = []
    for name in st.missing:
        if name in ("adapter_config.json", "config.json"):
            src = sibling_with(a.layout, name, st.save)
            hints.append(f"copy {name} from {src} (same run)" if src else
                         f"write {name} for this run (none of its saves has one)")
        else:
            hints.append(f"{name} was never written: use another save, or recover the weights from the "
                         "DeepSpeed/FSDP shards if the save has them")
    text = "; ".join(hints)
    return text[:1].upper() + text[1:] + "."


@register
class AdapterStoppedChanging(Check):
    """The adapter did not change between checkpoints.

    ## What it does
    Reads the LoRA tensors of consecutive `checkpoint-N/` adapters (headers first, then tensors one
    at a time: a spread sample of modules, every LoRA tensor with `--deep`) and reports saves whose
    weights are bit-identical to the save before.

    ## Why is this bad?
    Training steps ran but did not move the adapter: a learning rate of 0, gradients that never
    arrive (all labels masked, gradient checkpointing without input grads), or an optimizer that
    skips every step. The compute between those saves was wasted and later saves are no better.

    Severity: warning. The saves are what the training made and load fine; the cause, when certain
    (learning rate 0, all labels masked, no gradient), is its own error (RUN106, RUN102, RUN109).

    ## Example
    `checkpoint-200` and `checkpoint-400` hold the same `lora_A` / `lora_B` values.

    ## How to fix
    Look at the loss, learning-rate and grad-norm curves (RUN102, RUN106, RUN109) for the range of
    steps named, fix the cause and resume from the last checkpoint before it.
    """

    code = "RUN202"
    name = "adapter-stopped-changing"
    severity = Severity.WARNING
    artifacts = RUN

    def run(self, run_analysis: RunAnalysis):
        deltas = run_analysis.deltas
        order = [st for st in run_analysis.states if st.lora and not st.save.is_final]
        frozen = [(a, b) for a, b in zip(order, order[1:], strict=False)
                  if (d := deltas.get(b.save.name)) is not None and d.unchanged]
        if not frozen:
            return
        groups: list[list[SaveState]] = []
        for a, b in frozen:
            if groups and groups[-1][-1] is a:
                groups[-1].append(b)
            else:
                groups.append([a, b])
        d = deltas[frozen[0][1].save.name]
        scope = (f"{d.compared} of {d.total} LoRA tensors compared; --deep compares all" if d and d.sampled
                 else f"all {d.total if d else '?'} LoRA tensors compared")
        spans = "; ".join(f"{g[0].save.name} to {g[-1].save.name} (across {len(g) - 1} save{'s' if len(g) > 2 else ''})"
                          for g in groups)
        yield self.finding(f"the adapter did not change from {spans}: {scope}",
                           path=str(groups[0][-1].save.adapter_weights or groups[0][-1].save.path))


@register
class Zero3EmptySave(Check):
    """A save holds empty weights: ZeRO-3 partitions saved without being gathered.

    ## What it does
    Reports checkpoint adapters or models whose tensors have 0 elements, whose weights file holds
    no tensor at all, or a save whose weights exist only as DeepSpeed `global_stepN/` shards.

    ## Why is this bad?
    Under ZeRO-3 each rank holds a slice of every parameter; saving without
    `stage3_gather_16bit_weights_on_model_save` writes `torch.Size([0])` tensors (or none). Loading
    fails with `size mismatch for ...lora_B.default.weight: copying a param with shape torch.Size([0])`.

    Severity: error. Loading raises a size mismatch, or yields an adapter with no weights.

    ## Example
    `adapter_model.safetensors` with `lora_A.weight` of shape `[0]`, next to `global_step500/`.

    ## How to fix
    Rebuild the weights from the DeepSpeed shards with the `zero_to_fp32.py` copied into the
    checkpoint (command in the message), then extract the adapter; set
    `"stage3_gather_16bit_weights_on_model_save": true` for future runs.
    """

    code = "RUN203"
    name = "zero3-empty-save"
    severity = Severity.ERROR
    artifacts = RUN

    def run(self, run_analysis: RunAnalysis, artifact):
        for st in run_analysis.states:
            if str(st.save.path) == artifact.path and "adapter" in artifact.kinds and st.kind == "adapter":
                continue  # the adapter checks (ADP015) judge the artifact's own adapter
            weights = st.save.adapter_weights or (st.save.model_weights or [None])[0]
            if st.empty_tensors:
                what = f"{len(st.empty_tensors)} tensor(s) with 0 elements (e.g. {st.empty_tensors[0]})"
                loc = Location(tensor=st.empty_tensors[0])
            elif st.no_tensors:
                what, loc = f"{weights.name if weights else 'its weights file'} holds no tensor data", None
            elif st.kind == "deepspeed":
                what, loc = f"no weights file; only DeepSpeed shards ({', '.join(st.save.deepspeed_tags)})", None
            else:
                continue
            yield self.finding(f"{st.save.label}: {what}", path=str(weights or st.save.path), location=loc,
                               hint=deepspeed_recovery(st.save, run_analysis.layout))


@register
class LoraNotFolded(Check):
    """A DeepSpeed or FSDP export still holds the LoRA layers unfolded.

    ## What it does
    Finds full-model weights in a save whose tensor names contain `.base_layer.` (the state dict of
    a `PeftModel`, as `zero_to_fp32.py` or an FSDP full state dict writes it), and FSDP
    `SHARDED_STATE_DICT` saves (`pytorch_model_fsdp_N/*.distcp`) with no adapter beside them whose
    `.metadata` lists LoRA keys (or cannot be read; a full-parameter sharded save is not flagged).

    ## Why is this bad?
    Neither is a model nor an adapter: `from_pretrained` on it reports every `base_layer` and
    `lora_A.default` key as unexpected and initialises the real weights randomly; PEFT cannot load
    it as an adapter either.

    Severity: error. from_pretrained silently initialises the real weights randomly (a wrong model),
    and an FSDP sharded save has no weights file any loader reads.

    ## Example
    `model.safetensors` with `base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight`
    and `...q_proj.lora_A.default.weight`.

    ## How to fix
    Extract the LoRA tensors into a PEFT adapter (command in the message) and merge that with
    `vlm-doctor merge`, or fold W + (alpha/r) B A yourself and strip `base_model.model.` and `.base_layer`.
    """

    code = "RUN204"
    name = "lora-not-folded"
    severity = Severity.ERROR
    artifacts = RUN

    def run(self, run_analysis: RunAnalysis):
        for st in run_analysis.states:
            if st.unfolded:
                src = next((w for w in st.save.model_weights if w.suffix == ".safetensors"), st.save.model_weights[0])
                yield self.finding(f"{st.save.label}: {src.name} holds LoRA unfolded ({st.unfolded[0]})",
                                   path=str(src), location=Location(tensor=st.unfolded[0]),
                                   hint=extract_adapter(run_analysis.layout, src))
            elif st.save.fsdp_dirs and not st.save.adapter_weights and not st.save.model_weights:
                # the model's shards (accelerate: pytorch_model_fsdp_N/), never optimizer_N/ beside them
                model_dir = next((d for d in st.save.fsdp_dirs if d == "." or FSDP_DIR_RE.match(d)), None)
                if model_dir is None:
                    continue
                shard_dir = st.save.path / model_dir
                keys = saved_keys(shard_dir)
                lora = next((k for k in keys or () if "lora_" in k or ".base_layer." in k), None)
                if keys is not None and lora is None:
                    continue  # a full-parameter sharded save: no LoRA to fold
                yield self.finding(
                    f"{st.save.label}: weights only as FSDP sharded checkpoint ({Path(model_dir) / '*.distcp'})"
                    + (f", LoRA unfolded ({lora})" if lora else ""),
                    path=str(shard_dir), location=Location(tensor=lora) if lora else None,
                    hint=f"Run `accelerate merge-weights {shard_dir} {st.save.path}-merged` (writes model.safetensors), "
                         "then extract the adapter: " + extract_adapter(run_analysis.layout, None))


@register
class CheckpointRecommendation(Check):
    """Which save to keep, and which are safe to delete.

    ## What it does
    Picks the save to keep: the lowest eval loss among complete saves evaluated at their step;
    else the trainer's `best_model_checkpoint`; else the last complete save before the loss went
    NaN/Inf or 0.0. Lists the other `checkpoint-N/` folders with their sizes (the last one stays
    when the run is unfinished: it holds the optimizer state to resume from).

    ## Why is this bad?
    It is not: this is information. Checkpoints of a 7B LoRA run with optimizer state take
    gigabytes each, and the last one is not always the best one.

    Severity: info: a recommendation, not a defect.

    ## Example
    `keep checkpoint-400 (lowest eval loss 1.21 at step 400); safe to delete: checkpoint-200 (2.1 GB), ...`

    ## How to fix
    Delete the folders listed once you have checked the kept one (`vlm-doctor triage RUN` shows
    the table this is based on).
    """

    code = "RUN301"
    name = "checkpoint-recommendation"
    severity = Severity.INFO
    artifacts = RUN

    def run(self, run_analysis: RunAnalysis):
        if not run_analysis.states:
            return
        r = run_analysis.recommendation
        if r.keep is None:
            msg = "no save to recommend: " + "; ".join(r.reasons)
        else:
            msg = f"keep {r.keep_label} ({'; '.join(r.reasons)})"
            if r.delete:
                msg += "; safe to delete: " + ", ".join(f"{n} ({human_size(b)})" for n, b in r.delete) + \
                       f" ({human_size(r.reclaim)} in all)"
        if r.notes:
            msg += "; " + "; ".join(r.notes)
        keep = run_analysis.layout.by_name(r.keep) if r.keep else None
        yield self.finding(msg, path=str(keep.path if keep else run_analysis.layout.root),
                           hint="Delete the listed folders after checking the kept one." if r.delete else
                           "Nothing to delete.")

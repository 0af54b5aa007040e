"""Run triage: each save's state (complete? what is missing? empty ZeRO-3 tensors? LoRA left
unfolded?), the adapter's movement between saves, and which save to keep.

``analyze_run(path)`` is the one entry point; the RUN checks and ``vlm-doctor triage`` share it.
Tensor deltas are computed on first use (``RunAnalysis.deltas``), headers only until then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.artifacts import checkpoint_step
from doctor.io.safetensors_header import SafetensorsHeader, TensorInfo, read_header
from doctor.runs.layout import RunLayout, Save, human_size, read_json, read_layout  # noqa: F401 (re-export)
from doctor.runs.record import Record, RecordError, first_bad_step, load_record, value_at
from doctor.runs.resume import Resume, resume_states, weights_dropped
from doctor.runs.tensors import Delta, delta, lora_only, pickle_tensor_shapes, torch_zip_summary


@dataclass
class SaveState:
    save: Save
    kind: str  # adapter | model | projector | deepspeed | fsdp | empty
    missing: list[str] = field(default_factory=list)  # files a loader needs that are absent
    extras_only: bool = False  # only LLaVA's end-of-training extras are missing
    empty_tensors: list[str] = field(default_factory=list)  # numel == 0 (ZeRO-3 partitioned)
    no_tensors: bool = False  # the weights file holds nothing at all
    unreadable: str | None = None  # the weights header is broken (the SEC/ADP checks say how)
    unfolded: list[str] = field(default_factory=list)  # ".base_layer." keys: a PeftModel state dict
    lora: dict[str, TensorInfo] | None = None

    @property
    def complete(self) -> bool:
        return not (self.missing or self.empty_tensors or self.no_tensors or self.unreadable or self.unfolded) \
            and self.kind in ("adapter", "model", "projector")

    @property
    def usable(self) -> bool:
        """Usable for inference: the weights and configs load (LLaVA extras copied in from the run)."""
        return self.complete or self.extras_only

    @property
    def status(self) -> str:
        if self.complete:
            return "complete"
        if self.empty_tensors or self.no_tensors:
            return "empty weights"
        if self.unfolded:
            return "LoRA unfolded"
        if self.unreadable:
            return "unreadable"
        if self.extras_only:
            return "needs LLaVA extras"
        if self.kind in ("deepspeed", "fsdp"):
            return f"{self.kind} shards only"
        if self.kind == "empty":
            return "empty"
        return "incomplete"


@dataclass
class Recommendation:
    keep: str | None  # a save's name ("checkpoint-400", or "final" for the run folder's own output)
    reasons: list[str]
    delete: list[tuple[str, int]]  # (save name, bytes)
    notes: list[str] = field(default_factory=list)
    keep_label: str | None = None
    resume_from: str | None = None  # the save to resume training from (kept too), None when none is intact

    @property
    def reclaim(self) -> int:
        return sum(size for _, size in self.delete)

    def to_dict(self) -> dict[str, Any]:
        return {"keep": self.keep, "keep_label": self.keep_label, "resume_from": self.resume_from,
                "reasons": self.reasons, "delete": [{"name": n, "bytes": b} for n, b in self.delete],
                "reclaim_bytes": self.reclaim, "notes": self.notes}


@dataclass
class RunAnalysis:
    layout: RunLayout
    states: list[SaveState]
    record: Record | None
    record_error: tuple[str, str] | None  # (path, why) when the record file is unreadable
    deep: bool = False
    _deltas: dict[str, Delta | None] | None = None
    _args: dict[str, Any] | None = None
    _resume: dict[str, Resume] | None = None
    _weights_checked: bool = False

    @property
    def resume(self) -> dict[str, Resume]:
        """Each save's resume verdict (files and headers; ``check_weights`` adds the tensor names)."""
        if self._resume is None:
            self._resume = resume_states(self)
        return self._resume

    def check_weights(self) -> dict[str, Resume]:
        """Add to the resume verdicts of full fine-tune checkpoints the tensors the Trainer's
        ``load_state_dict(strict=False)`` would drop (builds the model on the meta device: torch)."""
        resume = self.resume
        if not self._weights_checked:
            self._weights_checked = True
            cache: dict[Any, Any] = {}
            for st in reversed(self.states):
                r = resume.get(st.save.name)
                if r is not None and r.applicable and r.engine == "trainer" and st.kind == "model" \
                        and not st.unreadable:
                    r.dropped = weights_dropped(st.save, cache)
        return resume

    @property
    def newest_checkpoint(self) -> SaveState | None:
        return max((st for st in self.states if self.resume[st.save.name].applicable), key=_order, default=None)

    def adapter_config(self) -> tuple[dict[str, Any] | None, str | None]:
        """The adapter_config.json of the final output, else of the latest save that has one."""
        for st in reversed(self.states):
            path = st.save.adapter_config
            config = read_json(path) if path else None
            if isinstance(config, dict):
                return config, str(path)
        return None, None

    def training_args(self) -> dict[str, Any]:
        """Fields of training_args.bin read through the safe pickle reader; {} when unavailable."""
        if self._args is None:
            from doctor.runs.args import read_training_args

            self._args = read_training_args(self.layout)
        return self._args

    @property
    def deltas(self) -> dict[str, Delta | None]:
        """Each save's LoRA movement since the previous save with LoRA tensors (by save name)."""
        if self._deltas is None:
            self._deltas = {}
            prev: SaveState | None = None
            for st in self.states:
                if not st.lora:
                    continue
                same_step = prev is not None and st.save.is_final and st.save.step in (None, prev.save.step)
                self._deltas[st.save.name] = (
                    delta(prev.lora, st.lora, self.deep) if prev is not None and prev.lora and not same_step else None
                )
                prev = st
        return self._deltas

    def eval_loss(self, st: SaveState) -> float | None:
        return value_at(self.record.eval_loss, st.save.step) if self.record else None

    def train_loss(self, st: SaveState) -> float | None:
        return value_at(self.record.loss, st.save.step) if self.record else None

    @property
    def recommendation(self) -> Recommendation:
        return recommend(self)

    def to_dict(self) -> dict[str, Any]:
        self.check_weights()
        rows = []
        for st in self.states:
            d = self.deltas.get(st.save.name)
            rows.append({
                "name": st.save.name, "path": str(st.save.path), "step": st.save.step, "final": st.save.is_final,
                "kind": st.kind, "status": st.status, "complete": st.complete, "missing": st.missing,
                "usable": st.usable, "resumable": self.resume[st.save.name].to_dict()["resumable"],
                "resume": self.resume[st.save.name].to_dict(),
                "bytes": st.save.size, "eval_loss": _json_num(self.eval_loss(st)),
                "train_loss": _json_num(self.train_loss(st)),
                "adapter_delta": None if d is None else {
                    "relative": _json_num(d.relative), "max_abs": _json_num(d.max_abs),
                    "tensors_compared": d.compared, "tensors_total": d.total},
            })
        return {"run": str(self.layout.root), "llava": self.layout.llava, "lora": self.layout.lora,
                "record": self.record.path if self.record else None, "deep": self.deep,
                "saves": rows, "recommendation": self.recommendation.to_dict()}


def _json_num(v: float | None) -> float | str | None:
    return v if v is None or math.isfinite(v) else str(v)


def analyze_run(path: str | Path, deep: bool = False) -> RunAnalysis:
    """Everything triage knows about the run at ``path``. Raises OSError if it cannot be listed."""
    layout = read_layout(path)
    states = [save_state(s, layout) for s in layout.saves]
    record, error = _best_record(layout)
    final = layout.final
    if final is not None and final.step is None and record is not None and record.finished:
        final.step = record.global_step  # written at the end of a finished run
    return RunAnalysis(layout, states, record, error, deep)


def _best_record(layout: RunLayout) -> tuple[Record | None, tuple[str, str] | None]:
    """The most advanced trainer_state.json: the top-level one (``save_state`` at the end) or the
    latest checkpoint's; earlier checkpoints are read only when those are missing or unreadable
    (each log_history repeats the earlier ones, so reading them all would parse the log N times)."""
    def order(p: Path) -> float:
        return float("inf") if p.parent == layout.root else float(checkpoint_step(p.parent.name) or 0)

    best: Record | None = None
    error: tuple[str, str] | None = None
    for path in sorted(layout.state_files, key=order, reverse=True):
        if best is not None and best.global_step >= order(path):
            break  # nothing earlier can be more advanced
        try:
            rec = load_record(path)
        except RecordError as e:
            error = error or (str(path), str(e))
            continue
        if best is None or rec.global_step > best.global_step:
            best = rec
    return best, error


def save_state(save: Save, layout: RunLayout) -> SaveState:
    if save.adapter_config or save.adapter_weights:
        st = SaveState(save, "adapter")
        if not save.adapter_config:
            st.missing.append("adapter_config.json")
        weights = save.adapter_weights
        if weights is None:
            st.missing.append("adapter_model.safetensors")
        else:
            header = _inspect_weights(st, weights)
            if header is not None:
                st.lora = lora_only(header.tensors)
        if layout.llava and save.adapter_config and "non_lora_trainables.bin" not in save.names:
            extras = [n for n in ("config.json", "non_lora_trainables.bin") if n not in save.names]
            st.extras_only = not st.missing
            st.missing += extras
    elif save.model_weights:
        st = SaveState(save, "model")
        if "config.json" not in save.names:
            st.missing.append("config.json")
        for w in save.model_weights:
            _inspect_weights(st, w)
    elif save.projector:
        st = SaveState(save, "projector")
    elif save.deepspeed_tags:
        st = SaveState(save, "deepspeed")
    elif save.fsdp_dirs:
        st = SaveState(save, "fsdp")
    else:
        st = SaveState(save, "empty")
    return st


def _inspect_weights(st: SaveState, path: Path) -> SafetensorsHeader | None:
    """Header-level state of one weights file; the header when it is a readable safetensors file."""
    if path.suffix == ".safetensors":
        header = read_header(path)
        if header.problems:
            st.unreadable = f"{path.name}: {header.problems[0].message}"
            return None
        if not header.tensors:
            st.no_tensors = True
        st.empty_tensors += [n for n, t in header.tensors.items() if t.numel == 0]
        st.unfolded += [n for n in header.tensors if ".base_layer." in n][:3]
        return header
    names = pickle_tensor_shapes(path)
    if names is not None:
        st.no_tensors = not names
        st.empty_tensors += [n for n, shape in names.items() if 0 in shape]
        st.unfolded += [n for n in names if ".base_layer." in n][:3]
        return None
    summary = torch_zip_summary(path)
    if summary is not None and summary.data_bytes == 0:
        st.no_tensors = True  # no storage holds a byte: an empty dict or only [0]-shaped tensors
    return None



def recommend(a: RunAnalysis) -> Recommendation:
    """Keep for inference the save with the lowest eval loss (when evaluated at save steps), else
    the trainer's best_model_checkpoint, else the last complete save before the loss broke; keep
    for resuming the newest save the Trainer resumes intact; the other ``checkpoint-N`` folders can
    go. Never offered for deletion: the run folder's own final output, the newest resumable save,
    the newest checkpoint of an unfinished run while it is usable."""
    a.check_weights()
    rec = a.record
    bad = first_bad_step(rec) if rec else None
    usable = [st for st in a.states if st.complete or st.extras_only]
    healthy = [st for st in usable if bad is None or _order(st) < bad]
    reasons: list[str] = []
    notes: list[str] = []
    keep: SaveState | None = None
    evaluated = [(a.eval_loss(st), st) for st in healthy]
    evaluated = [(v, st) for v, st in evaluated if v is not None and math.isfinite(v)]
    if evaluated:
        # ties: the later save, and the final output over the checkpoint of the same step
        value, keep = min(evaluated, key=lambda x: (x[0], -_order(x[1]), not x[1].save.is_final))
        reasons.append(f"lowest eval loss ({value:.4g} at step {keep.save.step}) of {len(evaluated)} evaluated saves")
    elif rec and rec.best_model_checkpoint:
        name = Path(rec.best_model_checkpoint).name
        keep = next((st for st in healthy if st.save.name == name), None)
        if keep:
            reasons.append(f"trainer_state.json names it best_model_checkpoint (best metric {rec.best_metric})")
    if keep is None and healthy:
        complete = [st for st in healthy if st.complete]
        keep = max(complete or healthy, key=lambda st: (_order(st), st.save.is_final))
        reasons.append("the last complete save" if keep.complete else "the last save (complete it first: see RUN201)")
    if keep is not None and bad is not None:
        reasons.append(f"saves from step {bad} on come after the loss became NaN/Inf or 0.0")
    if keep is not None and not keep.complete and keep.extras_only:
        notes.append(f"{keep.save.label} lacks {', '.join(keep.missing)}: copy them in before loading (RUN201)")
    resume_from, resume_notes = _resume_advice(a, keep, bad)
    notes += resume_notes
    if keep is None:
        if usable and bad is not None:
            reasons.append(f"every save comes after the loss became NaN/Inf or 0.0 (from step {bad}): none is worth "
                           "keeping; fix the cause (RUN101/RUN102) and train again")
        else:
            shards = sorted({st.kind for st in a.states if st.status == f"{st.kind} shards only"})
            how = {"fsdp": "`accelerate merge-weights DIR/pytorch_model_fsdp_0 OUT` (FSDP)",
                   "deepspeed": "`python zero_to_fp32.py DIR OUT` (DeepSpeed)"}
            reasons.append("no save is complete (see RUN201/RUN203/RUN204 for what each lacks)" + (
                f"; saves with only {' / '.join(shards)} shards load after "
                + " or ".join(how[k] for k in shards) if shards else ""))
        return Recommendation(None, reasons, [], notes, resume_from=resume_from.save.name if resume_from else None)
    protected = {keep.save.name}
    if resume_from is not None:
        protected.add(resume_from.save.name)
    newest_resumable = max((st for st in a.states if a.resume[st.save.name].resumable), key=_order, default=None)
    if newest_resumable is not None:
        protected.add(newest_resumable.save.name)  # never offered for deletion, even after a NaN loss
    unfinished = rec is not None and rec.max_steps > 0 and not rec.finished
    newest = a.newest_checkpoint
    if unfinished and newest is not None and newest.usable and newest.save.name not in protected:
        protected.add(newest.save.name)
        notes.append(f"the run stopped at step {rec.global_step} of {rec.max_steps}: {newest.save.name} is kept "
                     "(the furthest the run got)")
    delete = [st for st in a.states if not st.save.is_final and st.save.name not in protected]
    return Recommendation(keep.save.name, reasons, [(st.save.name, st.save.size) for st in delete], notes,
                          keep_label=keep.save.label, resume_from=resume_from.save.name if resume_from else None)


def _resume_advice(a: RunAnalysis, keep: SaveState | None, bad: int | None) -> tuple[SaveState | None, list[str]]:
    """The save to resume training from, and what to say about it."""
    newest = a.newest_checkpoint
    if newest is None:
        return None, []
    resumable = [st for st in a.states if a.resume[st.save.name].resumable]
    healthy = [st for st in resumable if bad is None or _order(st) < bad]
    best = max(healthy or resumable, key=_order, default=None)
    r = a.resume[newest.save.name]

    def for_inference(resume: SaveState | None) -> str:
        return f"; for inference use {keep.save.label}" if keep is not None and keep is not resume else ""

    if best is not None and not healthy and bad is not None:
        newest_note = "" if r.resumable else f"{newest.save.name} (the newest save) {resume_problem(r)}; "
        return best, [f"{newest_note}every save that resumes comes after the loss became NaN/Inf or 0.0 (step {bad}): "
                      f"resuming from {best.save.name} continues the broken run; fix the cause first"
                      f"{for_inference(best)}"]
    if r.resumable:
        if best is newest:
            return newest, [f"resume training from {newest.save.name} (the newest save; it holds the optimizer, "
                            f"schedule and RNG state){for_inference(newest)}"]
        return best, [f"resume training from {best.save.name if best else 'none'} (saves from step {bad} on come "
                      f"after the loss broke; {newest.save.name} is kept too){for_inference(best)}"]
    what = resume_problem(r)
    if best is None:
        return None, [f"{newest.save.name} (the newest save) {what}, and no earlier save resumes intact"
                      f"{for_inference(None)}"]
    return best, [f"{newest.save.name} (the newest save) {what}: resume training from {best.save.name}, the newest "
                  f"save that resumes intact{for_inference(best)}"]


def resume_problem(r: Resume) -> str:
    """What goes wrong when resuming, in a few words."""
    if r.raises:
        return f"cannot be resumed (resume raises: {r.raises[0][0]} {r.raises[0][1].split(':')[0]})"
    if r.dropped and r.dropped.count:
        return (f"cannot be resumed (the Trainer's load_state_dict drops {r.dropped.count} of {r.dropped.total} "
                "weights, left at the base model)")
    return "resumes without its " + " and ".join(s for s, _ in r.lost)


def _order(st: SaveState) -> float:
    """A save's place in the run: its step; the final output without a known step comes last."""
    if st.save.step is not None:
        return st.save.step
    return math.inf if st.save.is_final else 0


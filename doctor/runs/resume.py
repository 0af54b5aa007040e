"""Can the Trainer resume from a save, and what does the resume restore?

Decided from what ``Trainer.train(resume_from_checkpoint=...)`` does, read in transformers 5.25
(the installed version; 4.x differences noted where they change the verdict):

- ``train()`` runs ``_load_from_checkpoint`` (no DeepSpeed/FSDP), then
  ``TrainerState.load_from_json(<ckpt>/trainer_state.json)`` unconditionally: a missing or broken
  trainer_state.json RAISES (also in 4.x since ``train()`` restores ``train_batch_size`` from it;
  releases before that restarted at step 0).
- ``_load_from_checkpoint`` raises ``ValueError("Can't find a valid checkpoint")`` without any of
  ``model.safetensors`` / ``pytorch_model.bin`` / their ``.index.json`` / ``adapter_model.*``
  (or adapter subfolders, or an FSDP ``pytorch_model_fsdp*``); a PEFT model calls
  ``load_adapter`` (raises without adapter_config.json, or on a 0-element ZeRO-3 tensor). Full
  weights go through ``model.load_state_dict(state_dict, False)``: names are NOT converted, so a
  file whose names the model does not have loads nothing, with a logged warning only
  (``weights_dropped`` below).
- ``_load_optimizer_and_scheduler`` loads BOTH only when an optimizer file (``optimizer.pt``,
  ``optimizer.bin`` or an ``optimizer*`` folder) AND ``scheduler.pt`` exist; if either is missing
  it loads neither and says nothing: Adam's moments and the learning-rate schedule restart (the
  warmup runs again). Under DeepSpeed the engine loads the optimizer from ``global_stepN/`` (the
  ``latest`` file names the tag; without it DeepSpeed returns None and transformers raises), and a
  transformers scheduler is read from ``scheduler.pt`` with no existence check (raises).
- ``_load_rng_state`` reads ``rng_state.pth`` (``rng_state_<rank>.pth`` on several processes)
  and only logs at INFO level when it is absent.
- ``_load_scaler`` loads ``scaler.pt`` if present, else the fp16 loss scale restarts silently
  (5.x writes it; 4.x Trainers did not, hence: expected only when an earlier save has it).

What "this run writes" comes from its other saves: the rank count of ``rng_state_N.pth``, a
``scaler.pt``, DeepSpeed ``global_stepN/`` with ``*optim_states.pt``. Names and headers only: no
torch except in ``weights_dropped``.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.runs.layout import Save, read_json

if TYPE_CHECKING:
    from doctor.runs.triage import RunAnalysis, SaveState

RNG_RE = re.compile(r"^rng_state(_\d+)?\.pth$")
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
FULL_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
OPTIMIZER_AND_SCHEDULE = "optimizer state and learning-rate schedule"
RNG = "RNG state"
SCALER = "fp16 loss scale (scaler.pt)"
SHORT = {OPTIMIZER_AND_SCHEDULE: "optimizer", RNG: "RNG", SCALER: "scaler"}


@dataclass
class Resume:
    """What ``trainer.train(resume_from_checkpoint=<save>)`` would do with one save."""

    engine: str  # trainer | deepspeed | fsdp: what the run was trained with, from its saves
    raises: list[tuple[str, str]] = field(default_factory=list)  # (file, why the resume raises)
    lost: list[tuple[str, str]] = field(default_factory=list)  # (state restarted silently, why)
    dropped: WeightsDropped | None = None  # full weights the resume's load_state_dict ignores
    applicable: bool = True  # False for the final output (save_model writes no training state)

    @property
    def resumable(self) -> bool:
        return self.applicable and not self.raises and not self.lost and not (self.dropped and self.dropped.count)

    @property
    def verdict(self) -> str:
        """One short phrase for the triage table."""
        if not self.applicable:
            return "-"
        if self.raises:
            return "no (raises)"
        if self.dropped and self.dropped.count:
            return "no (drops weights)"
        if self.lost:
            return "restarts " + ", ".join(SHORT.get(s, s) for s, _ in self.lost)
        return "yes"

    def to_dict(self) -> dict[str, Any]:
        return {"applicable": self.applicable, "resumable": self.resumable if self.applicable else None,
                "engine": self.engine, "verdict": self.verdict,
                "raises": [{"file": f, "why": w} for f, w in self.raises],
                "lost": [{"state": s, "why": w} for s, w in self.lost],
                "dropped_keys": None if self.dropped is None else self.dropped.count}


@dataclass
class WeightsDropped:
    """The resume's ``load_state_dict(state_dict, strict=False)`` against the model's own names."""

    count: int  # tensors in the file whose name the model does not have (silently ignored)
    total: int  # tensors in the file
    left_at_base: int  # model tensors no file tensor lands on
    examples: list[tuple[str, str]]  # (name in the file, the model's name from_pretrained gives it)
    model_class: str
    file: Path


def run_engine(saves: list[Save]) -> str:
    if any(s.deepspeed_tags or "latest" in s.names for s in saves if not s.is_final):
        return "deepspeed"
    if any(s.fsdp_dirs or any(n.startswith("pytorch_model_fsdp") for n in s.names) for s in saves if not s.is_final):
        return "fsdp"
    return "trainer"


def resume_states(a: RunAnalysis) -> dict[str, Resume]:
    """Each save's resume verdict, by save name (file level; ``weights_dropped`` adds the names)."""
    checkpoints = [st for st in a.states if not st.save.is_final]
    engine = run_engine([st.save for st in checkpoints])
    save_only_model = bool(a.training_args().get("save_only_model"))
    newest = max(checkpoints, key=lambda c: c.save.step or 0, default=None)
    out: dict[str, Resume] = {}
    for st in a.states:
        if st.save.is_final and not (_has_optimizer(st.save) or st.save.deepspeed_tags):
            # save_model writes weights only (save_state adds trainer_state.json): resume from checkpoint-N
            out[st.save.name] = Resume(engine, applicable=False)
            continue
        earlier = [c.save for c in checkpoints if c is not st and (c.save.step or 0) < (st.save.step or 0)]
        out[st.save.name] = judge(st, engine, earlier, save_only_model, parse_state=st is newest)
    return out


def judge(st: SaveState, engine: str, earlier: list[Save], save_only_model: bool = False,
          parse_state: bool = True) -> Resume:
    """The resume of one save, given the run's engine and the saves before it. ``parse_state``:
    parse trainer_state.json whole (else only its first and last bytes: a long run's log is
    megabytes per save, and a cut-short file is what goes wrong)."""
    save = st.save
    r = Resume(engine)
    _state_file(save, r, parse_state)
    if engine == "deepspeed":
        _deepspeed(save, earlier, r)
    else:
        _weights(st, engine, r)
        _optimizer_and_scheduler(save, engine, r, save_only_model)
    _rng(save, earlier, r, save_only_model)
    if "scaler.pt" in save.names:
        _loads(save, "scaler.pt", r)
    elif any("scaler.pt" in s.names for s in earlier):
        r.lost.append((SCALER, "earlier saves of this run have scaler.pt (fp16 training) and this one does not: "
                               "_load_scaler skips it and the loss scale restarts at 65536, skipping steps on "
                               "overflow until it settles"))
    return r


def _state_file(save: Save, r: Resume, parse: bool) -> None:
    path = save.path / "trainer_state.json"
    if "trainer_state.json" not in save.names:
        r.raises.append(("trainer_state.json", "absent: train() reads it unconditionally (FileNotFoundError)"))
    elif not (isinstance(read_json(path, limit=256 << 20), dict) if parse else _braced(path)):
        r.raises.append(("trainer_state.json", "not a JSON object: TrainerState.load_from_json raises"))


def _braced(path: Path) -> bool:
    """Starts with '{' and ends with '}' (whitespace aside): what a cut-short file is not."""
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64))
            tail = f.read().rstrip()
    except OSError:
        return False
    return head[:1] == b"{" and tail[-1:] == b"}"


def _weights(st: SaveState, engine: str, r: Resume) -> None:
    save = st.save
    has_full = any(n in save.names for n in FULL_WEIGHTS)
    fsdp = bool(save.fsdp_dirs) or any(n.startswith("pytorch_model_fsdp") for n in save.names)
    if not (has_full or save.adapter_weights or fsdp):
        r.raises.append(("weights", "no model.safetensors, pytorch_model.bin, adapter_model.* or FSDP shards: "
                                    "_load_from_checkpoint raises \"Can't find a valid checkpoint\""))
        return
    if fsdp and engine != "fsdp":
        return  # not reached: an FSDP save makes the run's engine fsdp
    if not has_full and save.adapter_weights and not save.adapter_config:
        r.raises.append(("adapter_config.json", "absent: PeftModel.load_adapter reads it first and raises"))
    if st.unreadable:
        r.raises.append((st.unreadable.split(":")[0], "unreadable weights header: the load raises"))
    elif st.empty_tensors and not has_full:
        r.raises.append((st.empty_tensors[0], "0-element (ZeRO-3 partitioned) tensors: load_adapter raises a "
                                              "size mismatch"))
    elif st.no_tensors and not has_full:
        r.raises.append(("adapter weights", "no tensor data: load_adapter leaves the adapter untrained or raises"))
    for n in save.names:
        if n.endswith(".index.json") and n in FULL_WEIGHTS:
            index = read_json(save.path / n)
            shards = set(index.get("weight_map", {}).values()) if isinstance(index, dict) and \
                isinstance(index.get("weight_map"), dict) else set()
            missing = sorted(s for s in shards if isinstance(s, str) and s not in save.names)
            if missing:
                r.raises.append((missing[0], f"named by {n} and absent: load_sharded_checkpoint raises"))


def _optimizer_and_scheduler(save: Save, engine: str, r: Resume, save_only_model: bool) -> None:
    has_opt = _has_optimizer(save)
    has_sched = "scheduler.pt" in save.names
    if has_opt and has_sched:
        if engine == "trainer" and "optimizer.pt" not in save.names:
            r.raises.append(("optimizer.pt", "only optimizer.bin / an optimizer folder: outside FSDP the Trainer "
                                             "torch.loads optimizer.pt and raises"))
        for n in ("optimizer.pt", "scheduler.pt"):
            if n in save.names:
                _loads(save, n, r)
        return
    absent = " and ".join(n for n, ok in (("optimizer.pt", has_opt), ("scheduler.pt", has_sched)) if not ok)
    why = (f"{absent} absent: _load_optimizer_and_scheduler loads neither unless both exist, so Adam's moments "
           "start from zero and the learning-rate schedule (warmup included) starts over at step 0")
    if save_only_model:
        why += " (training_args: save_only_model=True, so no save of this run holds them)"
    r.lost.append((OPTIMIZER_AND_SCHEDULE, why))


def _deepspeed(save: Save, earlier: list[Save], r: Resume) -> None:
    latest = save.path / "latest"
    if "latest" not in save.names:
        r.raises.append(("latest", "absent: DeepSpeed's load_checkpoint finds no tag and returns None; the Trainer "
                                   "raises \"[deepspeed] failed to resume from checkpoint\""))
        return
    try:
        tag = latest.read_text(encoding="utf-8", errors="replace").strip()[:200]
    except OSError as e:
        r.raises.append(("latest", f"unreadable: {e.strerror or e}"))
        return
    if tag not in save.deepspeed_tags:
        r.raises.append((f"{tag}/", f"'latest' names {tag!r}, which is not a folder here: DeepSpeed raises"))
        return
    files = _names(save.path / tag)
    if not any(n.endswith("model_states.pt") for n in files):
        r.raises.append((f"{tag}/*model_states.pt", "absent: DeepSpeed's load_checkpoint raises"))
    wrote_optim = any(any(n.endswith("optim_states.pt") for n in _names(s.path / t))
                      for s in earlier for t in s.deepspeed_tags[-1:])
    if not any(n.endswith("optim_states.pt") for n in files) and (wrote_optim or not earlier):
        r.raises.append((f"{tag}/*optim_states.pt", "absent: the Trainer loads with load_optimizer_states=True and "
                                                   "DeepSpeed raises"))
    if "scheduler.pt" not in save.names and any("scheduler.pt" in s.names for s in earlier):
        r.raises.append(("scheduler.pt", "absent while earlier saves have it (a transformers scheduler under "
                                         "DeepSpeed): _load_optimizer_and_scheduler torch.loads it unconditionally"))


def _rng(save: Save, earlier: list[Save], r: Resume, save_only_model: bool) -> None:
    have = {n for n in save.names if RNG_RE.match(n)}
    wrote = next(({n for n in s.names if RNG_RE.match(n)} for s in reversed(earlier)
                  if any(RNG_RE.match(n) for n in s.names)), set())
    for n in sorted(have):
        _loads(save, n, r)
    missing = sorted(wrote - have)
    if missing or not have:
        what = ", ".join(missing) if missing else "rng_state.pth"
        why = (f"{what} absent: _load_rng_state only logs at INFO level, so dropout and sampling randomness "
               "do not continue where the run left off")
        if save_only_model and not wrote:
            why += " (training_args: save_only_model=True)"
        r.lost.append((RNG, why))


def _loads(save: Save, name: str, r: Resume) -> None:
    """torch.load needs a zip archive (torch >= 1.6) or a legacy pickle; anything else raises."""
    path = save.path / name
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        ok = head[:1] == b"\x80" or (zipfile.is_zipfile(path) and _zip_lists(path))
    except OSError:
        ok = False
    if not ok:
        r.raises.append((name, "not a readable torch file (empty or truncated): torch.load raises"))


def _zip_lists(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _has_optimizer(save: Save) -> bool:
    if any(n in save.names for n in OPTIMIZER_FILES):
        return True
    return any("optimizer" in n and (save.path / n).is_dir() for n in save.names)


def _names(folder: Path) -> set[str]:
    try:
        return {p.name for p in folder.iterdir()}
    except OSError:
        return set()


def weights_dropped(save: Save, cache: dict[Any, Any] | None = None) -> WeightsDropped | None:
    """Full weights the resume's ``load_state_dict(strict=False)`` would ignore: the file's names
    compared with the model class of config.json built on the meta device (CKP's prediction API).
    None when not applicable or transformers cannot build the model (the CKP checks say why)."""
    if "config.json" not in save.names or not any(n in save.names for n in FULL_WEIGHTS):
        return None
    try:
        from doctor.checks.checkpoint.expected import BuildError, predict_load
        from doctor.checks.checkpoint.fixtures import read_model_weights
    except ImportError:
        return None
    try:
        weights = read_model_weights(save.path)
        names = list(weights.tensors)
        if not names:
            return None
        # the saves of one run share config and names: build the meta model once
        key = ((save.path / "config.json").read_bytes(), tuple(sorted(names)))
        pred = cache.get(key) if cache is not None else None
        if pred is None:
            pred = predict_load(save.path, weights)
            if cache is not None:
                cache[key] = pred
    except (BuildError, OSError, ValueError):
        return None
    except Exception:  # noqa: BLE001 - a failure to predict is the CKP checks' finding, never a traceback here
        return None
    expected = pred.expected
    dropped = [n for n in names if n not in expected]
    # only names from_pretrained maps onto the model: the rest are the CKP checks' "unexpected" keys
    mapped_elsewhere = [n for n in dropped if n in pred.mapped]
    landed = {n for n in names if n in expected}
    missing = set(expected) - landed
    for target, source in pred.tied.items():
        if target in missing and source not in missing:
            missing.discard(target)
    left = len([k for k in missing if k in set(pred.mapped.values())])
    weight_file = next((save.path / n for n in FULL_WEIGHTS if n in save.names), save.path)
    return WeightsDropped(len(mapped_elsewhere), len(names), left,
                          [(n, pred.mapped[n]) for n in sorted(mapped_elsewhere)[:3]], pred.model_class, weight_file)

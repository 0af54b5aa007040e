"""Every pickle a training run writes is scanned, whatever the layout, and the clean real ones pass.

One test per source, each building a file shaped like the real one with ``torch.save`` of the
same structures the writer pickles (read in its code; the real classes where installed: torch,
numpy, transformers; DeepSpeed and mmengine classes as stand-ins with their real module and
class names when those libraries are not installed):

- transformers Trainer ``checkpoint-N/``: ``_save_optimizer_and_scheduler`` (``optimizer.pt``,
  ``scheduler.pt``, ``scaler.pt``), ``_save_rng_state`` (``rng_state.pth``: python, numpy, cpu
  states), ``training_args.bin``;
- DeepSpeed ``global_stepN/``: ``DeepSpeedEngine._save_checkpoint`` (``mp_rank_00_model_states.pt``)
  and ``_save_zero_checkpoint`` with the ZeRO-1/2 and ZeRO-3 optimizers' ``state_dict()``
  (``*_optim_states.pt``: loss scaler object, ``ZeroStageEnum``, ``fragment_address`` mappings);
- mmengine / XTuner: ``Runner.save_checkpoint`` (``iter_N.pth`` file: meta, state_dict,
  message_hub with ``HistoryBuffer`` of numpy arrays, optimizer, param_schedulers) and
  ``DeepSpeedStrategy.save_checkpoint`` (an ``iter_N.pth/`` FOLDER of DeepSpeed files whose
  client_state carries the same entries), inside a ``work_dirs/<config>/`` tree.

Each clean case exits 0; its twin (a payload, or an extra that is only vetted for another file)
is SEC001 and exits 1, with the finding on the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib
import json
import os
import random
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from doctor.artifacts import discover  # noqa: E402
from doctor.cli import main  # noqa: E402


# ---- stand-ins with the real names, used only when the library is not installed ---------------
@contextlib.contextmanager
def importable(module: str, **classes: type) -> Iterator[None]:
    """Make ``module.Name`` resolvable for pickle while saving (parents included), then remove it."""
    added = []
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    for attr, cls in classes.items():
        cls.__module__, cls.__qualname__ = module, attr
        setattr(sys.modules[module], attr, cls)
    try:
        yield
    finally:
        for name in reversed(added):
            del sys.modules[name]


def _real(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001 - not installed (or not importable here): use the stand-in
        return None


class _ZeroStageEnum(int, enum.Enum):  # deepspeed/runtime/zero/config.py
    disabled = 0
    optimizer_states = 1
    gradients = 2
    weights = 3


class _LossScaler:  # deepspeed/runtime/fp16/loss_scaler.py (LossScalerBase fields)
    def __init__(self, scale: float = 1.0) -> None:
        self.cur_scale = scale
        self.dynamic = False


class _DynamicLossScaler(_LossScaler):
    def __init__(self, init_scale: float = 2.0 ** 16, scale_window: int = 1000) -> None:
        super().__init__(init_scale)
        self.cur_iter, self.last_overflow_iter, self.scale_factor = 0, -1, 2.0
        self.scale_window, self.min_scale, self.delayed_shift = scale_window, 1.0, 2
        self.cur_hysteresis, self.consecutive_hysteresis = 2, False
        self.raise_error_at_min_scale, self.dynamic, self.dtype = True, True, torch.float16


@dataclasses.dataclass
class _FragmentAddress:  # deepspeed/utils/tensor_fragment.py
    numel: int
    start: int


class _HistoryBuffer:  # mmengine/logging/history_buffer.py: instance state of __init__ / update
    def __init__(self, log_history: list[float], count_history: list[int], max_length: int = 1000000) -> None:
        self.max_length = max_length
        self._log_history = np.array(log_history)
        self._count_history = np.array(count_history)


@contextlib.contextmanager
def deepspeed_classes() -> Iterator[dict[str, Any]]:
    real = {n: _real(m, n) for m, n in (("deepspeed.runtime.zero.config", "ZeroStageEnum"),
                                         ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
                                         ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
                                         ("deepspeed.utils.tensor_fragment", "fragment_address"))}
    if all(real.values()):
        yield {"ZeroStageEnum": real["ZeroStageEnum"], "LossScaler": lambda: real["LossScaler"](scale=1),
               "DynamicLossScaler": lambda: real["DynamicLossScaler"](init_scale=2 ** 16, scale_factor=2.0,
                                                                        scale_window=1000, min_scale=1,
                                                                        delayed_shift=2, consecutive_hysteresis=False),
               "fragment_address": real["fragment_address"]}
        return
    with importable("deepspeed.runtime.zero.config", ZeroStageEnum=_ZeroStageEnum), \
            importable("deepspeed.runtime.fp16.loss_scaler", LossScaler=_LossScaler,
                       DynamicLossScaler=_DynamicLossScaler), \
            importable("deepspeed.utils.tensor_fragment", fragment_address=_FragmentAddress):
        yield {"ZeroStageEnum": _ZeroStageEnum, "LossScaler": _LossScaler, "DynamicLossScaler": _DynamicLossScaler,
               "fragment_address": _FragmentAddress}


@contextlib.contextmanager
def mmengine_classes() -> Iterator[type]:
    real = _real("mmengine.logging.history_buffer", "HistoryBuffer")
    if real is not None:
        yield real
        return
    with importable("mmengine.logging.history_buffer", HistoryBuffer=_HistoryBuffer):
        yield _HistoryBuffer


class Payload:
    """What a hostile file carries: a call of os.system (written, never loaded)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


# ---- the writers' structures -----------------------------------------------------------------
def _model_and_optimizer() -> tuple[Any, Any]:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return model, opt


def _hf_scheduler(opt: Any) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=10)


def trainer_checkpoint(folder: Path) -> Path:
    """transformers Trainer: _save_optimizer_and_scheduler, _save_rng_state, training_args.bin."""
    transformers = pytest.importorskip("transformers")
    folder.mkdir(parents=True)
    _, opt = _model_and_optimizer()
    sched = _hf_scheduler(opt)
    torch.save(opt.state_dict(), folder / "optimizer.pt")
    torch.save(sched.state_dict(), folder / "scheduler.pt")
    torch.save(torch.amp.GradScaler("cpu", enabled=True).state_dict(), folder / "scaler.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()},
               folder / "rng_state.pth")
    torch.save(transformers.TrainingArguments(output_dir=str(folder), report_to=[]), folder / "training_args.bin")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 10, "log_history": []}))
    return folder


def _ds_model_states(model: Any, sched: Any, client_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """DeepSpeedEngine._common_checkpoint_state with a ZeRO optimizer, plus the client state."""
    shapes = OrderedDict((n, p.shape) for n, p in model.named_parameters())
    state = dict(module=model.state_dict(), buffer_names=[], optimizer=None, param_shapes=[shapes],
                 frozen_param_shapes=None, shared_params={}, frozen_param_fragments=None,
                 lr_scheduler=sched.state_dict(), data_sampler=None, random_ltd=None,
                 sparse_tensor_module_names=set(), skipped_steps=0, global_steps=10, global_samples=80,
                 dp_world_size=1, mp_world_size=1, ds_config={"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}},
                 ds_version="0.16.4")
    state.update(client_state or {})
    return state


def _ds_zero2_optim(opt: Any, model: Any, ds: dict[str, Any]) -> dict[str, Any]:
    """DeepSpeedZeroOptimizer.state_dict() inside _save_zero_checkpoint's dict."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    mapping, start = OrderedDict(), 0
    for n, p in model.named_parameters():
        mapping[n] = ds["fragment_address"](numel=p.numel(), start=start)
        start += p.numel()
    sd = {"loss_scaler": ds["LossScaler"](), "dynamic_loss_scale": False, "overflow": False, "clip_grad": 1.0,
          "base_optimizer_state": opt.state_dict(), "single_partition_of_fp32_groups": [flat],
          "zero_stage": ds["ZeroStageEnum"].gradients, "group_paddings": [0], "partition_count": [1],
          "ds_version": "0.16.4", "param_slice_mappings": [mapping]}
    return dict(optimizer_state_dict=sd, ds_config={"zero_optimization": {"stage": 2}}, ds_version="0.16.4")


def _ds_zero3_optim(opt: Any, model: Any, ds: dict[str, Any]) -> dict[str, Any]:
    """DeepSpeedZeroOptimizer_Stage3._rigid_state_dict()."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    sd = {"zero_stage": ds["ZeroStageEnum"].weights, "loss_scaler": ds["DynamicLossScaler"](),
          "dynamic_loss_scale": True, "overflow": False, "partition_count": 1,
          "optimizer_state_dict": opt.state_dict(), "fp32_flat_groups": [flat]}
    return dict(optimizer_state_dict=sd, ds_config={"zero_optimization": {"stage": 3}}, ds_version="0.16.4")


def deepspeed_save(folder: Path, stage: int = 2, client_state: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None) -> Path:
    """A DeepSpeed tag folder as save_checkpoint writes it (global_stepN/, or mmengine's iter_N.pth/)."""
    folder.mkdir(parents=True)
    model, opt = _model_and_optimizer()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    with deepspeed_classes() as ds:
        states = _ds_model_states(model, sched, client_state)
        states.update(extra or {})
        torch.save(states, folder / "mp_rank_00_model_states.pt")
        optim = _ds_zero2_optim(opt, model, ds) if stage == 2 else _ds_zero3_optim(opt, model, ds)
        prefix = "bf16_zero_pp_rank_0" if stage == 2 else "zero_pp_rank_0"
        torch.save(optim, folder / f"{prefix}_mp_rank_00_optim_states.pt")
    return folder


def _message_hub(history: type) -> dict[str, Any]:
    """MessageHub.state_dict(): resumed log scalars (HistoryBuffer) and runtime info."""
    scalars = OrderedDict([("train/lr", history([1e-4, 2e-4], [1, 1])), ("train/loss", history([2.5, 2.1], [1, 1]))])
    info = OrderedDict([("cfg", "model = dict(type='LLaVAModel')\n"), ("seed", 42), ("experiment_name", "llava_x"),
                        ("mmengine_version", "0.10.4"), ("loop_stage", "train"), ("epoch", 0), ("iter", 500),
                        ("max_epochs", 1), ("max_iters", 5000), ("val/accuracy", np.float64(0.5))])
    return {"log_scalars": scalars, "runtime_info": info, "resumed_keys": {k: True for k in [*scalars, *info]}}


def _mm_meta() -> dict[str, Any]:
    return {"epoch": 0, "iter": 500, "cfg": "model = dict(type='LLaVAModel')\n", "seed": 42,
            "experiment_name": "llava_x", "time": "20240101_000000", "mmengine_version": "0.10.4"}


def _param_schedulers() -> list[dict[str, Any]]:
    """mmengine _ParamScheduler.state_dict(): its __dict__ without the optimizer."""
    return [{"param_name": "lr", "begin": 0, "end": 500, "global_iter": None, "by_epoch": False,
             "base_values": [1e-3], "last_step": 500, "_global_step": 500, "verbose": False,
             "_last_value": [1e-3], "start_factor": 1e-5, "end_factor": 1.0, "total_iters": 500}]


def mmengine_checkpoint(path: Path) -> Path:
    """mmengine Runner.save_checkpoint: the iter_N.pth FILE (no DeepSpeed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model, opt = _model_and_optimizer()
    with mmengine_classes() as history:
        torch.save({"meta": _mm_meta(), "state_dict": OrderedDict(model.state_dict()), "message_hub": _message_hub(history),
                    "optimizer": opt.state_dict(), "param_schedulers": _param_schedulers()}, path)
    return path


def xtuner_work_dirs(root: Path, extra: dict[str, Any] | None = None) -> Path:
    """XTuner with DeepSpeed: work_dirs/<config>/iter_500.pth/ (DeepSpeedStrategy.save_checkpoint
    calls engine.save_checkpoint(dirname, tag=basename, client_state=extra_ckpt))."""
    cfg = root / "work_dirs" / "llava_internlm2_chat_7b_qlora"
    with mmengine_classes() as history:
        client = {"meta": {**_mm_meta(), "mmengine": "0.10.4"}, "message_hub": _message_hub(history),
                  "param_schedulers": _param_schedulers(), "optim_wrapper": {}}
        deepspeed_save(cfg / "iter_500.pth", client_state=client, extra=extra)
    (cfg / "last_checkpoint").write_text(str(cfg / "iter_500.pth"))
    (cfg / "llava_internlm2_chat_7b_qlora.py").write_text("model = dict(type='LLaVAModel')\n")
    (cfg / "zero_to_fp32.py").write_text("# DeepSpeed's recovery script\n")
    vis = cfg / "20240101_000000" / "vis_data"
    vis.mkdir(parents=True)
    (vis / "scalars.json").write_text('{"lr": 0.0001, "loss": 2.5, "iter": 10}\n')
    (cfg / "20240101_000000" / "20240101_000000.log").write_text("loss: 2.5\n")
    return root / "work_dirs"


# ---- running it ------------------------------------------------------------------------------
def check(path: Path, tmp_path: Path) -> tuple[int, list[dict[str, Any]]]:
    out = tmp_path / f"report-{abs(hash(str(path)))}.json"
    rc = main(["check", str(path), "--no-progress", "--ignore", "ENV", "--output-format", "json", "-o", str(out)])
    return rc, json.loads(out.read_text())["findings"]


def errors(findings: list[dict[str, Any]]) -> list[str]:
    return [f"{f['code']} {f['path']}: {f['message']}" for f in findings if f["severity"] == "error"]


def test_trainer_checkpoint_is_clean(tmp_path: Path) -> None:
    folder = trainer_checkpoint(tmp_path / "checkpoint-10")
    rc, findings = check(folder, tmp_path)
    assert rc == 0 and errors(findings) == []
    scanned = {Path(a.path).name for a in discover([str(folder)])}
    assert {"optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "training_args.bin"} <= scanned


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth"])
def test_trainer_payload_in_any_state_file_is_sec001(tmp_path: Path, name: str) -> None:
    folder = trainer_checkpoint(tmp_path / "checkpoint-10")
    state = {"state": {}, "param_groups": [], "x": Payload()}
    torch.save(state, folder / name)
    rc, findings = check(folder, tmp_path)
    (bad,) = [f for f in findings if f["severity"] == "error"]
    assert rc == 1 and bad["code"] == "SEC001"
    assert bad["path"].endswith(name) and ".system" in bad["message"]


def test_numpy_is_vetted_for_rng_state_only(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    torch.save({"numpy": np.random.get_state()}, folder / "optimizer.pt")  # rng_state's extras, wrong file
    rc, findings = check(folder, tmp_path)
    assert rc == 1 and {f["code"] for f in findings} == {"SEC001"}
    assert all(f["path"].endswith("optimizer.pt") for f in findings)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_global_step_folder_is_clean(tmp_path: Path, stage: int) -> None:
    folder = deepspeed_save(tmp_path / "global_step10", stage=stage)
    names = {Path(a.path).name for a in discover([str(folder)])}
    assert names == {"mp_rank_00_model_states.pt",
                     ("bf16_zero_pp_rank_0" if stage == 2 else "zero_pp_rank_0") + "_mp_rank_00_optim_states.pt"}
    rc, findings = check(folder, tmp_path)
    assert rc == 0 and errors(findings) == []


def test_deepspeed_payload_is_sec001(tmp_path: Path) -> None:
    folder = deepspeed_save(tmp_path / "global_step10", extra={"client": Payload()})
    rc, findings = check(folder, tmp_path)
    assert rc == 1 and {f["code"] for f in findings if f["severity"] == "error"} == {"SEC001"}
    assert all(f["path"].endswith("mp_rank_00_model_states.pt") for f in findings)


def test_deepspeed_classes_are_vetted_for_deepspeed_files_only(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    with deepspeed_classes() as ds:
        torch.save({"loss_scaler": ds["LossScaler"](), "stage": ds["ZeroStageEnum"].gradients}, folder / "optimizer.pt")
    rc, findings = check(folder, tmp_path)
    assert rc == 1 and {f["code"] for f in findings} == {"SEC001"}
    assert {f["message"].split(" imports ")[1].split(" ")[0] for f in findings} == {
        "deepspeed.runtime.fp16.loss_scaler.LossScaler", "deepspeed.runtime.zero.config.ZeroStageEnum"}


def test_deepspeed_run_folder_scans_every_state(tmp_path: Path) -> None:
    run = tmp_path / "run"
    deepspeed_save(run / "checkpoint-10" / "global_step10")
    trainer_checkpoint(run / "checkpoint-20")
    bad = deepspeed_save(run / "checkpoint-20" / "global_step20")
    torch.save({"x": Payload()}, bad / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    rc, findings = check(run, tmp_path)
    assert rc == 1
    assert [f["path"] for f in findings if f["code"] == "SEC001"] == [str(bad / "zero_pp_rank_1_mp_rank_00_optim_states.pt")]


def test_mmengine_checkpoint_file_is_clean(tmp_path: Path) -> None:
    path = mmengine_checkpoint(tmp_path / "work_dirs" / "cfg" / "iter_500.pth")
    rc, findings = check(path, tmp_path)
    assert rc == 0 and errors(findings) == []


def test_history_buffer_is_vetted_for_mmengine_files_only(tmp_path: Path) -> None:
    with mmengine_classes() as history:
        torch.save({"hub": history([1.0], [1])}, tmp_path / "adapter_weights.pt")
    rc, findings = check(tmp_path / "adapter_weights.pt", tmp_path)
    assert rc == 1 and "mmengine.logging.history_buffer.HistoryBuffer" in " ".join(errors(findings))


def test_xtuner_work_dirs_with_deepspeed_iter_folder_is_clean(tmp_path: Path) -> None:
    work_dirs = xtuner_work_dirs(tmp_path)
    arts = discover([str(work_dirs)])
    assert {Path(a.path).parent.name for a in arts} == {"iter_500.pth"} and {a.kind for a in arts} == {"pickle"}
    rc, findings = check(work_dirs, tmp_path)
    assert rc == 0 and errors(findings) == []


def test_xtuner_work_dirs_with_a_payload_exits_1_naming_the_file(tmp_path: Path) -> None:
    work_dirs = xtuner_work_dirs(tmp_path, extra={"hook_state": Payload()})
    rc, findings = check(work_dirs, tmp_path)
    assert rc == 1
    (bad,) = [f for f in findings if f["code"] == "SEC001"]
    assert bad["path"].endswith("iter_500.pth/mp_rank_00_model_states.pt")


def test_optimizer_state_is_not_offered_as_weights(tmp_path: Path) -> None:
    folder = trainer_checkpoint(tmp_path / "checkpoint-10")
    _, findings = check(folder / "optimizer.pt", tmp_path)
    assert "SEC009" not in {f["code"] for f in findings}
    model, _ = _model_and_optimizer()
    torch.save(model.state_dict(), tmp_path / "weights.pt")  # a real state dict still is
    _, findings = check(tmp_path / "weights.pt", tmp_path)
    assert "SEC009" in {f["code"] for f in findings}

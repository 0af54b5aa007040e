"""``DoctorCallback``: vlm-doctor inside a transformers ``Trainer``.

    from doctor.integrations import DoctorCallback
    trainer = Trainer(..., callbacks=[DoctorCallback(dataset="data/llava_mix.json", image_folder="data/images")])

- on train begin it checks the dataset(s), the base model folder, the adapter (the live
  ``peft_config``, written to a temporary folder, and any adapter folder given) and an output_dir
  that already holds checkpoints, and stops the run when a finding reaches ``fail_on``: it raises
  ``doctor.report.ChecksFailed`` (``raise_on_error=True``, the default: nothing runs), or sets
  ``control.should_training_stop`` (transformers reads that flag after a step, so one step runs);
- on each save it checks the run folder and the new checkpoint (header-only checks) in a
  background thread that waits on a low-priority subprocess, so a training step never waits and
  never competes for the GIL, and logs new findings through the transformers logger.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from doctor.findings import Finding, Severity
from doctor.report import ChecksFailed, Report

logger = hf_logging.get_logger("transformers.vlm_doctor")

# Codes that mean nothing for configs written from memory: the folders hold no weights on purpose
# (ADP014 adapter weights, CKP101 model weights), an in-memory base has no folder to resolve
# (ADP012), and without a tokenizer object there are no tokenizer/processor files (CKP4xx).
_LIVE_ABSENT = frozenset({"ADP014", "ADP012", "CKP101"})


def _absent_on_purpose(f: Finding, tmp: Path, wrote_processor: bool) -> bool:
    if not f.path.startswith(str(tmp)):
        return False
    return f.code in _LIVE_ABSENT or (f.code.startswith("CKP4") and not wrote_processor)


class TrainingBlocked(ChecksFailed):
    """Raised by ``DoctorCallback`` on train begin when a finding reaches ``fail_on``."""

    def __init__(self, report: Report, blocking: list[Finding], fail_on: Severity) -> None:
        super().__init__(report)
        lines = [f"{f.path}: {f.severity.value} {f.code} {f.message}" for f in blocking[:20]]
        more = f"\n... and {len(blocking) - 20} more" if len(blocking) > 20 else ""
        self.args = (f"vlm-doctor stopped training before the first step: {len(blocking)} finding(s) at or above "
                     f"{fail_on.value}:\n" + "\n".join(lines) + more
                     + "\n(`vlm-doctor rule CODE` explains a code; DoctorCallback(ignore=[...]) skips one)",)
        self.blocking = blocking


class DoctorCallback(TrainerCallback):
    """Pre-training checks and per-save checkpoint checks for a transformers ``Trainer``."""

    def __init__(
        self,
        dataset: str | Sequence[str] | None = None,
        model: str | None = None,
        adapter: str | Sequence[str] | None = None,
        *,
        image_folder: str | None = None,
        tokenizer: str | None = None,
        fail_on: str | Severity = "error",
        raise_on_error: bool = True,
        check_saves: bool = True,
        select: Iterable[str] | None = None,
        ignore: Iterable[str] | None = None,
        isolate_saves: bool = True,
        wait_at_end: float = 120.0,
        **options: Any,
    ) -> None:
        self.datasets = _paths(dataset)
        self.model_path = model
        self.adapters = _paths(adapter)
        self.image_folder = image_folder
        self.tokenizer = tokenizer
        self.fail_on = Severity.parse(fail_on)
        self.raise_on_error = raise_on_error
        self.check_saves = check_saves
        self.select = list(select) if select else None
        self.ignore = list(ignore or [])
        self.isolate_saves = isolate_saves
        self.wait_at_end = wait_at_end
        self.options = options
        #: the report of the train-begin checks
        self.begin_report: Report | None = None
        #: findings logged after saves (dicts in the JSON contract's shape), in order
        self.save_findings: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._worker: threading.Thread | None = None
        self._pending: tuple[str, str] | None = None
        self._lock = threading.Lock()

    # ---- train begin -----------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        from doctor.runner import check

        model_path = self.model_path or _local_name_or_path(model)
        processing = kwargs.get("processing_class") or kwargs.get("tokenizer")
        tmp = Path(tempfile.mkdtemp(prefix="vlm-doctor-live-"))
        try:
            config_dirs = _write_peft_configs(model, tmp / "peft")
            if model_path is None and model is not None:
                config_dirs += _write_model_config(model, processing, tmp / "model")
            paths = [*self.datasets, *([model_path] if model_path else []), *self.adapters, *map(str, config_dirs)]
            if _has_checkpoints(args.output_dir):
                paths.append(str(args.output_dir))
            if not paths:
                logger.warning("vlm-doctor: nothing to check on train begin (pass dataset=, model= or adapter=)")
                return control
            report = check(paths, select=self.select, ignore=self.ignore, base=model_path,
                           image_folder=self.image_folder, tokenizer=self.tokenizer or model_path, **self.options)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        report.findings = [_relabel(f, tmp) for f in report.findings
                           if not _absent_on_purpose(f, tmp, processing is not None)]
        self.begin_report = report
        for f in report.sorted_findings():
            _log(f.to_dict())
        blocking = report.at_or_above(self.fail_on)
        if blocking:
            if self.raise_on_error:
                raise TrainingBlocked(report, blocking, self.fail_on)
            logger.error(f"vlm-doctor: {len(blocking)} finding(s) at or above {self.fail_on.value}: stopping the run")
            control.should_training_stop = True
        return control

    # ---- saves -----------------------------------------------------------------------------
    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if not self.check_saves or not state.is_world_process_zero:
            return control
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        with self._lock:
            self._pending = (str(args.output_dir), str(checkpoint))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._drain, name="vlm-doctor-save-check", daemon=True)
                self._worker.start()
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.wait(self.wait_at_end)
        return control

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the save check in flight (if any) to finish and log."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def _drain(self) -> None:
        from doctor.integrations.save_worker import check_save, check_save_isolated

        while True:
            with self._lock:
                job, self._pending = self._pending, None
                if job is None:
                    return
            run_dir, checkpoint = job
            try:
                if self.isolate_saves:
                    found = check_save_isolated(run_dir, checkpoint, self.model_path, self.select, self.ignore)
                else:
                    found = check_save(run_dir, checkpoint, self.model_path, self.select, self.ignore)
            except Exception as e:  # noqa: BLE001 - a failed check must never touch the training
                logger.warning(f"vlm-doctor: could not check {checkpoint}: {type(e).__name__}: {e}")
                continue
            for f in found:
                key = (f["code"], f["path"], f["message"])
                if key in self._seen:
                    continue
                self._seen.add(key)
                self.save_findings.append(f)
                _log(f)


def _paths(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


def _local_name_or_path(model: Any) -> str | None:
    """The model's folder when it was loaded from a local one (config._name_or_path)."""
    base = getattr(model, "get_base_model", None)
    inner = base() if callable(base) else model
    name = getattr(getattr(inner, "config", None), "_name_or_path", None) or getattr(inner, "name_or_path", None)
    return str(name) if name and Path(str(name)).is_dir() else None


def _write_peft_configs(model: Any, root: Path) -> list[Path]:
    """Each live PEFT config saved as adapter_config.json in its own folder under ``root``."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict):
        return []
    out = []
    for name, config in configs.items():
        folder = root / str(name)
        try:
            config.save_pretrained(str(folder))
        except Exception as e:  # noqa: BLE001 - an exotic config is skipped, not fatal
            logger.warning(f"vlm-doctor: could not write the PEFT config {name!r} to check it: {e}")
            continue
        out.append(folder)
    return out


def _relabel(f: Finding, tmp: Path) -> Finding:
    """Findings on the temp copies name what they are about: the live model or peft_config."""
    if not f.path.startswith(str(tmp)):
        return f
    parts = Path(f.path).relative_to(tmp).parts
    if parts[:1] == ("model",):
        where = "<in-memory model>"
        rest = parts[1:]
    elif parts[:1] == ("peft",) and len(parts) > 1:
        where = f"<in-memory peft_config[{parts[1]!r}]>"
        rest = parts[2:]
    else:
        return f
    return dataclasses.replace(f, path="/".join((where, *rest)))


def _write_model_config(model: Any, processing: Any, folder: Path) -> list[Path]:
    """The live model's config.json (and its tokenizer/processor files, when the Trainer has one),
    for a model built in memory: its vocab, image-token and vision settings get checked too."""
    base = getattr(model, "get_base_model", None)
    inner = base() if callable(base) else model
    config = getattr(inner, "config", None)
    if config is None or not hasattr(config, "save_pretrained"):
        return []
    try:
        config.save_pretrained(str(folder))
        if processing is not None and hasattr(processing, "save_pretrained"):
            processing.save_pretrained(str(folder))
    except Exception as e:  # noqa: BLE001 - never fail a training run on our own bookkeeping
        logger.warning(f"vlm-doctor: could not write the model config to check it: {e}")
        return []
    return [folder]


def _has_checkpoints(output_dir: str | None) -> bool:
    if not output_dir or not Path(output_dir).is_dir():
        return False
    return any(p.name.startswith("checkpoint-") for p in Path(output_dir).iterdir())


def _log(f: dict[str, Any]) -> None:
    where = f.get("path", "")
    text = f"vlm-doctor {f['code']} {f['name']}: {where}: {f['message']}"
    if f.get("hint"):
        text += f"\n  fix: {f['hint']}"
    level = f.get("severity")
    if level == "error":
        logger.error(text)
    elif level == "warning":
        logger.warning(text)
    else:
        logger.info(text)

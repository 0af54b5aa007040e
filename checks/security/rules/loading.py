"""SEC008-SEC009: how the pickles that passed the scan will be loaded, and the safetensors fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doctor.checks.security.rules.pickles import ARTIFACTS, LLAVA_PLAIN_LOAD

from doctor.artifacts import Artifact
from doctor.errors import Skip
from doctor.files import PICKLE_WEIGHTS_RE, is_training_state
from doctor.findings import Applicability, Fix, Severity
from doctor.registry import Check, register

__all__ = ["LlavaPlainTorchLoad", "PickleWeights", "convertible"]


@register
class LlavaPlainTorchLoad(Check):
    """The LLaVA codebase will unpickle a file that failed the scan, with a plain torch.load.

    ## What it does
    When the installed torch is older than 2.6, reports `non_lora_trainables.bin` and
    `mm_projector.bin` that FAILED the pickle scan (SEC001-SEC006): `llava/model/builder.py` loads
    them with `torch.load(path, map_location="cpu")`, without `weights_only`, which before torch 2.6
    means full unpickling, so what the scan found would run.

    One owner per cause: "torch < 2.6 with pickle weights" is ENV003's (one finding for the
    environment, naming the files); this check adds only what ENV003 cannot say, that LLaVA's
    loader would execute this particular file's refused content. A clean file gets no SEC008.

    ## Why is this bad?
    Any code in the pickle runs when you call `load_pretrained_model`; LLaVA pins torch 2.1.2.
    Even `weights_only=True` is exploitable before torch 2.6 (CVE-2025-32434).

    ## Example
    torch 2.1.2 installed; `llava-v1.5-7b-lora/non_lora_trainables.bin` imports `builtins.exec`.

    ## How to fix
    Do not load this folder with LLaVA's builder. Get the file from a trusted source or re-create it
    by re-running training; run LLaVA with torch >= 2.6 (its default `weights_only=True` then
    applies), or merge the adapter and keep the merged model as safetensors.
    """

    code = "SEC008"
    name = "llava-plain-torch-load"
    severity = Severity.ERROR
    artifacts = frozenset({"llava-lora", "llava-original", "model"})

    def run(self, sec_pickle_scans: dict[str, Any]) -> Iterator:
        from doctor.io.pickle_scan import torch_load_is_safe

        safe, why = torch_load_is_safe()
        if safe or why == "torch is not installed":
            raise Skip("torch >= 2.6 is installed (or no torch): weights_only=True is the default")
        for path, result in sec_pickle_scans.items():
            if Path(path).name not in LLAVA_PLAIN_LOAD or result.ok:
                continue  # a clean file on old torch is ENV003's finding
            yield self.finding(
                f"{Path(path).name} FAILED the pickle scan and LLaVA's builder loads it with "
                f"torch.load(..., map_location='cpu') and no weights_only: {why}", path=path)


@register
class PickleWeights(Check):
    """Model weights are stored as a pickle (.bin) where safetensors would do.

    ## What it does
    For `pytorch_model*.bin`, `adapter_model.bin`, or a single weights file given on the command
    line, that passed the pickle scan, offers to write a safetensors copy.

    ## Why is this bad?
    A pickle can carry code and needs `torch.load` (refused by transformers on torch < 2.6);
    safetensors loads lazily, memory-maps, and cannot execute anything.

    ## Example
    `checkpoint/pytorch_model.bin` (a LLaVA merge saved with `safe_serialization=False`).

    ## How to fix
    `vlm-doctor check PATH --fix` writes `model.safetensors` (+ index for shards; tied tensors
    stored once, as safetensors' `save_model` does) into a new `<folder>-safetensors` folder, or
    `<name>.safetensors` beside a single file; the input is never modified.
    """

    code = "SEC009"
    name = "pickle-weights"
    severity = Severity.INFO
    artifacts = frozenset(ARTIFACTS - {"run", "pickle"})  # training state is not weights

    def run(self, sec_pickle_scans: dict[str, Any], artifact: Artifact) -> Iterator:
        files = [p for p, r in sec_pickle_scans.items()
                 if r.ok and r.format in ("torch-zip", "torch-legacy") and convertible(p, artifact)]
        for path in files:
            yield self.finding(
                f"{Path(path).name} holds weights as a pickle ({_format(sec_pickle_scans[path].format)}); "
                "a safetensors copy can replace it",
                path=path, hint=_where_fix_writes(path, artifact),
                fix=Fix(f"write a safetensors copy of {Path(path).name} (new files; the input is kept)",
                        Applicability.SAFE, fixer="safetensors", params={"file": path}),
            )


def convertible(path: str, artifact: Artifact) -> bool:
    name = Path(path).name
    if is_training_state(path):
        return False  # optimizer / scheduler / RNG states and DeepSpeed files are not a state dict of weights
    if "weights" in artifact.kinds and Path(artifact.path).is_file():
        return True
    if Path(path).parent != Path(artifact.path):
        return False
    m = PICKLE_WEIGHTS_RE.match(name)
    if m is None:
        return False
    twin = "model" if m.group(1) == "pytorch_model" else "adapter_model"
    folder = Path(artifact.path)  # a safetensors twin already wins in transformers / peft
    return not ((folder / f"{twin}.safetensors").exists() or (folder / f"{twin}.safetensors.index.json").exists())


def _where_fix_writes(path: str, artifact: Artifact) -> str:
    p = Path(path)
    if Path(artifact.path).is_file():
        return f"Run `vlm-doctor check {p} --fix`: it writes {p.with_suffix('.safetensors')} beside it."
    m = PICKLE_WEIGHTS_RE.match(p.name)
    new = ("model" if m and m.group(1) == "pytorch_model" else "adapter_model") + ((m.group(2) if m else "") or "")
    folder = str(artifact.path).rstrip("/")
    return (f"Run `vlm-doctor check {folder} --fix`: it writes {folder}-safetensors/ with {new}.safetensors "
            "and links every other file; the original folder is kept.")


def _format(fmt: str) -> str:
    return {"torch-zip": "torch zip format", "torch-legacy": "torch legacy format"}.get(fmt, fmt)

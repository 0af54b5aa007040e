"""CKP101-CKP103, CKP107: the weights of a model folder, from the headers only (no torch).
CKP100 and CKP104-CKP106, which build the model on the meta device, are in ``doctor.checks.checkpoint.rules.loading``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.fixtures import ADAPTER_NAMES, ModelWeights, is_lora_name

from doctor.errors import Skip
from doctor.findings import Location, Severity
from doctor.registry import Check, register

FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def examples(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


@register
class WeightsMissing(Check):
    """The model folder has no weights file transformers would load.

    ## What it does
    Looks for `model.safetensors`, `model.safetensors.index.json`, `pytorch_model.bin` and
    `pytorch_model.bin.index.json`, in the order `from_pretrained` does, and names the weight-like
    files that are there instead (shards without their index, other file names).

    ## Why is this bad?
    `from_pretrained` raises `OSError: Error no file named model.safetensors, or pytorch_model.bin,
    found in directory`. A folder holding only config.json is what a merge leaves behind when
    `save_pretrained` fails half-way (see CKP012) or when a download stopped.

    ## Example
    `merged/` with config.json and generation_config.json only.

    ## How to fix
    Re-run the save (after fixing what made it fail) or the download; shards without an index need
    their `model.safetensors.index.json` copied from the source.
    """

    code = "CKP101"
    name = "weights-missing"
    artifacts = frozenset({"model"})

    def run(self, ckp_weights: ModelWeights, path: str):
        if ckp_weights.format is not None:
            return
        folder = Path(path)
        if any((folder / n).is_file() for n in ADAPTER_NAMES):
            return  # CKP102 explains this one
        others = sorted(p.name for p in folder.iterdir() if p.is_file()
                        and p.name.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt")))
        if others:
            shards = [n for n in others if n.startswith(("model-", "pytorch_model-"))]
            why = (f"shards {examples(shards)} are there but their index file is missing" if shards
                   else f"{examples(others)} are not names transformers looks for")
            yield self.finding(f"no model.safetensors or pytorch_model.bin: {why}", path=path,
                               hint="Copy the *.index.json from the source model, or rename a single file to "
                                    "model.safetensors.")
        else:
            yield self.finding("the folder holds config.json but no weights (an unfinished save or download)",
                               path=path)


@register
class AdapterInsteadOfModel(Check):
    """A model folder holds a LoRA adapter instead of merged weights.

    ## What it does
    Flags a model folder whose only weights are `adapter_model.*`, or whose weights file contains
    only LoRA tensors (`lora_A`, `lora_B`).

    ## Why is this bad?
    `merge_and_unload()` returns a new model; saving the PeftModel (or its state dict) instead
    writes just the adapter. transformers then finds no base weights: everything is initialized
    at random, or loading fails.

    ## Example
    `merged/` with config.json and adapter_model.safetensors, after
    `model.merge_and_unload(); model.save_pretrained("merged")`.

    ## How to fix
    Merge and save the returned model: `merged = model.merge_and_unload(); merged.save_pretrained(out)`
    (or `vlm-doctor merge`).
    """

    code = "CKP102"
    name = "adapter-instead-of-model"
    artifacts = frozenset({"model"})

    def run(self, ckp_weights: ModelWeights, path: str):
        folder = Path(path)
        adapters = [n for n in ADAPTER_NAMES if (folder / n).is_file()]
        if ckp_weights.format is None and adapters:
            yield self.finding(f"the folder holds {adapters[0]} (a LoRA adapter) but no model weights",
                               path=str(folder / adapters[0]))
        elif ckp_weights.tensors and all(is_lora_name(n) for n in ckp_weights.tensors):
            first = sorted(ckp_weights.tensors)[0]
            yield self.finding(f"all {len(ckp_weights.tensors)} tensors are LoRA tensors ({first}, ...): an adapter "
                               "was saved where the merged model should be", path=ckp_weights.tensors[first].file,
                               location=Location(tensor=first))


@register
class LoraLeftovers(Check):
    """A "merged" model still contains LoRA tensors (`.base_layer.`, `lora_A`, `lora_B`).

    ## What it does
    Looks for peft's tensor names in the model's weights.

    ## Why is this bad?
    transformers does not know these names: `lora_A`/`lora_B` are dropped (the fine-tune is lost),
    and a weight saved as `q_proj.base_layer.weight` leaves `q_proj.weight` missing, so it is
    initialized at random. It happens when a DeepSpeed/FSDP checkpoint or a PeftModel's
    state dict is exported without folding the LoRA.

    ## Example
    `language_model.model.layers.0.self_attn.q_proj.base_layer.weight`, `...q_proj.lora_A.default.weight`.

    ## How to fix
    Fold the LoRA into the base weights (W + alpha/r B A) and strip the peft prefixes:
    `vlm-doctor merge`, or `PeftModel.merge_and_unload()` and save the returned model.
    """

    code = "CKP103"
    name = "lora-leftovers"
    artifacts = frozenset({"model"})
    requires = ("CKP102",)

    def run(self, ckp_weights: ModelWeights):
        lora = sorted(ckp_weights.lora_names())
        if lora:
            base = [n for n in lora if ".base_layer." in n]
            yield self.finding(
                f"{len(lora)} LoRA tensors left in the model ({examples(lora)})"
                + (f"; {len(base)} base weights are stored under .base_layer. and would be missing" if base else ""),
                path=ckp_weights.tensors[lora[0]].file, location=Location(tensor=lora[0]))


@register
class MixedDtypes(Check):
    """The weights mix floating-point dtypes.

    ## What it does
    Counts the floating dtypes of all tensors (headers only) and reports more than one.

    ## Why is this bad?
    `from_pretrained` casts everything to one dtype, so it loads, but a mix usually means a botched
    merge: layers merged in float32 into a float16 model (twice the size), or a projector trained in
    float32 beside a bfloat16 language model. Casting bfloat16 weights to float16 can overflow.

    ## Example
    `language_model.model.layers.0.self_attn.q_proj.weight` F32 beside 290 F16 tensors.

    ## How to fix
    Re-save the model in one dtype (`model.to(torch.bfloat16).save_pretrained(out)`), the one it was
    trained in.
    """

    code = "CKP107"
    name = "mixed-dtypes"
    severity = Severity.WARNING
    artifacts = frozenset({"model", "weights"})

    def run(self, artifact: Any, path: str):
        tensors = _artifact_tensors(artifact, path)
        counts = Counter(t.dtype for t in tensors.values() if t.dtype in FLOAT_DTYPES)
        if len(counts) < 2:
            return
        main = counts.most_common(1)[0][0]
        odd = sorted(n for n, t in tensors.items() if t.dtype in FLOAT_DTYPES and t.dtype != main)
        summary = ", ".join(f"{c} {d}" for d, c in counts.most_common())
        yield self.finding(f"floating dtypes are mixed ({summary}); not {main}: {examples(odd)}",
                           path=tensors[odd[0]].file, location=Location(tensor=odd[0]))


def _artifact_tensors(artifact: Any, path: str) -> dict[str, Any]:
    from doctor.checks.checkpoint.fixtures import _file_tensors, read_model_weights

    if "model" in artifact.kinds:
        return read_model_weights(Path(path)).tensors
    got = _file_tensors(Path(path))
    if isinstance(got, str):
        raise Skip(got)
    return got

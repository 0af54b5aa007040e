"""CKP100-CKP107: the weights against config.json.

CKP101-CKP103 and CKP107 read only the headers. CKP100 and CKP104-CKP106 instantiate the model on
the meta device and reproduce ``from_pretrained``'s load report (``_checkpoint_expected``); they
declare torch and transformers and are skipped without them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from doctor.errors import Skip
from doctor.findings import Location, Severity
from doctor.layouts import classify, part_of
from doctor.registry import Check, fixture, register

from ._checkpoint_expected import BuildError, LoadPrediction, predict_load, split_lora
from ._checkpoint_files import ADAPTER_NAMES, ModelWeights, is_lora_name

PART_TITLES = {"projector": "the projector", "vision": "the vision tower", "image_newline": "image_newline",
               "language": "the language model", "lm_head": "lm_head", "other": "other"}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def _examples(names: list[str], n: int = 3) -> str:
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
            why = (f"shards {_examples(shards)} are there but their index file is missing" if shards
                   else f"{_examples(others)} are not names transformers looks for")
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
                f"{len(lora)} LoRA tensors left in the model ({_examples(lora)})"
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
        yield self.finding(f"floating dtypes are mixed ({summary}); not {main}: {_examples(odd)}",
                           path=tensors[odd[0]].file, location=Location(tensor=odd[0]))


def _artifact_tensors(artifact: Any, path: str) -> dict[str, Any]:
    from doctor.checks._checkpoint_files import _file_tensors, read_model_weights

    if "model" in artifact.kinds:
        return read_model_weights(Path(path)).tensors
    got = _file_tensors(Path(path))
    if isinstance(got, str):
        raise Skip(got)
    return got


# ---- against the meta-device model (torch + transformers) ----------------------------------------


@fixture
def ckp_load_prediction(ckp_config: dict[str, Any], ckp_weights: ModelWeights, path: str) -> LoadPrediction | str:
    """The predicted load report, or why transformers cannot build the model (a string)."""
    try:
        return predict_load(Path(path), ckp_weights if ckp_weights.complete else None)
    except BuildError as e:
        return str(e)
    except ImportError as e:  # a broken torch / transformers install: the ENV checks say more
        raise Skip(f"cannot import torch / transformers: {e}") from None


def _foreign(pred: LoadPrediction, weights: ModelWeights) -> bool:
    """Most of the checkpoint's own tensors match nothing in the model while the model misses
    tensors: the checkpoint is in another layout or belongs to another class."""
    return bool(weights.tensors) and bool(pred.missing) and len(pred.unexpected) > len(pred.mapped)


def _prediction(value: LoadPrediction | str, weights: ModelWeights) -> LoadPrediction:
    weights.require_complete()
    if isinstance(value, str):
        raise Skip("transformers cannot build the model (see CKP100)")
    return value


@register
class ModelNotBuildable(Check):
    """transformers cannot build the model described by config.json.

    ## What it does
    Instantiates the model class (`architectures[0]`, or the Auto class for the `model_type`) from
    config.json on the meta device, which allocates nothing.

    ## Why is this bad?
    `from_pretrained` does the same first step and fails with the same error, before reading a
    single weight.

    ## Example
    `pad_token_id` 128004 with a 300-token vocabulary: `AssertionError: Padding_idx must be within
    num_embeddings`.

    ## How to fix
    Fix the config value named in the error (often a token id or a size edited by hand).
    """

    code = "CKP100"
    name = "model-not-buildable"
    artifacts = frozenset({"model"})
    requires = ("CKP002",)
    packages = ("torch", "transformers")

    def run(self, ckp_load_prediction: LoadPrediction | str, path: str):
        if isinstance(ckp_load_prediction, str):
            yield self.finding(ckp_load_prediction, path=str(Path(path) / "config.json"))


@register
class TensorsMissing(Check):
    """Tensors the model needs are not in the weights; transformers initializes them at random.

    ## What it does
    Compares the parameters of the model built from config.json (meta device) with the tensors in
    the weights, after mapping on-disk names the way the installed transformers does (so the 4.x
    layout `language_model.model.*` and the 5.x one both count), honouring tied embeddings.
    Missing tensors are grouped by part: projector, vision tower, `image_newline`, language model.

    ## Why is this bad?
    `from_pretrained` only logs them as `missing_keys` / "newly initialized" and returns a model that
    runs: a random projector answers the same for every image; a random `image_newline` (llava_next)
    degrades every answer.

    ## Example
    A merge that saved the language model only: `model.multi_modal_projector.linear_1.weight`, ...
    missing.

    ## How to fix
    Add the missing tensors from the checkpoint that has them: the projector from the training run's
    non_lora_trainables.bin / mm_projector.bin (`vlm-doctor merge` does this), the vision tower and
    `image_newline` from the base model.
    """

    code = "CKP104"
    name = "tensors-missing"
    artifacts = frozenset({"model"})
    requires = ("CKP100",)
    packages = ("torch", "transformers")

    def run(self, ckp_load_prediction: LoadPrediction | str, ckp_weights: ModelWeights, path: str):
        pred = _prediction(ckp_load_prediction, ckp_weights)
        if not pred.missing:
            return
        target = ckp_weights.files[0] if ckp_weights.files else path
        if _foreign(pred, ckp_weights):
            layout = classify(ckp_weights.tensors).layout
            where = f"; the checkpoint is in the {layout.title} layout" if layout else ""
            yield self.finding(
                f"only {len(set(pred.mapped.values()))} of the {len(pred.expected)} {pred.model_class} tensors are in "
                f"the weights{where}: from_pretrained would initialize the other {len(pred.missing)} at random",
                path=target,
                hint="Convert the checkpoint to this class's layout (`vlm-doctor convert`), or fix architectures / "
                     "model_type in config.json to the class that saved it.")
            return
        by_part: dict[str, list[str]] = {}
        for name in pred.missing:
            by_part.setdefault(part_of(name), []).append(pred.saved_name(name))
        for part in sorted(by_part, key=lambda p: list(PART_TITLES).index(p) if p in PART_TITLES else 99):
            names = by_part[part]
            yield self.finding(
                f"{PART_TITLES.get(part, part)}: {len(names)} tensor(s) missing from the weights ({_examples(names)}); "
                f"{pred.model_class}.from_pretrained initializes them at random", path=target,
                location=Location(tensor=names[0]))


@register
class TensorsUnexpected(Check):
    """The weights hold tensors the model does not have; transformers drops them.

    ## What it does
    Lists the tensors whose names, mapped the way the installed transformers maps them, match no
    parameter of the model built from config.json (LoRA tensors are reported by CKP103).

    ## Why is this bad?
    `from_pretrained` silently ignores them (`unexpected_keys`): whatever they held is lost. Usually the
    checkpoint belongs to another class or layout, or was saved with extra modules.

    ## Example
    `model.mm_projector.0.weight` (original LLaVA name) in a LlavaForConditionalGeneration folder.

    ## How to fix
    Rename the tensors to the model's layout (`vlm-doctor convert`), or remove them if they are not
    needed.
    """

    code = "CKP105"
    name = "tensors-unexpected"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})
    requires = ("CKP100",)
    packages = ("torch", "transformers")

    def run(self, ckp_load_prediction: LoadPrediction | str, ckp_weights: ModelWeights):
        pred = _prediction(ckp_load_prediction, ckp_weights)
        if _foreign(pred, ckp_weights):
            return  # CKP104 reports a foreign layout once
        _, rest = split_lora(pred.unexpected)
        if rest:
            yield self.finding(f"{len(rest)} tensor(s) the {pred.model_class} does not have ({_examples(rest)}): "
                               "from_pretrained drops them", path=ckp_weights.tensors[rest[0]].file,
                               location=Location(tensor=rest[0]))


@register
class TensorShapeMismatch(Check):
    """A tensor's shape differs from the parameter the config describes.

    ## What it does
    Compares every mapped tensor's header shape with the parameter's shape in the model built from
    config.json.

    ## Why is this bad?
    `from_pretrained` raises ("size mismatch for ...", or 5.x's load report with MISMATCH and
    `ignore_mismatched_sizes`); with `ignore_mismatched_sizes=True` the tensor is re-initialized at
    random. Typical causes: tokens added to the tokenizer without resizing `vocab_size`, a projector
    from another model size.

    ## Example
    `language_model.model.embed_tokens.weight` [32064, 4096] with `text_config.vocab_size` 32000.

    ## How to fix
    Make config.json describe the saved tensors (e.g. set `vocab_size` to the embedding rows), or use
    the tensors that belong to this config.
    """

    code = "CKP106"
    name = "tensor-shape-mismatch"
    artifacts = frozenset({"model"})
    requires = ("CKP100",)
    packages = ("torch", "transformers")

    def run(self, ckp_load_prediction: LoadPrediction | str, ckp_weights: ModelWeights):
        pred = _prediction(ckp_load_prediction, ckp_weights)
        if _foreign(pred, ckp_weights):
            return  # CKP104 reports a foreign layout once
        for disk, mem, have, want in pred.mismatched:
            yield self.finding(f"{disk} has shape {list(have)} but {pred.model_class} expects {list(want)} ({mem})",
                               path=ckp_weights.tensors[disk].file, location=Location(tensor=disk))

"""CKP100, CKP104-CKP106: the weights against the model built from config.json on the meta device,
reproducing ``from_pretrained``'s load report (``doctor.checks.checkpoint.expected``). The model is
built once per config structure and remembered as a template (``doctor.checks.checkpoint.templates``),
so a warm run imports neither torch nor transformers. These checks declare torch and transformers
(the first run of a config needs them) and are skipped without them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.expected import BuildError, LoadPrediction, predict_load, split_lora
from doctor.checks.checkpoint.fixtures import ModelWeights
from doctor.checks.checkpoint.rules.weights import examples as _examples

from doctor.errors import Skip
from doctor.findings import Location, Severity
from doctor.layouts import classify, part_of
from doctor.registry import Check, fixture, register

PART_TITLES = {"projector": "the projector", "vision": "the vision tower", "image_newline": "image_newline",
               "language": "the language model", "lm_head": "lm_head", "other": "other"}


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
    A merge that saved the language model only: `multi_modal_projector.linear_1.weight`, ... missing
    (named as `save_pretrained` writes them, whatever layout the folder uses).

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
    checkpoint belongs to another class or layout, or was saved with extra modules. A warning: the model
    the loader builds is complete; when the extras are its own tensors under other names, the missing
    ones are CKP104's error.

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

"""LLV001-LLV005, LLV009: the folder an original-LLaVA run leaves (adapter, config.json, non_lora_trainables.bin), with its fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.checks.adapter.reading import JsonDoc, load_base, read_json_doc, read_weights
from doctor.checks.llava.builder import (
    CLASS_FOR_TYPE,
    builder_branch,
    compare_projector,
    expected_projector,
    file_mtime,
    model_name_from_path,
    normalise_non_lora,
    projector_tensors,
    projector_type_of,
)

from doctor.errors import Skip
from doctor.files import ADAPTER_WEIGHTS, NON_LORA_TRAINABLES
from doctor.findings import Applicability, Fix, Location, Severity
from doctor.io.safetensors_header import TensorInfo
from doctor.registry import Check, fixture, register

LORA = frozenset({"llava-lora"})
BOTH = frozenset({"llava-lora", "llava-original"})
NON_LORA = NON_LORA_TRAINABLES
SAME_RUN_SECONDS = 3600
MERGE = Fix("merge the LoRA and projector into one checkpoint (vlm-doctor merge)", Applicability.SAFE, fixer="merge")


@fixture
def llava_config_doc(path: str) -> JsonDoc:
    return read_json_doc(Path(path) / "config.json")


@fixture
def llava_config(llava_config_doc: JsonDoc) -> dict[str, Any]:
    if not llava_config_doc.ok or not isinstance(llava_config_doc.data, dict):
        raise Skip("config.json is missing or invalid (see LLV001)")
    return llava_config_doc.data


@fixture
def llava_projector(artifact: Any, path: str) -> dict[str, TensorInfo]:
    """Projector tensors as ``load_state_dict`` receives them: from non_lora_trainables.bin
    (LoRA output) or from the model's weights (full checkpoint). Headers / opcodes only."""
    if "llava-lora" in artifact.kinds:
        w = read_weights(Path(path) / NON_LORA if (Path(path) / NON_LORA).is_file() else None)
        if w.file is None or w.problem:
            raise Skip(f"{NON_LORA} is missing or unreadable (see LLV002)")
        return projector_tensors(normalise_non_lora(w.tensors))
    base = load_base(path, "4.37.2")
    if not base.tensors:
        raise Skip("the checkpoint's weights are unreadable")
    return projector_tensors(base.tensors)


@register
class LlavaConfigInvalid(Check):
    """config.json of an original-LLaVA output is missing, invalid, or lacks the `mm_*` fields.

    ## What it does
    Reads config.json and checks the fields `LlavaLlamaForCausalLM` needs to rebuild the vision
    side: `mm_vision_tower`, `mm_hidden_size`, `hidden_size` (`mm_projector_type` defaults to linear).

    ## Why is this bad?
    LLaVA writes config.json only at the end of training: a `checkpoint-N` copy has none and
    `load_pretrained_model` fails with `OSError: ... does not appear to have a file named config.json`.

    ## Example
    `--model-path checkpoints/llava-v1.5-7b-lora/checkpoint-6000`.

    ## How to fix
    Copy config.json from the run's final output folder (same run), or use the final folder.
    """

    code = "LLV001"
    name = "llava-config-invalid"
    artifacts = BOTH

    def run(self, llava_config_doc: JsonDoc, path: str):
        doc, file = llava_config_doc, f"{path}/config.json"
        if not doc.exists:
            yield self.finding("config.json is missing", path=file)
            return
        if doc.error or not isinstance(doc.data, dict):
            loc = Location(line=doc.line, column=doc.column) if doc.line else None
            yield self.finding(f"config.json is not a JSON object: {doc.error or type(doc.data).__name__}",
                               path=file, location=loc)
            return
        missing = [k for k in ("mm_vision_tower", "mm_hidden_size", "hidden_size") if k not in doc.data]
        if missing:
            yield self.finding(f"config.json lacks {', '.join(missing)}: not a LLaVA config after training",
                               path=file, location=Location(key=missing[0]))


@register
class NonLoraTrainablesMissing(Check):
    """The LoRA output has no `non_lora_trainables.bin`, or it holds no projector.

    ## What it does
    Looks for non_lora_trainables.bin beside the adapter and for `mm_projector` tensors in it.

    ## Why is this bad?
    The projector is trained fully, outside the LoRA, and saved only in this file. Without it
    the builder tries the Hugging Face Hub, and the projector stays randomly initialised
    (`Some weights ... newly initialized: ['model.mm_projector.0.weight', ...]`): answers ignore the image.

    ## Example
    A folder copied from `checkpoint-6000/` (written before the end of training).

    ## How to fix
    Copy non_lora_trainables.bin from the same run's final output folder.
    """

    code = "LLV002"
    name = "non-lora-trainables-missing"
    artifacts = LORA
    requires = ("LLV001",)

    def run(self, llava_config: dict[str, Any], path: str):
        file = Path(path) / NON_LORA
        if not file.is_file():
            yield self.finding(f"{NON_LORA} is missing: the projector would stay random", path=str(file))
            return
        w = read_weights(file)
        if w.problem:
            yield self.finding(f"{NON_LORA} cannot be read: {w.problem}", path=str(file))
        elif llava_config.get("mm_projector_type") != "identity" and not projector_tensors(normalise_non_lora(w.tensors)):
            yield self.finding(f"{NON_LORA} holds {len(w.tensors)} tensors but no mm_projector", path=str(file))


@register
class ProjectorMismatch(Check):
    """The projector tensors do not match `mm_projector_type`, `mm_hidden_size` or `hidden_size`.

    ## What it does
    Builds the tensor list of LLaVA's `build_vision_projector` for the config (linear:
    `weight`/`bias`; `mlp2x_gelu`: `0.*`, `2.*`, first [hidden, mm_hidden]) and compares.

    ## Why is this bad?
    The builder loads the projector with `load_state_dict(strict=False)`: other names are
    ignored silently and the projector stays random (a linear file for an mlp2x_gelu config);
    other shapes raise `size mismatch for model.mm_projector.0.weight`.

    ## Example
    `"mm_projector_type": "mlp2x_gelu"` with `model.mm_projector.weight` / `.bias` in the file.

    ## How to fix
    Set `mm_projector_type` to what the file holds, or use the projector of the same run.
    """

    code = "LLV003"
    name = "projector-mismatch"
    artifacts = BOTH
    requires = ("LLV001",)

    def run(self, llava_config: dict[str, Any], llava_projector: dict[str, TensorInfo], path: str):
        ptype = llava_config.get("mm_projector_type", "linear")
        hidden, mm_hidden = llava_config.get("hidden_size"), llava_config.get("mm_hidden_size")
        expected = expected_projector(str(ptype), hidden, mm_hidden)
        cfg = f"{path}/config.json"
        if expected is None:
            yield self.finding(f"mm_projector_type {ptype!r} is unknown to LLaVA: ValueError('Unknown projector "
                               "type')", path=cfg, location=Location(key="mm_projector_type"))
            return
        missing, unexpected, shapes = compare_projector(llava_projector, expected)
        found_type = projector_type_of(list(llava_projector))
        if missing and llava_projector:
            fix = None
            if found_type and found_type != ptype:
                fix = Fix(f"set mm_projector_type to {found_type}", Applicability.UNSAFE)
            yield self.finding(f"mm_projector_type is {ptype!r} but the projector tensors are {sorted(llava_projector)} "
                               f"({found_type or 'unknown'}): load_state_dict(strict=False) skips them and the "
                               "projector stays random", path=cfg, location=Location(key="mm_projector_type"), fix=fix,
                               hint=f"Set mm_projector_type to {found_type!r}." if found_type else None)
        for name, got, want in shapes:
            yield self.finding(f"model.mm_projector.{name} is {list(got)}, the config (hidden_size {hidden}, "
                               f"mm_hidden_size {mm_hidden}) needs {list(want)}: size mismatch on load",
                               path=cfg, location=Location(tensor=f"model.mm_projector.{name}"))
        if unexpected and not missing and not shapes:
            yield self.finding(f"extra projector tensors {unexpected} are ignored", path=cfg,
                               severity=Severity.WARNING)


@register
class ExtrasFromAnotherRun(Check):
    """config.json, non_lora_trainables.bin and the adapter do not come from the same run.

    ## What it does
    Compares the hidden size the adapter's `lora_A` tensors were trained with against config.json,
    and the modification times of the three files (LLaVA writes them together, at the end of training).

    ## Why is this bad?
    A projector or config copied from another run loads without an error and gives abnormal
    answers; a different hidden size fails with a size mismatch (reported as an error). Files written
    hours apart are a warning: a hint that they come from different runs, not proof.

    ## Example
    non_lora_trainables.bin from last week's run next to today's adapter_model.safetensors.

    ## How to fix
    Take all three files from one run's final output folder.
    """

    code = "LLV004"
    name = "extras-from-another-run"
    severity = Severity.WARNING
    artifacts = LORA
    requires = ("LLV001",)

    def run(self, llava_config: dict[str, Any], path: str):
        root = Path(path)
        adapter = next((root / n for n in ADAPTER_WEIGHTS if (root / n).is_file()), None)
        w = read_weights(adapter)
        ins = {t.shape[1] for n, t in w.tensors.items() if ".lora_A" in n and len(t.shape) == 2
               and n.rsplit(".lora_A", 1)[0].endswith(("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"))}
        hidden = llava_config.get("hidden_size")
        if ins and hidden not in ins:
            yield self.finding(f"the adapter's lora_A tensors take {sorted(ins)} features but config.json says "
                               f"hidden_size {hidden}: config.json is from another model", path=f"{path}/config.json",
                               location=Location(key="hidden_size"), severity=Severity.ERROR)
        times = {n: file_mtime(root / n) for n in ("config.json", NON_LORA, adapter.name if adapter else "")}
        times = {n: t for n, t in times.items() if n and t is not None}
        if len(times) >= 2 and max(times.values()) - min(times.values()) > SAME_RUN_SECONDS:
            old = min(times, key=times.__getitem__)
            hours = (max(times.values()) - min(times.values())) / 3600
            yield self.finding(f"{old} is {hours:.1f} h older than the newest of {', '.join(sorted(times))}: "
                               "LLaVA writes them together at the end of a run", path=str(root / old))


@register
class ImageTokenEmbeddingsMissing(Check):
    """`mm_use_im_start_end` / `mm_use_im_patch_token` add tokens whose embeddings are not saved.

    ## What it does
    When config.json asks for the extra image tokens, checks that non_lora_trainables.bin holds
    `model.embed_tokens.weight` (LLaVA trains those rows and saves them there).

    ## Why is this bad?
    The builder adds the tokens and calls `resize_token_embeddings`: without saved rows they are
    random, and with a pretrain adapter the training script fails with `KeyError: 'model.embed_tokens.weight'`.

    ## Example
    `"mm_use_im_start_end": true` with a projector-only non_lora_trainables.bin.

    ## How to fix
    Set `mm_use_im_start_end` and `mm_use_im_patch_token` to false (LLaVA v1.5's values), or
    save the trained embeddings.
    """

    code = "LLV005"
    name = "image-token-embeddings-missing"
    artifacts = LORA
    requires = ("LLV001", "LLV002")

    def run(self, llava_config: dict[str, Any], path: str):
        flags = [k for k in ("mm_use_im_start_end", "mm_use_im_patch_token") if llava_config.get(k)]
        if not flags:
            return
        w = read_weights(Path(path) / NON_LORA)
        if not any(k.endswith("embed_tokens.weight") for k in normalise_non_lora(w.tensors)):
            yield self.finding(f"{' and '.join(flags)} true, but {NON_LORA} has no embed_tokens: the added "
                               "image tokens get random embeddings", path=f"{path}/config.json",
                               location=Location(key=flags[0]))


# the builder's routing (LLV006 - LLV008) registers on import

__all__ = ["CLASS_FOR_TYPE", "builder_branch", "model_name_from_path", "MERGE"]

"""CKP001-CKP003, CKP005: config.json itself and against the installed transformers (header-only, no torch)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.fixtures import JsonFile, ModelWeights, image_token_id, text_config
from doctor.checks.checkpoint.installed import installed_transformers

from doctor.artifacts import ORIGINAL_LLAVA_TYPES
from doctor.errors import Skip
from doctor.findings import Applicability, Fix, Location, Severity
from doctor.registry import Check, register

# The config class each original-LLaVA type registers: the name in AutoTokenizer's KeyError.
ORIGINAL_CONFIG_CLASSES = {
    "llava_llama": "LlavaConfig", "llava_mistral": "LlavaMistralConfig", "llava_mpt": "LlavaMptConfig",
    "llava_mixtral": "LlavaMixtralConfig", "llava_qwen": "LlavaQwenConfig", "llava_qwen_moe": "LlavaQwenMoeConfig",
    "llava_gemma": "LlavaGemmaConfig",
}
ORIGINAL_ARCHITECTURES = ("LlavaLlamaForCausalLM", "LlavaMistralForCausalLM", "LlavaMptForCausalLM")
ORIGINAL_CONFIG_KEYS = ("mm_vision_tower", "mm_projector_type", "mm_hidden_size", "mm_vision_select_layer")
# transformers' converter handles the llama and mistral language models of the LLaVA codebase
CONVERTIBLE = frozenset({"llava_llama", "llava_mistral", "llava"})


def convert_fix(model_type: str) -> Fix | None:
    if model_type not in CONVERTIBLE:
        return None
    return Fix("convert to transformers' LlavaForConditionalGeneration (vlm-doctor convert), written beside it",
               Applicability.SAFE, fixer="convert")


FIX_ORIGINAL = (
    "Convert it to transformers' own layout with `vlm-doctor convert` (a LoRA output: `vlm-doctor merge`), "
    "or load it with the LLaVA codebase: install haotian-liu/LLaVA with its pins (transformers==4.37.2, "
    "tokenizers==0.15.1, torch==2.1.2) and use llava.model.builder.load_pretrained_model."
)


def config_path(folder: str) -> str:
    return str(Path(folder) / "config.json")


def installed():
    info = installed_transformers()
    if info is None:
        raise Skip("transformers is not installed")
    return info


@register
class ConfigInvalidJson(Check):
    """config.json is missing, not valid JSON, or not a JSON object.

    ## What it does
    Parses config.json of a model folder and reports the first syntax error with its line and
    column, a Git-LFS pointer in its place, or a top level that is not an object.

    ## Why is this bad?
    `AutoConfig.from_pretrained` and every `from_pretrained` read config.json first: the model
    cannot be loaded at all (`OSError: It looks like the config file ... is not a valid JSON file`).

    ## Example
    A hand-edited config with a trailing comma: `"vocab_size": 32064,\\n}`.

    ## How to fix
    Fix the JSON at the reported line and column, or copy config.json again from the source model.
    """

    code = "CKP001"
    name = "config-invalid-json"
    artifacts = frozenset({"model"})

    def run(self, ckp_config_file: JsonFile):
        f = ckp_config_file
        if not f.exists:
            yield self.finding("config.json is missing", path=str(f.path),
                               hint="Copy config.json from the model this folder was saved from.")
        elif f.error is not None:
            loc = Location(line=f.line, column=f.column) if f.line else None
            yield self.finding(f"config.json is not valid JSON: {f.error}", path=str(f.path), location=loc)
        elif not isinstance(f.data, dict):
            yield self.finding(f"config.json holds a JSON {type(f.data).__name__}, not an object",
                               path=str(f.path), location=Location(line=1, column=1))


@register
class ModelTypeUnregistered(Check):
    """config.json's `model_type` is not registered in the installed transformers.

    ## What it does
    Compares `model_type` with the types the installed transformers registers (read from its
    source, without importing it). The LLaVA codebase's types (`llava_llama`, `llava_mistral`,
    `llava_mpt`; LLaVA-NeXT's `llava_qwen`, `llava_mixtral`, ...) exist only after `import llava`.

    ## Why is this bad?
    `AutoConfig` raises `KeyError: 'llava_mistral'` ("Transformers does not recognize this
    architecture") and `AutoTokenizer` raises `KeyError: 'LlavaMistralConfig'`; no Auto class can
    load the folder.

    ## Example
    `{"model_type": "llava_mistral", "architectures": ["LlavaMistralForCausalLM"], "mm_projector_type": "mlp2x_gelu"}`

    ## How to fix
    Convert the checkpoint to transformers' layout (`vlm-doctor convert`, or `vlm-doctor merge` for a
    LoRA output), or load it with the codebase that registers the type (the LLaVA repo with its pinned
    versions; `trust_remote_code=True` for a model with `auto_map`); or upgrade transformers when the
    type is newer than the installed release.
    """

    code = "CKP002"
    name = "model-type-unregistered"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)
    packages = ("transformers",)

    def run(self, ckp_config: dict[str, Any], path: str):
        info = installed()
        mt = ckp_config.get("model_type")
        where = config_path(path)
        if not isinstance(mt, str) or not mt:
            yield self.finding(
                "config.json has no \"model_type\": AutoConfig raises \"Unrecognized model ... Should have a "
                "`model_type` key in its config.json\"", path=where, location=Location(key="model_type"),
                hint="Add the model_type of the architecture (for LlavaForConditionalGeneration: \"llava\").")
            return
        if mt in info.model_types:
            return
        loc = Location(key="model_type")
        if mt in ORIGINAL_LLAVA_TYPES:
            cls_name = ORIGINAL_CONFIG_CLASSES.get(mt, "LlavaConfig")
            llava_here = importlib.util.find_spec("llava") is not None
            yield self.finding(
                f"model_type {mt!r} is registered only by the LLaVA codebase (on `import llava`); transformers "
                f"{info.version} does not know it: AutoConfig raises KeyError: {mt!r} and AutoTokenizer raises "
                f"KeyError: {cls_name!r}"
                + (" (the llava package is installed here, so its own builder can load it)" if llava_here else ""),
                path=where, location=loc, hint=FIX_ORIGINAL,
                severity=Severity.INFO if llava_here else None, fix=convert_fix(mt))
        elif mt == "projector":
            yield self.finding(
                "model_type 'projector' is XTuner's projector folder (trust_remote_code), not a model transformers "
                "can load on its own", path=where, location=loc,
                hint="Point vlm-doctor at the whole XTuner release folder, or convert it with `vlm-doctor convert`.")
        elif "auto_map" in ckp_config:
            yield self.finding(
                f"model_type {mt!r} is not part of transformers {info.version}: the folder ships its own code "
                "(auto_map), so it loads only with trust_remote_code=True", path=where, location=loc,
                severity=Severity.WARNING,
                hint="Load with trust_remote_code=True after reading the shipped .py files, or convert the model.")
        else:
            saved = ckp_config.get("transformers_version")
            newer = f"; it was saved by transformers {saved}" if isinstance(saved, str) else ""
            yield self.finding(
                f"model_type {mt!r} is not registered in transformers {info.version}{newer}: AutoConfig raises "
                f"KeyError: {mt!r}", path=where, location=loc)


@register
class LlavaModelTypeCollision(Check):
    """An original-LLaVA checkpoint declares `model_type: "llava"`, transformers' own LLaVA type.

    ## What it does
    Flags config.json with `model_type: "llava"` together with the LLaVA codebase's architectures
    (`LlavaLlamaForCausalLM`), its `mm_*` keys (`mm_vision_tower`, `mm_projector_type`) or
    `model.mm_projector.*` tensors. liuhaotian's v1.5 releases are written this way.

    ## Why is this bad?
    Since 4.36 `llava` is transformers' native `LlavaForConditionalGeneration`, a different layout:
    `AutoModelForCausalLM` raises "Unrecognized configuration class LlavaConfig", and
    `LlavaForConditionalGeneration` builds a default vision tower and initializes every weight at
    random ("newly initialized"). transformers < 4.36 raises `KeyError: 'llava'`.

    ## Example
    `{"model_type": "llava", "architectures": ["LlavaLlamaForCausalLM"], "mm_projector_type": "mlp2x_gelu"}`

    ## How to fix
    Convert the checkpoint to transformers' llava layout (`vlm-doctor convert`); to keep using the
    LLaVA codebase, set `model_type` to `llava_llama` (the type it registers) so Auto classes fail
    loudly instead of loading a random model.
    """

    code = "CKP003"
    name = "llava-model-type-collision"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], ckp_weights: ModelWeights, path: str):
        if ckp_config.get("model_type") != "llava":
            return
        archs = [a for a in ckp_config.get("architectures") or [] if a in ORIGINAL_ARCHITECTURES]
        keys = [k for k in ORIGINAL_CONFIG_KEYS if k in ckp_config]
        tensors = [n for n in ckp_weights.tensors if ".mm_projector." in f".{n}"]
        evidence = ([f"architectures {archs}"] if archs else []) + ([f"keys {keys}"] if keys else []) + (
            [f"tensors such as {tensors[0]}"] if tensors else [])
        if not evidence:
            return
        yield self.finding(
            "config.json says model_type \"llava\" (transformers' native LlavaForConditionalGeneration) but the "
            f"checkpoint is in the original LLaVA layout ({'; '.join(evidence)}): Auto classes load the wrong "
            "class and every weight would be newly initialized",
            path=config_path(path), location=Location(key="model_type"), fix=convert_fix("llava"))


@register
class ImageTokenOutOfRange(Check):
    """`image_token_id` / `image_token_index` is not a row of the input embedding.

    ## What it does
    Compares the image placeholder id in config.json with the rows of the language model's
    embedding (read from the weights' headers; without weights, the rows transformers would build
    from `text_config.vocab_size`: mllama adds 8 rows, so its `<|image|>` id equals `vocab_size`
    by design and is not flagged).

    ## Why is this bad?
    The placeholder is looked up in the embedding before image features replace it: an id beyond
    the last row raises `IndexError: index out of range in self` on the first image batch; a
    negative id (original LLaVA's -200 sentinel) is never found, so no image is ever inserted.

    ## Example
    `{"image_token_index": 32000, "text_config": {"vocab_size": 32000}}` with a 32000-row embedding.

    ## How to fix
    Set the id to the tokenizer's `<image>` id and make sure the embedding has a row for it
    (`model.resize_token_embeddings(len(tokenizer))` before saving).
    """

    code = "CKP005"
    name = "image-token-out-of-range"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], ckp_weights: ModelWeights, path: str):
        key, value = image_token_id(ckp_config)
        if key is None:
            return
        loc, where = Location(key=key), config_path(path)
        if not isinstance(value, int) or isinstance(value, bool):
            yield self.finding(f"{key} is {value!r}; it must be an integer token id", path=where, location=loc)
            return
        emb = ckp_weights.embedding_rows() if ckp_weights.complete else None
        if emb is not None:
            rows, source = emb[1], f"the embedding {emb[0]} has {emb[1]} rows"
        else:
            vocab = text_config(ckp_config).get("vocab_size")
            if not isinstance(vocab, int):
                return
            extra = 8 if ckp_config.get("model_type") == "mllama" else 0
            rows, source = vocab + extra, f"text vocab_size {vocab} gives {vocab + extra} embedding rows"
        if value < 0:
            yield self.finding(f"{key} is {value}, a sentinel no tokenizer produces (original LLaVA uses -200 "
                               "internally): no image placeholder will ever be found", path=where, location=loc)
        elif value >= rows:
            yield self.finding(f"{key} is {value} but {source}: the lookup raises IndexError on the first image",
                               path=where, location=loc)

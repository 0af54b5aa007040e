"""LLV006 - LLV008: the routing of LLaVA's ``load_pretrained_model`` (by folder NAME), the class
its LoRA branch forces, and what ``--model-base`` must be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.checks.adapter.reading import read_json_doc, resolve_base
from doctor.checks.llava.builder import CLASS_FOR_TYPE, builder_branch, model_name_from_path

from doctor.findings import Applicability, Fix, Location, Severity
from doctor.registry import Check, register

LORA = frozenset({"llava-lora"})
BOTH = frozenset({"llava-lora", "llava-original"})


def _merge_fix() -> Fix:
    return Fix("merge the LoRA and projector into one checkpoint (vlm-doctor merge)", Applicability.SAFE,
               fixer="merge")


@register
class FolderNameRouting(Check):
    """LLaVA's loader would take the wrong code path because of the folder's NAME.

    ## What it does
    Replays `load_pretrained_model`: the model name is the folder's last component (or
    `<parent>_<checkpoint-N>`); "llava" and "lora" in it -> LoRA merge; "llava" with
    `--model-base` but no "lora" -> projector-only (`mm_projector.bin`); no "llava" -> a
    text-only `AutoModelForCausalLM`. For full checkpoints, "mistral" / "mpt" pick the class.

    ## Why is this bad?
    The wrong branch fails far from the cause (`FileNotFoundError: mm_projector.bin`,
    `KeyError: 'llava_llama'`) or silently loads a text-only model that ignores images.

    ## Example
    A LoRA output saved as `checkpoints/run3` (no "llava", no "lora" in the name).

    ## How to fix
    Rename the folder (or symlink it) so the name holds "llava" and "lora", or merge it into
    one checkpoint and load that.
    """

    code = "LLV006"
    name = "folder-name-routing"
    artifacts = BOTH

    def run(self, artifact: Any, llava_config: dict[str, Any], path: str):
        name = model_name_from_path(path)
        p = Path(path)
        if "llava-lora" in artifact.kinds:
            branch = builder_branch(path, has_model_base=True)
            if branch.name == "lora-merge":
                return
            good = f"{p.name}-llava-lora" if "llava" not in name.lower() else f"{p.name}-lora"
            yield self.finding(
                f"model name {name!r} routes load_pretrained_model to its {branch.name} branch ({branch.loads}), "
                "not the LoRA merge, which needs 'llava' and 'lora' in the name", path=path, fix=_merge_fix(),
                hint=f"ln -s {p.resolve()} {p.parent.resolve() / good}  and pass that path as --model-path, "
                     "or merge the adapter (vlm-doctor merge).")
            return
        branch = builder_branch(path, has_model_base=False)
        model_type = llava_config.get("model_type")
        want = CLASS_FOR_TYPE.get(model_type)
        if branch.name != "llava-full":
            yield self.finding(f"model name {name!r} has no 'llava': load_pretrained_model loads it as "
                               f"{branch.loads}", path=path,
                               hint=f"Rename the folder to include 'llava' (e.g. llava-{p.name}).")
        elif want and branch.model_class != want:
            yield self.finding(f"model_type {model_type!r} needs {want}, but the name {name!r} makes the builder "
                               f"build {branch.model_class}", path=path,
                               hint=f"Rename the folder to include '{model_type.split('_')[-1]}'.")


@register
class ForcedLlavaLlama(Check):
    """A non-llama LLaVA LoRA output: LLaVA's LoRA branch always builds `LlavaLlamaForCausalLM`.

    ## What it does
    Compares config.json's `model_type` with what the LoRA branch of `load_pretrained_model`
    uses: `LlavaConfig.from_pretrained` + `LlavaLlamaForCausalLM`, whatever the type.

    ## Why is this bad?
    A `llava_mistral` LoRA is merged into a Llama model class ("You are using a model of type
    llava_mistral to instantiate a model of type llava_llama"): Mistral's sliding-window
    attention and other settings are lost.

    ## Example
    A LoRA on llava-v1.6-mistral-7b with `"model_type": "llava_mistral"`.

    ## How to fix
    Merge with the matching class (vlm-doctor merge), then load the merged model.
    """

    code = "LLV007"
    name = "forced-llava-llama"
    artifacts = LORA
    requires = ("LLV001",)

    def run(self, llava_config: dict[str, Any], path: str):
        model_type = llava_config.get("model_type")
        if model_type in (None, "llava_llama", "llava"):
            return
        yield self.finding(f"model_type is {model_type!r} but LLaVA's LoRA branch builds LlavaLlamaForCausalLM from "
                           "LlavaConfig", path=f"{path}/config.json", location=Location(key="model_type"),
                           fix=_merge_fix())


@register
class ModelBaseMismatch(Check):
    """What `--model-base` must be for this LoRA output, and whether `--base` is it.

    ## What it does
    Reads `base_model_name_or_path` from adapter_config.json (the LLM the LoRA was trained on:
    vicuna for `finetune_lora.sh`, llava-v1.5 for `finetune_task_lora.sh`) and compares the base
    given with `--base` (or found locally) with config.json: hidden size, layers, vocabulary.

    ## Why is this bad?
    The LoRA branch builds `LlavaLlamaForCausalLM.from_pretrained(model_base, config=<LoRA dir's
    config>)`: a 7B base under a 13B config is a size mismatch; another base of the same size
    loads and produces garbage or endless output.

    ## Example
    A `finetune_lora.sh` adapter (trained on vicuna-13b-v1.5) with `--model-base llava-v1.5-7b`.

    ## How to fix
    Pass the recorded base as `--model-base` (and to vlm-doctor as `--base`).
    """

    code = "LLV008"
    name = "model-base-mismatch"
    artifacts = LORA
    requires = ("LLV001",)

    def run(self, llava_config: dict[str, Any], options: Any, path: str):
        adapter_cfg = read_json_doc(Path(path) / "adapter_config.json")
        recorded = adapter_cfg.data.get("base_model_name_or_path") if isinstance(adapter_cfg.data, dict) else None
        given = getattr(options, "base", None)
        if not recorded:
            yield self.finding("adapter_config.json records no base_model_name_or_path: nothing says what "
                               "--model-base must be", path=f"{path}/adapter_config.json", severity=Severity.WARNING,
                               location=Location(key="base_model_name_or_path"))
        base_dir = Path(given) if given else resolve_base(recorded, relative_to=path)
        if base_dir is None:
            return
        base_doc = read_json_doc(base_dir / "config.json")
        if not base_doc.ok or not isinstance(base_doc.data, dict):
            return
        base = base_doc.data.get("text_config") if isinstance(base_doc.data.get("text_config"), dict) else base_doc.data
        diffs = [f"{k} {base.get(k)} vs {llava_config.get(k)}" for k in ("hidden_size", "num_hidden_layers",
                 "intermediate_size") if base.get(k) is not None and llava_config.get(k) is not None
                 and base.get(k) != llava_config.get(k)]
        if diffs:
            yield self.finding(f"--model-base {base_dir} does not match this LoRA's config.json ({'; '.join(diffs)})"
                               + (f"; the adapter was trained on {recorded!r}" if recorded else ""),
                               path=f"{path}/config.json", hint=f"Use --model-base {recorded}." if recorded else None)


@register
class NeedsLlavaCodebase(Check):
    """This LoRA output loads only through the LLaVA codebase, not through transformers.

    ## What it does
    Reads `model_type` and `architectures` from the output's config.json. The original LLaVA
    types (`llava_llama`, `llava_mistral`, `llava_mpt`, LLaVA-NeXT's `llava_qwen`, ...) exist only
    after the `llava` package registers them on import; v1.5 releases say `llava` with
    `LlavaLlamaForCausalLM`, which collides with transformers' own `llava`.

    ## Why is this bad?
    Outside the LLaVA codebase and its pinned transformers 4.37.2, `AutoConfig` raises
    `KeyError: 'llava_llama'`, `AutoTokenizer` raises `KeyError: 'LlavaMistralConfig'`, and
    serving stacks (vLLM, TGI, transformers pipelines) cannot load it. The projector lives apart in
    `non_lora_trainables.bin` and is lost by any tool that only merges the LoRA.

    ## Example
    `config.json`: `{"model_type": "llava_mistral", "mm_projector_type": "mlp2x_gelu", ...}` beside
    `adapter_model.safetensors` and `non_lora_trainables.bin`.

    ## How to fix
    `vlm-doctor merge OUTPUT -o OUTPUT-hf` (or `vlm-doctor check OUTPUT --fix`) folds the LoRA
    into the base, adds the trained projector and writes a transformers-native
    `LlavaForConditionalGeneration` checkpoint. Or keep using the LLaVA codebase with its pins.
    """

    code = "LLV009"
    name = "needs-llava-codebase"
    severity = Severity.INFO
    artifacts = LORA
    requires = ("LLV001",)

    def run(self, llava_config: dict[str, Any], path: str):
        model_type = llava_config.get("model_type")
        arch = ", ".join(str(a) for a in llava_config.get("architectures") or []) or "no architectures"
        yield self.finding(
            f"model_type {model_type!r} ({arch}) loads only through the LLaVA codebase's builder; transformers "
            "raises KeyError on it, and the projector sits apart in non_lora_trainables.bin",
            path=f"{path}/config.json", location=Location(key="model_type"), fix=_merge_fix(),
            hint=f"vlm-doctor merge {path} -o {path}-hf writes a transformers-native llava checkpoint "
                 "(LoRA folded, projector included).")

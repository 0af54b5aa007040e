"""``merge RUN --layout llava``: an original-LLaVA LoRA run merged into LLaVA's own layout, the
folder LLaVA's ``scripts/merge_lora_weights.py`` writes.

That script calls ``load_pretrained_model(run, base)`` (LoRA branch of ``llava/model/builder.py``):
``LlavaLlamaForCausalLM.from_pretrained(base, config=<run's config.json>)``, the
``non_lora_trainables.bin`` tensors loaded into it (``base_model.`` stripped, then ``model.`` when
keys start ``model.model.``), the PEFT LoRA merged (``merge_and_unload``), then ``save_pretrained``
of the model and the base's tokenizer. So the result holds the base LLM's tensors under their own
names (``model.layers.*``, ``lm_head.weight``) with the LoRA folded in, the trained projector as
``model.mm_projector.*``, and the run's config (``llava_llama`` / ``llava_mistral``) whose
``mm_vision_tower`` still names the CLIP tower: the builder loads that tower by name when the
merged folder is loaded, so no local copy is needed here. (The script also saves the CLIP weights
it loaded at the end, under ``model.vision_tower.vision_tower.*``; the builder ignores them on
load, since its vision tower is built with ``delay_load``, so they are left out.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.checks.llava.builder import CLASS_FOR_TYPE, builder_branch, expected_projector, model_name_from_path
from doctor.fixers.convert.plan import read_config
from doctor.fixers.merge.files import carry_files, copy_if_exists, dtype_name, resolve_folder, write_json
from doctor.fixers.merge.flows import read_non_lora
from doctor.fixers.merge.keys import NameIndex
from doctor.fixers.merge.lora import load_adapter
from doctor.fixers.merge.plan import Item, Job, attach, folder_tensors, items_from, replace
from doctor.fixers.merge.tensor_io import TensorReader, TensorRef, st_code

from doctor.errors import ArtifactError, UsageError
from doctor.files import NON_LORA_TRAINABLES

PROJECTOR = "model.mm_projector."
MODEL_TYPES = {"llava_llama": "llava_llama", "llava": "llava_llama", "llava_mistral": "llava_mistral"}


def plan_llava_layout(run: Path, base: str | Path | None, out: Path, reader: TensorReader) -> Job:
    """Plan the merge of an original-LLaVA LoRA run into LLaVA's own checkpoint layout."""
    orig = read_config(run)
    model_type = MODEL_TYPES.get(str(orig.get("model_type")))
    if model_type is None:
        raise UsageError(f"{run}/config.json: model_type {orig.get('model_type')!r}: --layout llava writes "
                         f"llava_llama or llava_mistral checkpoints ({', '.join(sorted(MODEL_TYPES))} runs)")
    _check_name(out, model_type)
    adapter = load_adapter(run, reader)
    base_dir = resolve_folder(base, adapter.config.get("base_model_name_or_path"), "base LLM", "--base")
    items = items_from(folder_tensors(base_dir, reader), lambda k: None if k.endswith(".inv_freq") else k)
    counts = attach(items, adapter, NameIndex([it.name for it in items]), "language-model")
    counts["non_lora"] = _add_non_lora(items, run, reader)
    _check_projector(items, orig, run)
    vocab = _vocab_rows(items)
    code_auto = _llm_dtype(items)

    def finish(folder: Path, code: str) -> None:
        carry_files(folder, base_dir, run)  # the script saves the base's tokenizer (use_fast=False)
        copy_if_exists(base_dir / "generation_config.json", folder / "generation_config.json")
        write_json(folder / "config.json", llava_config(orig, model_type, code, vocab))

    job = Job("llava-layout", items, {"base": str(base_dir), "adapter": str(run)}, finish, auto_dtype=code_auto,
              counts=counts)
    tower = orig.get("mm_vision_tower") or orig.get("vision_tower")
    job.notes.append(f"the vision tower is not copied: LLaVA's builder loads {tower!r} (mm_vision_tower) by name")
    if orig.get("mm_use_im_patch_token", True) or orig.get("mm_use_im_start_end", False):
        job.notes.append("mm_use_im_patch_token / mm_use_im_start_end: LLaVA's builder adds those tokens to the "
                         "tokenizer and resizes the embeddings when it loads the folder, as for the run")
    return job


def llava_config(orig: dict[str, Any], model_type: str, code: str, vocab: int | None) -> dict[str, Any]:
    """The run's config.json as ``LlavaConfig.save_pretrained`` writes it after the merge."""
    cfg = {k: v for k, v in orig.items() if k not in ("dtype",)}
    cfg["model_type"] = model_type
    cfg["architectures"] = [CLASS_FOR_TYPE[model_type]]
    cfg["torch_dtype"] = dtype_name(code) if code != "auto" else cfg.get("torch_dtype", "float16")
    cfg["use_cache"] = True
    if vocab is not None:
        cfg["vocab_size"] = vocab
    return cfg


def _check_name(out: Path, model_type: str) -> None:
    """LLaVA's builder routes on the folder NAME: a name it would load as something else is refused."""
    branch = builder_branch(str(out), has_model_base=False)
    want = CLASS_FOR_TYPE[model_type]
    if branch.name != "llava-full" or branch.model_class != want:
        need = "'llava'" + (" and 'mistral'" if model_type == "llava_mistral" else "")
        raise UsageError(f"-o {out}: LLaVA's load_pretrained_model routes on the folder name, and "
                         f"{model_name_from_path(str(out))!r} would load {branch.loads} instead of {want}; choose a "
                         f"name with {need} in it (e.g. {out.parent / ('llava-' + out.name)})")


def _add_non_lora(items: list[Item], run: Path, reader: TensorReader) -> int:
    """non_lora_trainables.bin as the builder's ``load_state_dict(strict=False)`` takes it: every key
    the model has replaces its tensor; the projector is added (a vicuna base has none)."""
    path = run / NON_LORA_TRAINABLES
    if not path.exists():
        raise ArtifactError(f"{path} is missing: it holds the trained projector (LLaVA writes it at the end of "
                            "training); without it the merged model's projector would be the base's or random")
    state = read_non_lora(path)
    pseudo = f"{path}#stripped"
    reader.hold(pseudo, state)
    by_name = {it.name: it for it in items}
    for key, tensor in state.items():
        ref = TensorRef(key, st_code(tensor.dtype), tuple(tensor.shape), pseudo)
        if key in by_name:
            replace(by_name[key], ref, path)
        elif key.startswith(PROJECTOR):
            item = Item(key, ref, ref.dtype, ref.shape, replaced=True)
            items.append(item)
            by_name[key] = item
        elif key.startswith("model.vision_tower."):
            raise ArtifactError(f"{path}: {key}: the run trained the vision tower, but LLaVA's builder loads the "
                                "tower by name and would drop it; merge into transformers' layout instead (without "
                                "--layout llava), which keeps it")
        else:
            raise ArtifactError(f"{path}: tensor {key} has no counterpart in the base LLM; load_state_dict("
                                "strict=False) would drop it")
    return len(state)


def _check_projector(items: list[Item], orig: dict[str, Any], run: Path) -> None:
    ptype = str(orig.get("mm_projector_type", "linear"))
    hidden, mm_hidden = orig.get("hidden_size"), orig.get("mm_hidden_size")
    want = expected_projector(ptype, hidden, mm_hidden) if isinstance(hidden, int) and isinstance(mm_hidden, int) else None
    have = {it.name[len(PROJECTOR):]: tuple(it.shape) for it in items if it.name.startswith(PROJECTOR)}
    if want is None:
        raise UsageError(f"{run}/config.json: mm_projector_type {ptype!r} with hidden_size {hidden!r} / "
                         f"mm_hidden_size {mm_hidden!r}: LLaVA's build_vision_projector cannot build it")
    if have != want:
        raise ArtifactError(f"{run}/non_lora_trainables.bin: projector tensors {sorted(have.items())} do not match "
                            f"the {ptype} projector the config describes ({sorted(want.items())})")


def _vocab_rows(items: list[Item]) -> int | None:
    for it in items:
        if it.name == "model.embed_tokens.weight" and it.shape:
            return int(it.shape[0])
    return None


def _llm_dtype(items: list[Item]) -> str | None:
    """"auto" writes one dtype, the base LLM's, as the script (fp16 model) does for the projector."""
    for it in items:
        if it.name == "model.embed_tokens.weight":
            return it.src.dtype
    return None

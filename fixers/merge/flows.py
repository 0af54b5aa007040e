"""The three inputs a merge accepts, each planned into a ``Job``:

- a PEFT adapter on a transformers model (llava, llava_next, mllama, or any model whose tensor
  names the adapter's module names reach): output keeps the base's tensor names and config;
- an original-LLaVA LoRA run (``finetune_lora.sh``): LoRA folded into the base LLM, the
  ``non_lora_trainables.bin`` tensors (the projector) put in, the CLIP tower added, and the
  whole written as transformers' llava (merge + convert in one pass);
- an XTuner release: ``llm_adapter/`` into the LLM, ``visual_encoder_adapter/`` into the CLIP
  tower, ``projector/`` renamed, as xtuner's ``convert_xtuner_weights_to_hf.py`` lays it out.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from doctor.fixers.convert.hf import hf_name, text_config_from_original
from doctor.fixers.convert.plan import (
    ANY_SPEC,
    add_vision_tower,
    check_projector_type,
    finish_job,
    has_tokenizer,
    make_spec,
    original_items,
    read_config,
    vision_items,
)
from doctor.fixers.merge.files import carry_files, copy_if_exists, merged_config, resolve_folder, write_json
from doctor.fixers.merge.keys import NameIndex, canonical, vision_canonical
from doctor.fixers.merge.lora import load_adapter
from doctor.fixers.merge.plan import Item, Job, attach, folder_tensors, items_from, replace
from doctor.fixers.merge.tensor_io import TensorReader, TensorRef, load_bin, st_code

from doctor.errors import ArtifactError, UsageError
from doctor.files import NON_LORA_TRAINABLES


def plan_peft(adapter_dir: Path, base: str | Path | None, reader: TensorReader) -> Job:
    adapter = load_adapter(adapter_dir, reader)
    base_dir = resolve_folder(base, adapter.config.get("base_model_name_or_path"), "base model", "--base")
    base_cfg = read_config(base_dir)
    if base_cfg.get("quantization_config"):
        raise UsageError(f"{base_dir}: the base is quantized ({base_cfg['quantization_config'].get('quant_method')}); "
                         "merging into packed weights loses the LoRA to rounding. Merge into the fp16/bf16 base.")
    refs = folder_tensors(base_dir, reader)
    items = items_from(refs)
    rows_before = {it.name: it.shape[0] for it in items if it.shape}
    index = NameIndex([r.key for r in refs], base_cfg.get("model_type"))
    counts = attach(items, adapter, index, "")
    vocab_delta = 0
    for it in items:
        if it.replaced and it.shape and it.shape[0] != rows_before[it.name] and "embed" in it.name:
            vocab_delta = it.shape[0] - rows_before[it.name]

    def finish(folder: Path, code: str) -> None:
        carry_files(folder, adapter_dir, base_dir)
        copy_if_exists(base_dir / "generation_config.json", folder / "generation_config.json")
        if base_cfg.get("auto_map"):  # remote-code models need their modules beside the config
            for py in base_dir.glob("*.py"):
                shutil.copyfile(py, folder / py.name)
        write_json(folder / "config.json", merged_config(base_cfg, None if code == "auto" else code, vocab_delta))

    notes = [f"the vocabulary grew by {vocab_delta} rows (embeddings saved with the adapter)"] if vocab_delta else []
    return Job("peft", items, {"base": str(base_dir), "adapter": str(adapter_dir)}, finish,
               notes=notes, counts=counts)


def plan_llava_lora(lora_dir: Path, base: str | Path | None, vision_tower: str | Path | None,
                    reader: TensorReader) -> Job:
    orig = read_config(lora_dir)
    text = text_config_from_original(orig, lora_dir)
    check_projector_type(orig, lora_dir)
    adapter = load_adapter(lora_dir, reader)
    base_dir = resolve_folder(base, adapter.config.get("base_model_name_or_path"), "base LLM", "--base")
    base_refs = folder_tensors(base_dir, reader)
    items = original_items(base_refs, base_dir, spec=None)
    counts = attach(items, adapter, NameIndex([it.src.key for it in items]), "language-model")
    counts["non_lora"] = _add_non_lora(items, lora_dir, reader)
    try:
        tower = add_vision_tower(items, orig, vision_tower, reader)
    except UsageError as e:
        raise UsageError(f"{e}; or keep LLaVA's own layout, whose builder loads the tower by name: "
                         "`vlm-doctor merge RUN --layout llava -o OUT`") from None
    tok_dir = lora_dir if has_tokenizer(lora_dir) else base_dir
    spec = make_spec(orig, text, items, tower, tok_dir, base_dir / "generation_config.json")
    job = finish_job("llava-lora", items, spec, reader, {"base": str(base_dir), "adapter": str(lora_dir)})
    if tower is not None:
        job.provenance["vision_tower"] = str(tower)
    job.counts = counts
    return job


def read_non_lora(path: Path) -> dict[str, Any]:
    """``non_lora_trainables.bin`` with its keys as LLaVA's builder strips them: ``base_model.``,
    then ``model.`` when keys start ``model.model.`` (shared by both merge layouts)."""
    state = load_bin(path)
    state = {(k[len("base_model."):] if k.startswith("base_model.") else k): v for k, v in state.items()}
    if any(k.startswith("model.model.") for k in state):
        state = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state.items()}
    return state


def _add_non_lora(items: list[Item], lora_dir: Path, reader: TensorReader) -> int:
    """``non_lora_trainables.bin``, read as LLaVA's builder does: strip ``base_model.``, then
    ``model.`` when keys start ``model.model.``; each tensor replaces the base's or (the
    projector, absent from a vicuna base) is added."""
    path = lora_dir / NON_LORA_TRAINABLES
    if not path.exists():
        return 0
    state = read_non_lora(path)
    pseudo = f"{path}#stripped"
    reader.hold(pseudo, state)
    by_name = {it.name: it for it in items}
    for key, tensor in state.items():
        ref = TensorRef(key, st_code(tensor.dtype), tuple(tensor.shape), pseudo)
        c = canonical(key)
        name = hf_name(c[0], c[1], ANY_SPEC) if c else None
        if name is None:
            raise ArtifactError(f"{path}: tensor {key} fits no part of a LLaVA model")
        if name in by_name:
            replace(by_name[name], ref, path)
        elif c[0] in ("projector", "image_newline"):
            item = Item(name, ref, ref.dtype, ref.shape, replaced=True)
            items.append(item)
            by_name[name] = item
        else:
            raise ArtifactError(f"{path}: tensor {key} has no counterpart in the base model")
    return len(state)


def plan_xtuner(release: Path, base: str | Path | None, vision_tower: str | Path | None,
                reader: TensorReader) -> Job:
    llm_ad, vis_ad, proj_dir = release / "llm_adapter", release / "visual_encoder_adapter", release / "projector"
    if not (proj_dir / "config.json").exists():
        raise UsageError(f"{release}: no projector/ folder with config.json; this is not an XTuner LLaVA release")
    proj_cfg = read_config(proj_dir)
    depth = int(proj_cfg.get("depth", 2))
    if depth != 2:
        raise UsageError(f"{proj_dir}: projector depth {depth}: transformers' llava has exactly two projector layers")
    llm_adapter = load_adapter(llm_ad, reader, "llm_adapter") if llm_ad.is_dir() else None
    recorded = llm_adapter.config.get("base_model_name_or_path") if llm_adapter else None
    if base is None and recorded is None and (release / "llm" / "config.json").exists():
        base = release / "llm"
    base_dir = resolve_folder(base, recorded, "base LLM", "--base")
    llm_cfg = read_config(base_dir)
    text = {k: v for k, v in llm_cfg.items() if k not in ("auto_map", "_name_or_path")}
    if text.get("model_type") not in ("llama", "mistral", "qwen2"):
        raise UsageError(f"{base_dir}: LLM model_type {text.get('model_type')!r} cannot be the text model of "
                         "transformers' llava without remote code; xtuner's own HF converter supports llama-style LLMs")
    llm_items = original_items(folder_tensors(base_dir, reader), base_dir, spec=None)
    counts = {}
    if llm_adapter is not None:
        counts["llm_modules"] = attach(llm_items, llm_adapter, NameIndex([i.src.key for i in llm_items]), "LLM")["modules"]
    vis_adapter = load_adapter(vis_ad, reader, "visual_encoder_adapter") if vis_ad.is_dir() else None
    v_recorded = vis_adapter.config.get("base_model_name_or_path") if vis_adapter else None
    tower = resolve_folder(vision_tower, v_recorded, "CLIP vision encoder", "--vision-tower")
    v_items = vision_items(tower, reader)
    if vis_adapter is not None:
        index = NameIndex([i.src.key for i in v_items], canon=vision_canonical)
        counts["vision_modules"] = attach(v_items, vis_adapter, index, "visual encoder")["modules"]
    p_items = []
    for r in folder_tensors(proj_dir, reader):
        m = re.fullmatch(r"model\.(\d+)\.(weight|bias)", r.key)
        if not m or int(m.group(1)) not in (0, 2):
            raise ArtifactError(f"{proj_dir}: unexpected projector tensor {r.key}")
        p_items.append(Item(f"multi_modal_projector.linear_{int(m.group(1)) // 2 + 1}.{m.group(2)}", r, r.dtype, r.shape))
    items = llm_items + v_items + p_items
    xtuner_like = {"mm_vision_select_layer": -2, "mm_vision_select_feature": "patch"}  # xtuner's LLaVAModel
    tok_dir = llm_ad if llm_ad.is_dir() and has_tokenizer(llm_ad) else base_dir
    spec = make_spec(xtuner_like, text, items, tower, tok_dir, base_dir / "generation_config.json",
                     projector_act=str(proj_cfg.get("hidden_act", "gelu")))
    prov = {"base": str(base_dir), "adapter": str(release), "vision_tower": str(tower)}
    job = finish_job("xtuner", items, spec, reader, prov)
    job.counts = counts
    return job


def detect_kind(path: Path) -> str:
    """peft | llava-lora | xtuner, from the folder's files (as discovery classifies them)."""
    from doctor.artifacts import classify

    art = classify(path)
    kinds = art.kinds if art is not None else frozenset()
    if "xtuner" in kinds:
        return "xtuner"
    if "llava-lora" in kinds:
        return "llava-lora"
    if "adapter" in kinds:
        return "peft"
    if (path / "config.json").exists() and "llava-original" in kinds:
        raise UsageError(f"{path} is a full original-LLaVA model, not an adapter: use `vlm-doctor convert {path}`")
    raise UsageError(f"{path}: not an adapter folder (no adapter_config.json), an original-LLaVA LoRA run or an "
                     "XTuner release")

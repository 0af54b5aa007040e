"""Planning a checkpoint in transformers' llava layout from original-LLaVA parts: the tensors
(renamed through the canonical layout), the vision tower from wherever it lives, and the
config/tokenizer/processor half (``doctor.fixers.convert.hf``). Shared by ``convert`` and by the merges of
an original-LLaVA LoRA run and of an XTuner release."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from doctor.fixers.convert.hf import (
    HfParts,
    LlavaSpec,
    hf_name,
    read_image_processor,
    text_config_from_original,
    vision_config_from,
)
from doctor.fixers.merge.files import resolve_folder
from doctor.fixers.merge.keys import canonical, vision_canonical
from doctor.fixers.merge.plan import Item, Job, RowInit, folder_tensors
from doctor.fixers.merge.tensor_io import TensorReader, TensorRef

from doctor.errors import ArtifactError, UsageError

_BUFFERS = re.compile(r"(\.inv_freq|\.position_ids|vision_resampler\..*)$")
_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}


def plan_convert(src: Path, vision_tower: str | Path | None, reader: TensorReader) -> Job:
    """An original-LLaVA model folder (``llava_llama``, ``llava_mistral``, the ``llava``
    collision) -> LlavaForConditionalGeneration / LlavaNextForConditionalGeneration."""
    orig = read_config(src)
    spec_text = text_config_from_original(orig, src)
    check_projector_type(orig, src)
    items = original_items(folder_tensors(src, reader), src, spec=None)
    tower = add_vision_tower(items, orig, vision_tower, reader)
    tok_dir = src if has_tokenizer(src) else None
    if tok_dir is None:
        raise UsageError(f"{src}: no tokenizer files (tokenizer.json / tokenizer.model); the converted model needs "
                         "them: copy them from the base LLM into the folder first")
    spec = make_spec(orig, spec_text, items, tower, tok_dir, src / "generation_config.json")
    job = finish_job("convert", items, spec, reader, {"source": str(src)})
    if tower is not None:
        job.provenance["vision_tower"] = str(tower)
    return job


def read_config(folder: Path) -> dict[str, Any]:
    p = folder / "config.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{folder}: no config.json (LLaVA writes it at the end of training; copy it from the "
                         "run's output folder)") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{p}: unreadable JSON ({e})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{p}: expected a JSON object")
    return data


def check_projector_type(orig: dict[str, Any], where: Path) -> None:
    ptype = orig.get("mm_projector_type", "linear")
    if ptype != "mlp2x_gelu":
        raise UsageError(f"{where}: mm_projector_type {ptype!r}: transformers' llava has only the two-layer GELU "
                         "projector (mlp2x_gelu); this model cannot be expressed as LlavaForConditionalGeneration. "
                         "Keep using the LLaVA codebase for it.")


def original_items(refs: list[TensorRef], where: Path, spec: LlavaSpec | None) -> list[Item]:
    """Items named in the transformers layout; buffers dropped; anything unrecognised refused."""
    items, unknown = [], []
    for r in refs:
        if _BUFFERS.search(r.key):
            continue
        c = canonical(r.key)
        if c is None:
            unknown.append(r.key)
            continue
        if c[0] == "image_newline":
            items.append(Item("image_newline", r, r.dtype, r.shape))  # dropped later unless llava_next
            continue
        name = hf_name(c[0], c[1], spec or ANY_SPEC)
        if name is None:
            unknown.append(r.key)
            continue
        items.append(Item(name, r, r.dtype, r.shape))
    if unknown:
        raise ArtifactError(f"{where}: {len(unknown)} tensor(s) fit no part of a LLaVA model "
                            f"(first: {', '.join(unknown[:3])}); this is not an original-LLaVA checkpoint")
    return items


# names every part, image_newline included (finish_job drops it for plain llava)
ANY_SPEC = LlavaSpec(text_config={}, vision_config={}, tokenizer_dir=Path("."), aspect="anyres", grid_pinpoints=[[1, 1]])


def add_vision_tower(items: list[Item], orig: dict[str, Any], vision_tower: str | Path | None,
                     reader: TensorReader) -> Path | None:
    """Add the CLIP tower's tensors when the checkpoint does not hold them; return its folder."""
    has_vision = any(it.name.startswith("vision_tower.") for it in items)
    if has_vision and vision_tower is None:
        recorded = orig.get("mm_vision_tower") or orig.get("vision_tower")
        p = Path(str(recorded)) if recorded else None
        return p if p is not None and (p / "config.json").exists() else None
    folder = resolve_folder(vision_tower, orig.get("mm_vision_tower") or orig.get("vision_tower"),
                            "CLIP vision tower", "--vision-tower")
    if has_vision:  # an explicit --vision-tower replaces the one in the checkpoint
        items[:] = [it for it in items if not it.name.startswith("vision_tower.")]
    items.extend(vision_items(folder, reader))
    return folder


def vision_items(folder: Path, reader: TensorReader) -> list[Item]:
    """A CLIPVisionModel folder (4.x ``vision_model.*`` or 5.x names) or a full CLIPModel
    (only its ``vision_model.*``), named ``vision_tower.vision_model.*``."""
    refs = folder_tensors(folder, reader)
    if any(r.key.startswith("vision_model.") for r in refs):
        refs = [r for r in refs if r.key.startswith("vision_model.")]
    out = []
    for r in refs:
        if _BUFFERS.search(r.key):
            continue
        out.append(Item("vision_tower.vision_model." + vision_canonical(r.key)[1], r, r.dtype, r.shape))
    return out


def has_tokenizer(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))


def make_spec(orig: dict[str, Any], text: dict[str, Any], items: list[Item], tower: Path | None, tok_dir: Path,
              generation_config: Path | None, projector_act: str = "gelu") -> LlavaSpec:
    vision_shapes = {it.name[len("vision_tower.vision_model."):]: it.shape for it in items
                     if it.name.startswith("vision_tower.vision_model.")}
    spec = LlavaSpec(
        text_config=text,
        vision_config=vision_config_from(tower, orig, vision_shapes),
        tokenizer_dir=tok_dir,
        select_layer=int(orig.get("mm_vision_select_layer", -2)),
        select_feature=str(orig.get("mm_vision_select_feature", "patch")),
        aspect=orig.get("image_aspect_ratio"),
        grid_pinpoints=orig.get("image_grid_pinpoints"),
        image_processor=read_image_processor(tower),
        projector_act=projector_act,
        generation_config=generation_config,
    )
    if orig.get("mm_use_im_start_end"):
        spec.notes.append("mm_use_im_start_end is true: transformers' processor does not insert <im_start>/<im_end> "
                          "around the image; write them in your prompts")
    if spec.next and orig.get("mm_patch_merge_type", "spatial_unpad") != "spatial_unpad":
        spec.notes.append(f"mm_patch_merge_type {orig.get('mm_patch_merge_type')!r}: transformers' llava_next "
                          "always unpads and appends image_newline (spatial_unpad); outputs may differ")
    return spec


def finish_job(kind: str, items: list[Item], spec: LlavaSpec, reader: TensorReader,
               provenance: dict[str, str]) -> Job:
    """Rename for llava vs llava_next, check the names against the model class, grow the
    vocabulary for ``<image>``, and pick the dtype "auto" means (the text model's)."""
    if not spec.next:
        items[:] = [it for it in items if it.name != "image_newline"]
    if not any(it.name.startswith("multi_modal_projector.") for it in items):
        raise ArtifactError("no projector weights: the result would have a randomly initialised projector. For a "
                            "LoRA run, non_lora_trainables.bin holds them (LLaVA writes it at the end of training)")
    hf = HfParts(spec, items)
    dropped = set(hf.check_names(items))
    notes = list(spec.notes)
    if dropped:
        items[:] = [it for it in items if it.name not in dropped]
        notes.append(f"dropped {len(dropped)} tensor(s) the transformers model does not have: "
                     + ", ".join(sorted(dropped)[:3]))
    rows = RowInit(hf.embed, reader) if hf.embed.grow_rows else None
    text_dtype = _DTYPES.get(str(spec.text_config.get("torch_dtype") or spec.text_config.get("dtype")))
    if text_dtype is None:
        counts = Counter(it.dtype for it in items if it.name.startswith("language_model."))
        text_dtype = counts.most_common(1)[0][0] if counts else "F16"

    def finish(folder: Path, code: str) -> None:
        from doctor.fixers.merge.files import dtype_name

        hf.save(folder, dtype_name(code))

    return Job(kind, items, provenance, finish, auto_dtype=text_dtype, rows=rows, notes=notes)

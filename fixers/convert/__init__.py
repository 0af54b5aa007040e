"""Convert an original-LLaVA checkpoint to transformers' llava / llava_next.

## What it does
Reads a checkpoint of the haotian-liu/LLaVA codebase (``model_type`` ``llava_llama``,
``llava_mistral``, or the v1.5 release's ``llava`` with ``LlavaLlamaForCausalLM``), renames its
tensors as transformers' ``convert_llava_weights_to_hf.py`` does (``model.layers`` ->
``language_model.model.layers``, ``model.mm_projector.0`` -> ``multi_modal_projector.linear_1``,
``model.vision_tower.vision_tower.*`` -> ``vision_tower.*``), adds the CLIP tower from
``--vision-tower`` when the checkpoint does not hold it, builds ``LlavaConfig`` (or
``LlavaNextConfig`` for ``image_aspect_ratio: anyres``) and a processor with a slow image
processor, adds ``<image>`` (and ``<pad>``) to the tokenizer and grows the embeddings and
lm_head with the converter's mean initialisation. Tensors stream one at a time. A config with
``image_aspect_ratio: pad`` gets ``LlavaImageProcessor(do_pad=True)`` (LLaVA's expand2square;
transformers >= 4.45), any other a ``CLIPImageProcessor``; both the slow (PIL) kind.

## Why is this bad?
transformers does not know ``llava_llama`` / ``llava_mistral`` (``KeyError: 'llava_mistral'``,
``KeyError: 'LlavaMistralConfig'`` at the tokenizer), and loads a v1.5 ``llava`` config with
every weight newly initialized: the model only runs inside the LLaVA codebase with its pinned
transformers 4.37.2.

## Example
``vlm-doctor convert checkpoints/llava-v1.5-7b --vision-tower models/clip-vit-large-patch14-336
-o llava-v1.5-7b-hf``

## How to fix
Run ``vlm-doctor convert SRC -o OUT``, or ``vlm-doctor check SRC --fix``, which writes
``SRC-hf`` beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.fixers.merge import DTYPES, MergeResult, _check_dtype, _guard_out, run_job

from doctor.errors import UsageError

if TYPE_CHECKING:
    from doctor.artifacts import Artifact
    from doctor.findings import Finding
    from doctor.report import FixOutcome
    from doctor.runner import Options


def convert(
    src: str | Path,
    out: str | Path,
    vision_tower: str | Path | None = None,
    dtype: str = "auto",
    max_shard_size: str | int = "5GB",
    force: bool = False,
    progress: Callable[..., Any] | None = None,
    check: bool = True,
) -> MergeResult:
    """Convert the original-LLaVA model folder ``src`` into a transformers checkpoint at ``out``."""
    from doctor.fixers.convert.plan import plan_convert
    from doctor.fixers.merge.tensor_io import TensorReader

    src = Path(src)
    if not (src / "config.json").exists():
        raise UsageError(f"{src}: not a model folder (no config.json)")
    _check_dtype(dtype)
    _guard_out(Path(out), [src, vision_tower], force)
    reader = TensorReader()
    job = plan_convert(src, vision_tower, reader)
    return run_job(job, Path(out), dtype, max_shard_size, force, progress, check, reader)


def apply(artifact: Artifact, findings: list[Finding], options: Options) -> FixOutcome:
    """The ``check --fix`` entry: convert into ``<artifact>-hf`` (or ``options.extra["convert_out"]``)."""
    from doctor.report import FixOutcome

    params: dict[str, Any] = {}
    for f in findings:
        if f.fix is not None:
            params.update(f.fix.params or {})
    src = Path(artifact.path)
    out = Path(options.extra.get("convert_out") or src.with_name(src.name + "-hf"))
    tower = options.extra.get("vision_tower") or params.get("vision_tower")
    if options.diff:
        return FixOutcome(fixer="convert", path=artifact.path, summary=f"convert -> {out}",
                          diff=f"would convert {src} to transformers' llava format and write {out}")
    result = convert(src, out, vision_tower=tower, dtype=options.dtype if options.dtype in DTYPES else "auto")
    summary = result.summary()
    if result.errors:
        summary += f"; the checkpoint doctor found {len(result.errors)} error(s) in it: run `vlm-doctor check {out}`"
    return FixOutcome(fixer="convert", path=artifact.path, written=[str(out)], summary=summary)

"""Fold a LoRA adapter into its base and write a transformers-native checkpoint.

## What it does
Streams the base checkpoint tensor by tensor, adds ``scale * B @ A`` (computed in fp32, cast
once) to every adapted weight, puts in the tensors saved in full beside the LoRA
(``modules_to_save``; the projector of an original-LLaVA run's ``non_lora_trainables.bin``),
and writes safetensors shards, an index, config.json and the tokenizer/processor files to a
new folder. An original-LLaVA LoRA run and an XTuner release come out as transformers'
``LlavaForConditionalGeneration``, loadable with the Auto classes and no ``--model-base``; with
``--layout llava`` an original-LLaVA LoRA run is written in LLaVA's own layout instead, as its
``scripts/merge_lora_weights.py`` writes it (the CLIP tower then stays a name, loaded by LLaVA's
builder).

## Why is this bad?
An adapter whose base does not load (``KeyError: 'LlavaMistralConfig'``), whose projector lives
in a separate pickle, or that is split in three folders (XTuner) cannot be served or evaluated
by standard tools; merging by hand with ``merge_and_unload()`` needs the whole model in memory
and silently drops LoRA modules whose names do not match the model (``Found missing adapter
keys``).

## Example
``vlm-doctor merge out/llava-v1.5-7b-lora --base models/vicuna-7b-v1.5 --vision-tower
models/clip-vit-large-patch14-336 -o merged/llava-v1.5-7b``

## How to fix
Run ``vlm-doctor merge ADAPTER -o OUT`` (``--base`` when the recorded base is not local), or
``vlm-doctor check ADAPTER --fix``, which writes ``ADAPTER-merged`` beside the adapter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.errors import UsageError

if TYPE_CHECKING:
    from doctor.artifacts import Artifact
    from doctor.findings import Finding
    from doctor.report import FixOutcome, Report
    from doctor.runner import Options

DTYPES = ("auto", "fp16", "bf16", "fp32")
LAYOUTS = ("transformers", "llava")


@dataclass
class MergeResult:
    """What a merge or conversion wrote, and the checkpoint doctor's report on it."""

    out: Path
    kind: str  # peft | llava-lora | llava-layout | xtuner | convert
    provenance: dict[str, str]
    tensors: int
    lora_modules: int
    replaced: int
    shards: list[str]
    bytes_written: int
    dtype: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    report: Report | None = None

    @property
    def errors(self) -> list[Finding]:
        """Errors the post-write check found in the output itself."""
        if self.report is None:
            return []
        from doctor.findings import Severity

        root = str(self.out)
        return [f for f in self.report.findings if f.severity is Severity.ERROR and f.path.startswith(root)]

    def summary(self) -> str:
        what = {"peft": "merged", "llava-lora": "merged and converted", "llava-layout": "merged (LLaVA layout)",
                "xtuner": "consolidated", "convert": "converted"}[self.kind]
        parts = [f"{what} {self.tensors} tensors"]
        if self.lora_modules:
            parts.append(f"{self.lora_modules} LoRA modules folded")
        if self.replaced:
            parts.append(f"{self.replaced} tensors replaced by trained copies")
        return (f"{', '.join(parts)} -> {self.out} ({len(self.shards)} shard(s), "
                f"{self.bytes_written / 1e9:.2f} GB, {self.dtype}, {self.seconds:.1f}s)")


def merge(
    adapter: str | Path,
    base: str | Path | None = None,
    out: str | Path | None = None,
    dtype: str = "auto",
    max_shard_size: str | int = "5GB",
    force: bool = False,
    progress: Callable[..., Any] | None = None,
    vision_tower: str | Path | None = None,
    check: bool = True,
    layout: str = "transformers",
) -> MergeResult:
    """Merge ``adapter`` (a PEFT adapter folder, an original-LLaVA LoRA run or an XTuner
    release) into ``base`` and write a transformers-native checkpoint to ``out``; with
    ``layout="llava"``, an original-LLaVA LoRA run is written in LLaVA's own layout instead, as
    its ``scripts/merge_lora_weights.py`` does (``doctor.fixers.merge.llava_layout``)."""
    from doctor.fixers.merge.flows import detect_kind, plan_llava_lora, plan_peft, plan_xtuner
    from doctor.fixers.merge.tensor_io import TensorReader

    adapter = Path(adapter)
    if out is None:
        raise UsageError("merge needs an output folder (-o OUT)")
    if not adapter.is_dir():
        raise UsageError(f"{adapter}: no such folder")
    _check_dtype(dtype)
    if layout not in LAYOUTS:
        raise UsageError(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    kind = detect_kind(adapter)
    if layout == "llava" and kind != "llava-lora":
        raise UsageError(f"{adapter}: --layout llava writes LLaVA's own layout from an original-LLaVA LoRA run "
                         f"(finetune_lora.sh output); this is a {kind} input: drop --layout llava")
    if layout == "llava" and vision_tower is not None:
        raise UsageError("--vision-tower has no use with --layout llava: LLaVA's builder loads the tower named in "
                         "config.json (mm_vision_tower) itself")
    _guard_out(Path(out), [adapter, base, vision_tower], force)
    reader = TensorReader()
    if layout == "llava":
        from doctor.fixers.merge.llava_layout import plan_llava_layout

        job = plan_llava_layout(adapter, base, Path(out), reader)
    elif kind == "peft":
        job = plan_peft(adapter, base, reader)
    elif kind == "llava-lora":
        job = plan_llava_lora(adapter, base, vision_tower, reader)
    else:
        job = plan_xtuner(adapter, base, vision_tower, reader)
    return run_job(job, Path(out), dtype, max_shard_size, force, progress, check, reader)


def run_job(job: Any, out: Path, dtype: str, max_shard_size: str | int, force: bool,
            progress: Callable[..., Any] | None, check: bool, reader: Any) -> MergeResult:
    """Write a planned job atomically: shards into a temporary sibling of ``out``, the small
    files after, config.json last, renamed into place only when everything is written."""
    from doctor.fixers.merge.plan import check_disk, set_dtypes, shards_for, write_items
    from doctor.fixers.merge.tensor_io import DTYPE_ARG, parse_size

    from doctor import __version__
    from doctor.atomic import atomic_dir
    from doctor.runner import _no_progress

    started = time.perf_counter()
    code = DTYPE_ARG.get(dtype, "auto")
    if code == "auto" and job.auto_dtype:
        code = job.auto_dtype
    set_dtypes(job.items, code)
    shards = shards_for(job.items, parse_size(max_shard_size))
    check_disk(out, shards)
    metadata = {"format": "pt", **{k: str(v) for k, v in job.provenance.items()}, "vlm-doctor": __version__}
    with atomic_dir(out, force=force) as tmp:
        write_items(tmp, job.items, shards, metadata, reader, progress or _no_progress, job.rows)
        job.finish(tmp, code)
    result = MergeResult(
        out=out, kind=job.kind, provenance=job.provenance, tensors=len(job.items),
        lora_modules=sum(len(it.loras) for it in job.items), replaced=sum(it.replaced for it in job.items),
        shards=[s.filename for s in shards], bytes_written=sum(p.stat().st_size for p in out.iterdir() if p.is_file()),
        dtype=_dtype_label(code, job.items),
        seconds=time.perf_counter() - started, notes=list(job.notes),
    )
    if check:
        import doctor

        # the written checkpoint only: the environment's own findings are not about OUT
        result.report = doctor.check([str(out)], ignore=["ENV"])
    return result


def _dtype_label(code: str, items: list[Any]) -> str:
    if code != "auto":
        return {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}.get(code, code)
    kinds = sorted({it.dtype for it in items})
    return "/".join(kinds) + " (as the base)"


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")


def _guard_out(out: Path, inputs: list[str | Path | None], force: bool) -> None:
    """OUT is never an input, never inside one, never holds one (``--force`` replaces it)."""
    if out.exists() and not force:
        raise UsageError(f"{out} already exists: choose another -o or pass --force to replace it")
    o = out.resolve()
    for i in inputs:
        if i is None:
            continue
        p = Path(i).resolve()
        if o == p or p in o.parents or o in p.parents:
            raise UsageError(f"-o {out} overlaps the input {i}; inputs are never modified: choose a separate folder")


def apply(artifact: Artifact, findings: list[Finding], options: Options) -> FixOutcome:
    """The ``check --fix`` entry: merge the adapter into ``<adapter>-merged`` (or
    ``options.extra["merge_out"]``), with the base from ``--base`` or the finding's params."""
    from doctor.report import FixOutcome

    params: dict[str, Any] = {}
    for f in findings:
        if f.fix is not None:
            params.update(f.fix.params or {})
    src = Path(artifact.path)
    out = Path(options.extra.get("merge_out") or src.with_name(src.name + "-merged"))
    base = options.base or params.get("base")
    tower = options.extra.get("vision_tower") or params.get("vision_tower")
    if options.diff:
        return FixOutcome(fixer="merge", path=artifact.path,
                          diff=f"would merge {src} into {base or 'its recorded base'} and write {out}",
                          summary=f"merge -> {out}")
    result = merge(src, base=base, out=out, dtype=options.dtype if options.dtype in DTYPES else "auto",
                   vision_tower=tower, check=True)
    summary = result.summary()
    if result.errors:
        summary += f"; the checkpoint doctor found {len(result.errors)} error(s) in it: run `vlm-doctor check {out}`"
    return FixOutcome(fixer="merge", path=artifact.path, written=[str(out)], summary=summary)

"""``vlm-doctor demo DIR``: build a small workspace with planted problems and run the whole
pipeline on it: check, fix (repair the dataset, merge the original-LLaVA output into a
transformers-native checkpoint), merge the trained adapter, and the inference sanity pass on
both merged models.

Everything is built locally with ``doctor.testing`` (tiny random models, real images); nothing is
downloaded. The demo ends with a table of the planted problems and the finding that caught each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from doctor.errors import UsageError

DATASET_PROBLEMS = ("missing-image", "bad-role", "no-image-token", "truncated-image", "path-escape")


@dataclass(frozen=True)
class Planted:
    what: str
    where: str  # path relative to the workspace
    codes: tuple[str, ...]  # any finding with one of these codes on ``where`` counts as caught


PLANTED = (
    Planted("image file missing", "data/train.json", ("DAT201",)),
    Planted("OpenAI roles (user/assistant) LLaVA does not know", "data/train.json", ("DAT101",)),
    Planted("image set but no <image> placeholder", "data/train.json", ("DAT110",)),
    Planted("truncated JPEG (opens, fails to decode)", "data/train.json", ("DAT207",)),
    Planted("image path leaving the image folder", "data/train.json", ("DAT209",)),
    Planted("adapter never trained (all-zero lora_B)", "adapters/llava-lora-untrained", ("ADP020",)),
    Planted("checkpoint without projector weights", "models/llava-no-projector", ("CKP104",)),
    Planted("original-LLaVA output transformers cannot load", "llava-original/llava-v1.5-tiny-lora", ("LLV009",)),
    Planted("Qwen2.5-VL processor merging patches unlike the model", "models/qwen2.5-vl-bad-processor", ("CKP503",)),
)


def build_workspace(root: Path, log: Callable[[str], None]) -> dict[str, Path]:
    """Write the demo artifacts under ``root``; return their paths by role."""
    from doctor.testing import make_llava_dataset, make_llava_model, make_llava_original_lora, make_lora_adapter

    paths: dict[str, Path] = {}
    log("dataset: LLaVA JSON with real PNG/JPEG images and 5 planted problems")
    paths["data"] = make_llava_dataset(root / "data", n=6, problems=DATASET_PROBLEMS, name="train")
    log("model: tiny transformers llava (CLIP + Llama, random weights)")
    base = make_llava_model(root / "models" / "llava-tiny", family="llava")
    paths["base"] = base.path
    log("adapter: LoRA trained a few steps on the language model")
    paths["adapter"] = make_lora_adapter(base, root / "adapters" / "llava-lora")
    log("adapter: LoRA saved before any training step (all-zero lora_B)")
    paths["untrained"] = make_lora_adapter(base, root / "adapters" / "llava-lora-untrained", zero_lora_b=True)
    log("model: the same llava saved without its projector")
    paths["no_projector"] = make_llava_model(root / "models" / "llava-no-projector", family="llava",
                                             drop_tensors=("multi_modal_projector",)).path
    from doctor.testing.qwen import make_qwen_model

    log("model: tiny Qwen2.5-VL (transformers' qwen2_5_vl, random weights, the hub's file layout)")
    paths["qwen"] = make_qwen_model(root / "models" / "qwen2.5-vl-tiny").path
    log("model: the same Qwen2.5-VL whose preprocessor_config.json says merge_size 1 (the model merges 2x2)")
    paths["qwen_bad"] = make_qwen_model(root / "models" / "qwen2.5-vl-bad-processor",
                                        processor_overrides={"merge_size": 1}).path
    log("original LLaVA: finetune_lora.sh output (llava_llama config, non_lora_trainables.bin)")
    info = make_llava_original_lora(root / "llava-original")
    paths["original"] = info.path
    return paths


def run_demo(target: str, *, force: bool = False, color: bool = False, progress: bool = False,
             echo: Callable[[str], None] = print) -> int:
    from doctor import __version__
    from doctor.reporters import OutputFormat, RenderContext, render
    from doctor.runner import Options, run
    from doctor.selection import Selection

    root = Path(target)
    if root.exists() and any(root.iterdir()) and not force:
        raise UsageError(f"{root} exists and is not empty: choose a new folder or pass --force")
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    echo(f"Building the demo workspace in {root} ...")
    paths = build_workspace(root, lambda m: echo(f"  - {m}"))
    echo(f"  built in {time.perf_counter() - started:.1f} s\n")

    echo("Step 1: vlm-doctor check " + str(root) + "\n")
    options = Options(fix=True, progress=progress, images="decode", image_folder=str(paths["data"].parent / "images"))
    report = run([str(root)], options, Selection())
    echo(render(report, OutputFormat.FULL, RenderContext(version=__version__, color=color)))

    echo("Step 2: the planted problems and what caught them\n")
    missed = _scoreboard(report, root, echo)

    merged = [Path(w) for fix in report.fixes if fix.fixer == "merge" and not fix.error for w in fix.written]
    echo("\nStep 3: vlm-doctor merge " + f"{paths['adapter']} -o {paths['adapter']}-merged\n")
    from doctor.fixers.merge import merge

    result = merge(paths["adapter"], out=Path(f"{paths['adapter']}-merged"), check=True)
    echo("  " + result.summary() + (f"; {len(result.errors)} error(s) in the output" if result.errors else "; the checkpoint doctor finds it clean"))
    for model in merged:
        echo(f"\nStep 4: inference sanity pass on {model}\n")
        _sanity(model, echo, color)
    echo(f"\nStep 5: vlm-doctor sanity {result.out} --adapter {paths['adapter']} --base {paths['base']}\n")
    _sanity_with_adapter(result.out, paths["adapter"], paths["base"], echo, color)
    echo(f"Demo finished in {time.perf_counter() - started:.1f} s. Try: vlm-doctor rule {PLANTED[0].codes[0]}")
    return 1 if missed else 0


def _scoreboard(report, root: Path, echo: Callable[[str], None]) -> int:
    missed = 0
    for p in PLANTED:
        where = str(root / p.where)
        hits = [f for f in report.findings if f.code in p.codes and (f.path == where or f.path.startswith(where + "/"))]
        mark = f"caught by {hits[0].code} {hits[0].name}" if hits else "MISSED"
        missed += not hits
        echo(f"  {'✔' if hits else '✘'} {p.what:<58} {mark}")
    return missed


def _sanity(model: Path, echo: Callable[[str], None], color: bool) -> None:
    from doctor import __version__
    from doctor.reporters import OutputFormat, RenderContext, render
    from doctor.runner import Options, run
    from doctor.selection import Selection

    report = run([str(model)], Options(sanity=True, device="auto"), Selection.from_lists(select=["SAN", "CKP"]))
    echo(render(report, OutputFormat.FULL, RenderContext(version=__version__, color=color)))


def _sanity_with_adapter(merged: Path, adapter: Path, base: Path, echo: Callable[[str], None], color: bool) -> None:
    """Stage 5 proper: base + adapter (peft) against the merged checkpoint we wrote."""
    import io

    from rich.console import Console

    from doctor.reporters.full import sanity_table
    from doctor.sanity import run_sanity

    result = run_sanity(str(merged), adapter=str(adapter), base=str(base), device="auto")
    buf = io.StringIO()
    Console(file=buf, force_terminal=color, width=100).print(sanity_table(str(merged), [st.to_dict() for st in result.stages]))
    echo(buf.getvalue())

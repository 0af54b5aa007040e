"""``vlm-doctor convert SRC -o OUT``: an original-LLaVA checkpoint to transformers' llava."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

HELP = "convert an original-LLaVA checkpoint (llava_llama, llava_mistral) to transformers' llava"
DESCRIPTION = """\
Convert SRC, a checkpoint of the haotian-liu/LLaVA codebase (model_type llava_llama,
llava_mistral, or the v1.5 release's "llava" with LlavaLlamaForCausalLM), into transformers'
LlavaForConditionalGeneration (LlavaNextForConditionalGeneration when the config says
image_aspect_ratio: anyres with image_grid_pinpoints). Tensors are renamed as in transformers'
convert_llava_weights_to_hf.py, the config and a processor (slow image processor) are built,
<image> is added to the tokenizer and the embeddings grow to match. This is the cure for
KeyError: 'llava_mistral' / 'LlavaMistralConfig' and for a v1.5 'llava' config that
transformers loads with every weight newly initialized."""
EPILOG = """\
examples:
  vlm-doctor convert checkpoints/llava-v1.5-7b -o llava-v1.5-7b-hf
  vlm-doctor convert llava-v1.6-mistral-7b --vision-tower models/clip-vit-large-patch14-336 -o next-hf
  vlm-doctor convert checkpoints/llava-med --dtype bf16 --max-shard-size 2GB -o llava-med-hf

The CLIP vision tower comes from the checkpoint when it holds it, else from --vision-tower (or
config.json's mm_vision_tower when that is a local folder).
exit codes: 0 written and clean; 1 written, but the checkpoint doctor found findings at or above
--fail-on in it;
2 usage or input error (nothing written)."""


REPORT_OPTIONS = "long"  # -o is OUT here: the report file is --output-file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="original-LLaVA model folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder to create (must not exist, unless --force)")
    p.add_argument("--vision-tower", metavar="DIR", help="local CLIP folder (e.g. clip-vit-large-patch14-336)")
    p.add_argument("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                   help="dtype of the written float tensors (default auto: the config's torch_dtype)")
    p.add_argument("--max-shard-size", default="5GB", metavar="SIZE", help="largest shard file (default 5GB)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT (only after the new one is complete)")
    p.add_argument("--no-check", action="store_true", help="skip the checkpoint doctor on OUT")


def run(args: argparse.Namespace) -> int:
    from doctor.fixers.convert import convert

    from doctor.options import ReportSettings

    settings = ReportSettings.from_args(args)
    with wrap_os_errors():
        result = convert(args.src, args.output, vision_tower=args.vision_tower, dtype=args.dtype,
                         max_shard_size=args.max_shard_size, force=args.force, check=not args.no_check,
                         progress=settings.progress_factory())
    return report_result(result, settings, "convert")


@contextlib.contextmanager
def wrap_os_errors() -> Iterator[None]:
    """A full disk or a permission problem is an input/output error with a message, not a crash."""
    from doctor.errors import ArtifactError

    try:
        yield
    except OSError as e:
        raise ArtifactError(f"{e.filename or ''}: {e.strerror or e}; nothing was written").with_traceback(None) from None


def report_result(result: Any, settings: Any, section: str) -> int:
    """Report what merge / convert wrote (the ``merge`` / ``convert`` section) with the checkpoint
    doctor's findings on OUT, in any format; exit 1 when those reach --fail-on."""
    from doctor.report import Report

    report = result.report.select(settings.selection()) if result.report is not None else Report()
    report.set_section(section, {
        "out": str(result.out), "kind": result.kind, "written": True, "checked": result.report is not None,
        "provenance": dict(result.provenance), "tensors": result.tensors, "lora_modules": result.lora_modules,
        "replaced": result.replaced, "shards": list(result.shards), "bytes": result.bytes_written,
        "dtype": result.dtype, "seconds": round(result.seconds, 3), "notes": list(result.notes),
        "summary": result.summary(),
    })

    def full(rep: Any, ctx: Any) -> str:
        from doctor.reporters import OutputFormat, render

        lines = [f"vlm-doctor: {result.summary()}\n"] + [f"  note: {note}\n" for note in result.notes]
        if result.report is not None:
            lines.append(f"\nCheckpoint doctor on {result.out}:\n")
            lines.append(render(rep, OutputFormat.FULL, ctx))
        return "".join(lines)

    from doctor.reporters import emit

    code = emit(report, settings, full=full)
    if code == 1:
        print(f"vlm-doctor: the written checkpoint {result.out} has findings at or above --fail-on "
              f"({settings.fail_on})", file=sys.stderr)
    return code

"""``vlm-doctor sanity MODEL``: load the model, show it an image, let it answer."""

from __future__ import annotations

import argparse
import os

HELP = "load a model (or base + adapter), show it an image and check that it answers"
DESCRIPTION = """\
The inference sanity pass, in six stages, each timed with its peak memory (GPU memory on CUDA):

  1 load            transformers' Auto classes; missing, unexpected and mismatched weights
  2 forward         one forward pass with an image: finite logits and finite weights, and one
                    image per shape the processor treats apart (llava_next: every pinpoint
                    ratio, very tall, very wide; mllama: every tile arrangement; Qwen2-VL:
                    portrait, square, landscape)
  3 generate        greedy generation: not empty, not one token repeated, decodes to text
  4 image-matters   logits with the image vs a blank and a noise image must differ
  5 adapter-vs-merged  with an adapter: base + adapter (peft) and the merged model agree
  6 probe           with --probe: POPE-style yes/no questions, accuracy

MODEL is a transformers model folder, or a PEFT adapter folder (its base from --base or the
adapter's local base_model_name_or_path). With --adapter, MODEL is the base; with --adapter and
--base, MODEL is the merged model that stage 5 compares with base + adapter. A folder without
processor files (most merge and training outputs) still runs: the processor comes from
--processor DIR, the base, or config.json's vision settings and the tokenizer (stage 1 says which)."""
EPILOG = """\
examples:
  vlm-doctor sanity merged/llava-1.5-7b-ft
  vlm-doctor sanity out/llava-lora --base models/llava-1.5-7b-hf       adapter on its base
  vlm-doctor sanity merged/ --adapter out/llava-lora --base models/llava-1.5-7b-hf
  vlm-doctor sanity models/llava-v1.6-mistral-7b-hf --image photo.jpg --prompt "Describe it."
  vlm-doctor sanity merged/ --load-4bit                       bitsandbytes, CUDA only
  vlm-doctor sanity merged/ --processor models/llava-1.5-7b-hf   merged/ has no processor files
  vlm-doctor sanity merged/ --probe pope.jsonl --output-format json
  vlm-doctor sanity merged/ --ignore SAN003 --output-format junit -o sanity.xml

probe file (JSON Lines, image paths relative to the file):
  {"image": "img/0001.jpg", "question": "Is there a dog in the image?", "answer": "yes"}

Without --image the pass uses a picture shipped with vlm-doctor (four coloured shapes).
exit codes: 0 nothing at or above --fail-on (a failed stage is an error), 1 findings, 2 usage error."""


REPORT_OPTIONS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model folder, or a PEFT adapter folder")
    g = p.add_argument_group("what to run")
    g.add_argument("--adapter", metavar="DIR", help="PEFT adapter to apply on MODEL (or, with --base, that MODEL merged)")
    g.add_argument("--base", metavar="DIR", help="base model folder for the adapter (without --adapter: where a "
                   "missing processor or tokenizer is taken from)")
    g.add_argument("--processor", metavar="DIR", help="take the image processor (and a missing tokenizer) from DIR; "
                   "default: MODEL's own, else the base's, else built from config.json")
    g.add_argument("--image", metavar="FILE", help="image to show the model (default: the shipped picture)")
    g.add_argument("--prompt", metavar="TEXT", help="question to ask (default: 'What is shown in this image?')")
    g.add_argument("--max-new-tokens", type=int, default=16, metavar="N", help="tokens to generate in stage 3 (default: 16)")
    g.add_argument("--probe", metavar="FILE", help="JSONL of yes/no questions about images (stage 6)")
    g.add_argument("--probe-min-accuracy", type=float, metavar="X", help="stage 6 fails below this accuracy (default: 0.6)")
    g.add_argument("--timeout", type=float, default=120.0, metavar="S", help="wall-time limit for generation and for the probe (default: 120)")
    d = p.add_argument_group("device")
    d.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu (default: auto)")
    d.add_argument("--dtype", default="auto", choices=("auto", "fp16", "bf16", "fp32"),
                   help="auto: bf16 on GPUs that support it, else fp16; fp32 on CPU")
    q = d.add_mutually_exclusive_group()
    q.add_argument("--load-4bit", action="store_true", help="quantize to 4-bit nf4 with bitsandbytes (CUDA only)")
    q.add_argument("--load-8bit", action="store_true", help="quantize to 8-bit with bitsandbytes (CUDA only)")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub from a sanity pass
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from doctor.artifacts import Artifact
    from doctor.options import Options, ReportSettings
    from doctor.reporters import emit
    from doctor.runner import run as run_checks
    from doctor.sanity import run_sanity

    settings = ReportSettings.from_args(args)
    result = run_sanity(
        args.model, adapter=args.adapter, base=args.base, image=args.image, prompt=args.prompt,
        device=args.device, dtype=args.dtype, load_4bit=args.load_4bit, load_8bit=args.load_8bit,
        max_new_tokens=args.max_new_tokens, probe=args.probe, timeout=args.timeout,
        probe_min_accuracy=args.probe_min_accuracy, processor=args.processor,
    )
    # The stages become the SAN checks' results and findings, like any other check's: the runner
    # runs SAN001-SAN006 (and the environment checks) on the pass, with the shared selection.
    options = Options(base=args.base, sanity=True, device=args.device, dtype=args.dtype, progress=settings.progress)
    options.extra["sanity_results"] = {args.model: result}
    report = run_checks([args.model], options, settings.selection(), progress=settings.progress_factory(),
                        artifacts=[Artifact(args.model, frozenset({"sanity"}), {})])
    if "sanity" not in report.sections:  # every SAN check deselected: the stage table still shows
        report.add_sanity(result)
    return emit(report, settings)

"""``vlm-doctor check PATH...``: discover artifacts, run the checks, report, optionally fix."""

from __future__ import annotations

import argparse

from doctor.errors import UsageError
from doctor.options import add_video_options

HELP = "check datasets, adapters, checkpoints and the installed libraries"
DESCRIPTION = """\
Check each PATH: a dataset (.json array or .jsonl), a PEFT adapter folder, a transformers model
folder, an original-LLaVA training output, an XTuner release, a training run folder, a weights
file, or a folder holding several of these (walked). The installed library versions are always
checked against what the artifacts need."""
EPILOG = """\
examples:
  vlm-doctor check data/llava_v1_5_mix665k.json --image-folder data/images
  vlm-doctor check data/train.json --tokenizer models/vicuna-7b --images decode --decode-sample 5
  vlm-doctor check out/llava-v1.5-7b-lora --base models/vicuna-7b-v1.5
  vlm-doctor check out/ --select ADP,CKP --ignore CKP301 --fail-on warning
  vlm-doctor check out/llava-lora --fix            write repaired copies beside the inputs
  vlm-doctor check merged/ --deep --sanity         read every tensor, then run the model
  vlm-doctor check . --output-format sarif --output-file vlm-doctor.sarif

selectors: a code (ADP010), a prefix (ADP, ADP0) or ALL; the most specific of --select and
--ignore wins. Configuration: [tool.vlm-doctor] in pyproject.toml or vlm-doctor.toml (keys as
the long options: select, ignore, fail-on, image-folder, ...), found upward from the current
folder; command-line options override it.
exit codes: 0 nothing at or above --fail-on, 1 findings, 2 usage/config/internal error."""

REPORT_OPTIONS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to check")
    g = p.add_argument_group("what to check")
    g.add_argument("--base", metavar="DIR", help="base model folder for adapter checks (default: the adapter's base_model_name_or_path when it is local or cached)")
    g.add_argument("--image-folder", metavar="DIR", help="root for relative image paths (LLaVA's --image_folder; default: the dataset's folder); an fsspec URL (s3://, gs://, hf://) reads them from object storage")
    g.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder for the token-budget checks")
    g.add_argument("--model", metavar="DIR", help="model folder whose vision config sets the image-token count")
    g.add_argument("--vision-tower", metavar="DIR", help="local CLIP folder for --fix merges/conversions of original-LLaVA and XTuner outputs whose recorded tower is not local")
    g.add_argument("--max-length", type=int, metavar="N", help="token budget per record (default: the model's or tokenizer's model_max_length, else 2048)")
    add_video_options(p.add_argument_group("video sampling (the trainer's; for the token budget of datasets with videos)"))
    g.add_argument("--images", choices=("none", "exists", "header", "decode"), help="how far to check images (default: header)")
    g.add_argument("--decode-sample", type=float, metavar="PERCENT", help="with --images decode, decode this percent of images (default: 100)")
    g.add_argument("--engine", choices=("local", "ray"), help="where the dataset pass runs: this process (default) or a Ray cluster (pip install 'vlm-doctor[ray]')")
    g.add_argument("--ray-address", metavar="ADDR", help="with --engine ray, the cluster to join (default: start Ray on this machine)")
    g.add_argument("--deep", action="store_true", default=None, help="read every tensor value (NaN, Inf, all-zero) even above the default budget of about one second of scanning")
    g.add_argument("--sanity", action="store_true", help="after the static checks, load each model and run the inference sanity pass")
    g.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"), help="device for --sanity (default: auto)")
    g.add_argument("--dtype", default="auto", choices=("auto", "fp16", "bf16", "fp32"), help="dtype for --sanity (default: auto)")
    q = g.add_mutually_exclusive_group()
    q.add_argument("--load-4bit", action="store_true", help="--sanity loads the model in 4-bit (bitsandbytes, CUDA only)")
    q.add_argument("--load-8bit", action="store_true", help="--sanity loads the model in 8-bit (bitsandbytes, CUDA only)")
    g.add_argument("--image", metavar="IMG", help="image for --sanity (default: a picture shipped with vlm-doctor)")
    g.add_argument("--prompt", metavar="TEXT", help="prompt for --sanity")
    g.add_argument("--probe", metavar="FILE", help="POPE-style yes/no questions (JSONL) for --sanity")
    g.add_argument("--max-new-tokens", type=int, default=16, metavar="N", help="tokens to generate in --sanity (default: 16)")
    g.add_argument("--timeout", type=float, default=120.0, metavar="S", help="generation time limit in seconds for --sanity (default: 120)")
    g.add_argument("-j", "--jobs", type=int, metavar="N", help="worker threads for image checks (default: one per core)")
    t = p.add_argument_group("target environment (judge adapters for another install than this one)")
    t.add_argument("--peft-version", metavar="VER", help="judge adapter_config.json for this peft release (e.g. 0.13.2) instead of the installed one")
    t.add_argument("--transformers-version", metavar="VER", help="judge adapter key layouts for this transformers release (e.g. 4.37.2)")
    f = p.add_argument_group("fixes")
    f.add_argument("--fix", action="store_true", help="apply safe fixes; each writes a NEW artifact beside its input")
    f.add_argument("--unsafe-fixes", action="store_true", help="also apply unsafe fixes (may change behaviour, e.g. drop records)")
    f.add_argument("--diff", action="store_true", help="show what --fix would change, write nothing")


def run(args: argparse.Namespace) -> int:
    from doctor.options import Options, ReportSettings, video_options
    from doctor.reporters import emit
    from doctor.runner import run as run_checks

    settings = ReportSettings.from_args(args)

    def pick(name: str, default=None):
        return settings.value(args, name, default)

    options = Options(
        base=pick("base"), image_folder=pick("image-folder"), tokenizer=pick("tokenizer"), model=pick("model"),
        images=pick("images", "header"), decode_sample=float(pick("decode-sample", 100.0)),
        deep=bool(pick("deep", False)), jobs=int(pick("jobs", 0)), sanity=args.sanity, device=args.device,
        max_length=pick("max-length"), engine=pick("engine", "local"), ray_address=pick("ray-address"),
        **video_options(pick),
        dtype=args.dtype, fix=args.fix, unsafe_fixes=args.unsafe_fixes, diff=args.diff, progress=settings.progress,
        extra={"sanity_image": args.image, "sanity_prompt": args.prompt, "sanity_probe": args.probe,
               "sanity_max_new_tokens": args.max_new_tokens, "sanity_timeout": args.timeout,
               "sanity_load_4bit": args.load_4bit, "sanity_load_8bit": args.load_8bit,
               **({"vision_tower": args.vision_tower} if args.vision_tower else {}),
               **({"peft_version": args.peft_version} if args.peft_version else {}),
               **({"transformers_version": args.transformers_version} if args.transformers_version else {})},
    )
    if options.engine == "ray":  # Ray missing or its cluster unreachable: a usage error now, not mid-run
        from doctor.checks.dataset.distributed import ray_ready

        ray_ready(options)
    if not 0 < options.decode_sample <= 100:
        raise UsageError(f"--decode-sample must be in (0, 100], got {options.decode_sample}")
    report = run_checks(args.paths, options, settings.selection(), progress=settings.progress_factory())
    return emit(report, settings)

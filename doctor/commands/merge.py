"""``vlm-doctor merge ADAPTER -o OUT``: fold a LoRA adapter into its base and write a
transformers-native checkpoint, then run the checkpoint doctor on it."""

from __future__ import annotations

import argparse

HELP = "merge a LoRA adapter (PEFT, original LLaVA, XTuner) into a transformers checkpoint"
DESCRIPTION = """\
Merge ADAPTER into its base model and write a transformers-native checkpoint to OUT:
safetensors shards + index, a config.json the Auto classes load, tokenizer and processor files.
ADAPTER is one of:
  - a PEFT adapter folder (adapter_config.json) on a transformers model (llava, llava_next,
    mllama, qwen2_vl, qwen2_5_vl, qwen3_vl, gemma3, or a text model); the output keeps the
    base's tensor names and config;
  - an original-LLaVA LoRA run (finetune_lora.sh: adapter + config.json + non_lora_trainables.bin);
    the projector from non_lora_trainables.bin goes in and the result is transformers' llava
    (merge and convert in one pass; the CLIP tower comes from --vision-tower or the base);
  - an XTuner release (llm_adapter/, visual_encoder_adapter/, projector/), consolidated into
    one transformers llava checkpoint.
The merge streams one tensor at a time (W + scale * B @ A in fp32, cast once), writes into a
temporary folder beside OUT and renames it at the end: an interrupted merge leaves no
finished-looking OUT. Inputs are never modified."""
EPILOG = """\
examples:
  vlm-doctor merge out/llava-1.5-7b-hf-lora -o merged/llava-lora
  vlm-doctor merge out/qlora-adapter --base models/llava-1.5-7b-hf -o merged/m --dtype bf16
  vlm-doctor merge checkpoints/llava-v1.5-7b-lora --base models/vicuna-7b-v1.5 \\
      --vision-tower models/clip-vit-large-patch14-336 -o llava-v1.5-7b-merged-hf
  vlm-doctor merge checkpoints/llava-v1.5-7b-lora --base models/vicuna-7b-v1.5 --layout llava \\
      -o llava-v1.5-7b-merged
  vlm-doctor merge llava-internlm2-7b --base models/llm --vision-tower models/clip -o xtuner-hf

exit codes: 0 written and the checkpoint doctor found nothing at or above --fail-on in it;
1 written, but it did; 2 usage or input error (nothing written)."""


REPORT_OPTIONS = "long"  # -o is OUT here: the report file is --output-file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter", metavar="ADAPTER", help="adapter folder, original-LLaVA LoRA run or XTuner release")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder to create (must not exist, unless --force)")
    p.add_argument("--base", metavar="DIR", help="base model folder (default: the adapter's base_model_name_or_path when local or cached)")
    p.add_argument("--vision-tower", metavar="DIR", help="local CLIP folder, for original-LLaVA runs and XTuner releases whose base has no vision tower")
    p.add_argument("--layout", choices=("transformers", "llava"), default="transformers",
                   help="output layout of an original-LLaVA LoRA run: transformers' llava (default), or LLaVA's own "
                        "(what its merge_lora_weights.py writes; the CLIP tower is loaded by name, none needed here)")
    p.add_argument("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                   help="dtype of the written float tensors (default auto: the base's; for conversions the LLM's)")
    p.add_argument("--max-shard-size", default="5GB", metavar="SIZE", help="largest shard file (default 5GB; e.g. 2GB, 500MiB)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT (only after the new one is complete)")
    p.add_argument("--no-check", action="store_true", help="skip the checkpoint doctor on OUT")


def run(args: argparse.Namespace) -> int:
    from doctor.fixers.merge import merge

    from doctor.commands.convert import report_result, wrap_os_errors
    from doctor.options import ReportSettings

    settings = ReportSettings.from_args(args)
    with wrap_os_errors():
        result = merge(args.adapter, base=args.base, out=args.output, dtype=args.dtype,
                       max_shard_size=args.max_shard_size, force=args.force, vision_tower=args.vision_tower,
                       progress=settings.progress_factory(), check=not args.no_check, layout=args.layout)
    return report_result(result, settings, "merge")

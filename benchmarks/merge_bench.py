"""Streaming LoRA merge vs peft ``merge_and_unload()`` + ``save_pretrained()``: peak RSS and
wall time on a LLaVA-1.5-shaped checkpoint with a rank-128 adapter on q, k, v, o, gate, up, down.

    python benchmarks/merge_bench.py                     # 0.5b, 1b (fits a 24 GiB laptop)
    python benchmarks/merge_bench.py --sizes 0.5b 1b 2b
    python benchmarks/merge_bench.py --sizes 7b          # a bigger machine (~45 GB disk, 32+ GB RAM)

The base is written in transformers' on-disk llava layout (``language_model.model.*``,
``vision_tower.vision_model.*``, ``multi_modal_projector.*``) with the real LLaVA-1.5 shapes
scaled in depth/width for the smaller sizes (the CLIP-L/14-336 tower and the 32064-row
vocabulary stay real). Every byte is random bf16 data (normal, std 0.02), not sparse zeros,
so both sides really read and write it. Each side runs in its own subprocess on the same
files with a warm page cache (the base is read once before each run), ``--repeat`` times
alternating, and the table keeps each side's fastest run (the machine may be shared); peak RSS is that
process's high-water mark (``VmHWM``; file pages mapped by mmap count, as ``/usr/bin/time``
shows them).
Everything written goes to a temporary folder that is deleted at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # the LLM part; vision tower and projector are LLaVA-1.5's at every size
    "0.5b": dict(hidden=1536, intermediate=4096, layers=16, heads=12),
    "1b": dict(hidden=2048, intermediate=5504, layers=16, heads=16),
    "2b": dict(hidden=2048, intermediate=5504, layers=32, heads=16),
    "7b": dict(hidden=4096, intermediate=11008, layers=32, heads=32),
}
VOCAB = 32064
RANK, ALPHA = 128, 256
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Peak RSS of this process: VmHWM of its own memory map. (ru_maxrss is not used: Linux carries
# the parent's high-water mark into a child across fork/vfork + exec, which would add this
# script's own footprint to both sides.)
HWM = """
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""
OURS = HWM + """
import json, sys, time
t = time.perf_counter()
from doctor.fixers.merge import merge
merge(sys.argv[1], base=sys.argv[2], out=sys.argv[3], check=False)
print(json.dumps({"work": time.perf_counter() - t,
                  "rss": hwm()}))
"""
PEFT = HWM + """
import json, sys, time
t = time.perf_counter()
import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText
model = AutoModelForImageTextToText.from_pretrained(sys.argv[2], dtype=torch.bfloat16)
model = PeftModel.from_pretrained(model, sys.argv[1]).merge_and_unload()
model.save_pretrained(sys.argv[3])
print(json.dumps({"work": time.perf_counter() - t,
                  "rss": hwm()}))
"""
IMPORTS = HWM + """
import json
import torch, transformers, peft
print(json.dumps({"work": 0.0, "rss": hwm()}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["0.5b", "1b"], choices=list(SIZES))
    parser.add_argument("--workdir", default=None, help="where to build the inputs (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--skip-peft", action="store_true", help="measure vlm-doctor only (a machine too small for peft)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs per side, alternating; the table shows the fastest (default 2)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="merge-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        floor = run_child(IMPORTS, [])
        for size in args.sizes:
            rows.append(bench(root / size, size, args.skip_peft, max(1, args.repeat)))
            if not args.keep:
                shutil.rmtree(root / size, ignore_errors=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print_table(rows, floor)
    return 0


def bench(folder: Path, size: str, skip_peft: bool, repeat: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    base, adapter = folder / "base", folder / "adapter"
    t = time.perf_counter()
    params, base_bytes = write_base(base, **SIZES[size])
    lora_bytes = write_adapter(adapter, base, **SIZES[size])
    print(f"[{size}] wrote {base_bytes / 1e9:.2f} GB base + {lora_bytes / 1e9:.2f} GB adapter "
          f"in {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)
    row = {"size": size, "params": params, "base_gb": base_bytes / 1e9}
    sides = [("ours", OURS)] + ([] if skip_peft else [("peft", PEFT)])
    for attempt in range(repeat):
        for name, code in sides:
            out = folder / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            warm(base)
            got = run_child(code, [str(adapter), str(base), str(out)])
            print(f"[{size}] {name} #{attempt + 1}: {got}", file=sys.stderr, flush=True)
            best = row.get(name)
            if best is None or got["wall"] < best["wall"]:
                row[name] = got
    row["delta"] = compare(folder / "out-ours", base)  # what the LoRA changed
    if not skip_peft:
        row["max_diff"] = compare(folder / "out-ours", folder / "out-peft")
    return row


def run_child(code: str, argv: list[str]) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def warm(folder: Path) -> None:
    for p in sorted(folder.iterdir()):
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass


def layout(hidden: int, intermediate: int, layers: int, heads: int) -> tuple[object, list[tuple[str, tuple[int, ...]]]]:
    """LLaVA-1.5's config at this size and its tensors, named as transformers saves them."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from doctor.layouts import HF_LEGACY, map_name

    text = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096,
                       pad_token_id=32001, tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_index=32000, dtype="bfloat16")
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    tensors = [(map_name(n, HF_LEGACY, vision_prefix="vision_tower.vision_model.") or n, tuple(p.shape))
               for n, p in model.state_dict().items()]
    return config, tensors


def write_base(folder: Path, **size: int) -> tuple[int, int]:
    import torch

    from doctor.fixers.merge.tensor_io import plan_shards, write_index, write_shard

    config, tensors = layout(**size)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    shards = plan_shards([(n, "BF16", s) for n, s in tensors], 5 * 10**9)
    gen = torch.Generator().manual_seed(0)

    def produce(name: str) -> torch.Tensor:
        shape = dict(tensors)[name]
        if name.endswith("norm.weight") or "layernorm" in name or "layer_norm" in name:
            return torch.ones(shape, dtype=torch.bfloat16)
        return torch.randn(shape, generator=gen, dtype=torch.bfloat16) * 0.02

    for shard in shards:
        write_shard(folder / shard.filename, shard, {"format": "pt"}, produce)
    write_index(folder, shards)
    return sum(_numel(s) for _, s in tensors), sum(s.nbytes for s in shards)


def write_adapter(folder: Path, base: Path, hidden: int, intermediate: int, layers: int, heads: int) -> int:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(1)
    dims = {"q_proj": (hidden, hidden), "k_proj": (hidden, hidden), "v_proj": (hidden, hidden),
            "o_proj": (hidden, hidden), "gate_proj": (hidden, intermediate), "up_proj": (hidden, intermediate),
            "down_proj": (intermediate, hidden)}
    state = {}
    for i in range(layers):
        for t in TARGETS:
            fan_in, fan_out = dims[t]
            part = "self_attn" if t in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            key = f"base_model.model.model.language_model.layers.{i}.{part}.{t}"
            state[f"{key}.lora_A.weight"] = (torch.randn(RANK, fan_in, generator=gen) / fan_in**0.5).to(torch.bfloat16)
            state[f"{key}.lora_B.weight"] = (torch.randn(fan_out, RANK, generator=gen) * 1e-2).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": None, "r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0,
              "target_modules": r".*language_model.*\.(" + "|".join(TARGETS) + ")", "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True, "base_model_name_or_path": str(base)}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return sum(v.numel() * 2 for v in state.values())


def compare(ours: Path, theirs: Path) -> float:
    """Largest |difference| between the layer-0 q_proj weights of two checkpoints (two merges:
    peft adds the delta in bf16 after rounding it, vlm-doctor adds in fp32 and rounds once; a
    merge and its base: the size of the LoRA's change)."""
    from safetensors import safe_open

    from doctor.fixers.merge.keys import canonical

    def find(folder: Path, want: tuple[str, str]):
        index = folder / "model.safetensors.index.json"
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() \
            else ["model.safetensors"]
        for f in files:
            with safe_open(str(folder / f), "pt") as h:
                for k in h.keys():
                    if canonical(k) == want:
                        return h.get_tensor(k).float()
        raise KeyError(want)

    want = ("language", "layers.0.self_attn.q_proj.weight")
    return float((find(ours, want) - find(theirs, want)).abs().max())


def print_table(rows: list[dict], floor: dict) -> None:
    gb = 1 << 30
    print(f"\nMerge of a rank-{RANK} LoRA (q,k,v,o,gate,up,down) into a LLaVA-1.5-shaped bf16 checkpoint; "
          f"python + torch + transformers + peft imported alone: {floor['rss'] / gb:.2f} GiB RSS\n")
    print("| size | params | base | vlm-doctor wall | peft wall | wall ratio (work) | vlm-doctor peak RSS | "
          "peft peak RSS | RSS ratio | LoRA delta | ours - peft |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ours, peft = r["ours"], r.get("peft")
        if peft is None:
            print(f"| {r['size']} | {r['params'] / 1e9:.2f}B | {r['base_gb']:.1f} GB | {ours['wall']:.1f} s | - | - | "
                  f"{ours['rss'] / gb:.2f} GiB | - | - | {r['delta']:.1e} | - |")
            continue
        print(f"| {r['size']} | {r['params'] / 1e9:.2f}B | {r['base_gb']:.1f} GB | {ours['wall']:.1f} s | "
              f"{peft['wall']:.1f} s | {ours['wall'] / peft['wall']:.2f}x ({ours['work'] / peft['work']:.2f}x) | "
              f"{ours['rss'] / gb:.2f} GiB | {peft['rss'] / gb:.2f} GiB | {ours['rss'] / peft['rss']:.2f}x | "
              f"{r['delta']:.1e} | {r['max_diff']:.1e} |")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    raise SystemExit(main())

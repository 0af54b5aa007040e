"""Adapter check on a 7B-shaped base: vlm-doctor's ADP checks vs what peft does to load it.

Builds, as SPARSE files (header + truncate, no data written), a base with the real
llava-hf/llava-1.5-7b-hf layout (transformers 4.36+ names, fp16, 3 shards + index: Vicuna-7B
32 x 4096 / 11008, vocab 32064, CLIP ViT-L/14-336, projector 1024 -> 4096) and a rank-128 adapter
on every language-model Linear (LLaVA's finetune_lora.sh recipe). Then times, best of N, warm
page cache:

- vlm-doctor: ``doctor.check(adapter, base=base, select=["ADP"])``, all checks, and the header
  checks alone (without the NaN / zero-``lora_B`` / delta scans ADP019-ADP021); torch is not imported;
- peft, config + weights only: ``LoraConfig.from_pretrained`` + ``safetensors.torch.load_file``;
- peft, full: ``PeftModel.from_pretrained`` on a meta-device ``LlavaForConditionalGeneration``
  (``low_cpu_mem_usage=True``), i.e. without the base's 14 GB of weights.

Usage: ``python benchmarks/adapter_bench.py [--repeat 3] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import warnings
from pathlib import Path

HIDDEN, INTER, LAYERS, VOCAB = 4096, 11008, 32, 32064
V_HIDDEN, V_INTER, V_LAYERS, V_POS = 1024, 4096, 24, 577
RANK = 128
LM_LINEARS = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
              "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
              "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}


def base_tensors() -> dict[str, tuple[int, ...]]:
    t: dict[str, tuple[int, ...]] = {"language_model.model.embed_tokens.weight": (VOCAB, HIDDEN),
                                     "language_model.model.norm.weight": (HIDDEN,),
                                     "language_model.lm_head.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"language_model.model.layers.{i}."
        t.update({p + k + ".weight": s for k, s in LM_LINEARS.items()})
        t[p + "input_layernorm.weight"] = (HIDDEN,)
        t[p + "post_attention_layernorm.weight"] = (HIDDEN,)
    v = "vision_tower.vision_model."
    t.update({v + "embeddings.class_embedding": (V_HIDDEN,), v + "embeddings.patch_embedding.weight": (V_HIDDEN, 3, 14, 14),
              v + "embeddings.position_embedding.weight": (V_POS, V_HIDDEN), v + "pre_layrnorm.weight": (V_HIDDEN,),
              v + "pre_layrnorm.bias": (V_HIDDEN,), v + "post_layernorm.weight": (V_HIDDEN,),
              v + "post_layernorm.bias": (V_HIDDEN,)})
    for i in range(V_LAYERS):
        p = f"{v}encoder.layers.{i}."
        for k in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[p + f"self_attn.{k}.weight"], t[p + f"self_attn.{k}.bias"] = (V_HIDDEN, V_HIDDEN), (V_HIDDEN,)
        t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"] = (V_INTER, V_HIDDEN), (V_INTER,)
        t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"] = (V_HIDDEN, V_INTER), (V_HIDDEN,)
        for n in ("layer_norm1", "layer_norm2"):
            t[p + f"{n}.weight"], t[p + f"{n}.bias"] = (V_HIDDEN,), (V_HIDDEN,)
    t.update({"multi_modal_projector.linear_1.weight": (HIDDEN, V_HIDDEN), "multi_modal_projector.linear_1.bias": (HIDDEN,),
              "multi_modal_projector.linear_2.weight": (HIDDEN, HIDDEN), "multi_modal_projector.linear_2.bias": (HIDDEN,)})
    return t


def write_sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "F16") -> int:
    """A valid safetensors file whose data region is a hole: header written, file truncated."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        f.truncate(8 + len(blob) + offset)
    return 8 + len(blob) + offset


def build(root: Path) -> tuple[Path, Path, int, int]:
    base, adapter = root / "llava-1.5-7b-hf", root / "llava-7b-lora-r128"
    base.mkdir(parents=True)
    adapter.mkdir()
    shapes = base_tensors()
    names = list(shapes)
    shards = [names[i::3] for i in range(3)]
    weight_map, total = {}, 0
    for i, part in enumerate(shards, 1):
        fname = f"model-0000{i}-of-00003.safetensors"
        total += write_sparse_safetensors(base / fname, {n: shapes[n] for n in part})
        weight_map.update({n: fname for n in part})
    (base / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (base / "config.json").write_text(json.dumps({
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "image_token_index": 32000,
        "projector_hidden_act": "gelu", "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
        "text_config": {"model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": INTER,
                        "num_hidden_layers": LAYERS, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "vocab_size": VOCAB, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": V_HIDDEN, "intermediate_size": V_INTER,
                          "num_hidden_layers": V_LAYERS, "num_attention_heads": 16, "image_size": 336,
                          "patch_size": 14, "projection_dim": 768}}))
    lora: dict[str, tuple[int, ...]] = {}
    for i in range(LAYERS):
        for k, (out_f, in_f) in LM_LINEARS.items():  # saved with transformers 5 names
            p = f"base_model.model.model.language_model.layers.{i}.{k}."
            lora[p + "lora_A.weight"], lora[p + "lora_B.weight"] = (RANK, in_f), (out_f, RANK)
    adapter_bytes = write_sparse_safetensors(adapter / "adapter_model.safetensors", lora)
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": 256, "lora_dropout": 0.05,
        "bias": "none", "base_model_name_or_path": str(base),
        "target_modules": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"}))
    return base, adapter, total, adapter_bytes


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="build into this folder and keep it")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="adapter-bench-"))
    try:
        if not (root / "llava-1.5-7b-hf").exists():
            base, adapter, base_bytes, adapter_bytes = build(root)
        else:
            base, adapter = root / "llava-1.5-7b-hf", root / "llava-7b-lora-r128"
            base_bytes = sum(p.stat().st_size for p in base.glob("*.safetensors"))
            adapter_bytes = (adapter / "adapter_model.safetensors").stat().st_size
        return run(base, adapter, base_bytes, adapter_bytes, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def run(base: Path, adapter: Path, base_bytes: int, adapter_bytes: int, repeat: int) -> int:
    import doctor

    def ours(select: list[str], ignore: list[str] | None = None) -> None:
        r = doctor.check(str(adapter), base=str(base), select=select, ignore=ignore or [])
        assert not r.internal_errors, r.internal_errors

    t0 = time.perf_counter()
    ours(["ADP"])
    first = time.perf_counter() - t0
    ours_all = best(lambda: ours(["ADP"]), repeat)
    ours_headers = best(lambda: ours(["ADP"], ["ADP019", "ADP020", "ADP021"]), repeat)
    report = doctor.check(str(adapter), base=str(base), select=["ADP"])
    ran = sum(r.status.value != "skip" for r in report.results)

    import safetensors.torch
    import torch
    import transformers
    from peft import LoraConfig, PeftModel

    def peft_light() -> None:
        LoraConfig.from_pretrained(str(adapter))
        safetensors.torch.load_file(str(adapter / "adapter_model.safetensors"))

    def peft_meta() -> None:
        config = transformers.AutoConfig.from_pretrained(base)
        with torch.device("meta"):
            model = transformers.LlavaForConditionalGeneration(config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            PeftModel.from_pretrained(model, str(adapter), low_cpu_mem_usage=True, torch_device="cpu")

    light = best(peft_light, repeat)
    try:
        meta = best(peft_meta, repeat)
        meta_cell = f"{meta:.3f} s"
        meta_ratio = f"{meta / ours_all:.1f}x"
    except Exception as e:  # noqa: BLE001 - report, do not hide
        meta_cell, meta_ratio = f"failed: {type(e).__name__}: {str(e)[:80]}", "-"
    gib = 1 << 30
    print(f"base: {base_bytes / gib:.1f} GiB in 3 sparse shards ({len(base_tensors())} tensors); adapter: rank {RANK}, "
          f"{LAYERS * len(LM_LINEARS)} modules, {adapter_bytes / gib:.2f} GiB; {ran} ADP checks ran; best of {repeat}")
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{os.cpu_count()} CPUs")
    print()
    print("| what | time | / vlm-doctor (all ADP) |")
    print("|---|---|---|")
    print(f"| vlm-doctor, all ADP checks (NaN / zero-B scan included) | {ours_all:.3f} s | 1.0x |")
    print(f"| vlm-doctor, header checks only (no ADP019-021) | {ours_headers:.3f} s | {ours_headers / ours_all:.2f}x |")
    print(f"| vlm-doctor, first call in the process (family import, cold caches) | {first:.3f} s | {first / ours_all:.1f}x |")
    print(f"| peft: LoraConfig.from_pretrained + safetensors load_file (lazy mmap) | {light:.3f} s | {light / ours_all:.2f}x |")
    print(f"| peft: PeftModel.from_pretrained on a meta-device llava | {meta_cell} | {meta_ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

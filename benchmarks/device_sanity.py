"""The sanity pass for real on a device: tiny llava / llava_next / mllama and a ~1.4B random llava.

    python benchmarks/device_sanity.py --device cuda --modes fp16,bf16,4bit --out $OUT
    python benchmarks/device_sanity.py --device cpu --modes fp32,4bit --big small   # a dry run here

Builds the models (tiny ones with ``doctor.testing``; the big one in llava-1.5's real layout:
CLIP ViT-L/14-336 + a 22-layer 2048-wide Llama (TinyLlama's shape), vocabulary 32064, random
weights, fp16 on disk, with a random-B LoRA adapter), then runs ``vlm-doctor sanity`` on each in
each mode through ``doctor.cli.main`` (the console entry, in-process so torch is imported once;
one run goes through a real ``python -m doctor`` subprocess). Prints one table row per run and
stage, compares each run with what it should give (planted defects must fail their stage), and
writes every run's JSON to ``OUT/device_sanity.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "doctor" / "data" / "pope_example.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--modes", default="fp16,bf16,4bit")
    ap.add_argument("--big", choices=("full", "small", "none"), default="full")
    ap.add_argument("--work", default="/tmp/device_sanity")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/device_sanity_out"))
    a = ap.parse_args()
    work, out = Path(a.work), Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    modes = a.modes.split(",")
    t0 = time.perf_counter()
    models = build_tiny(work)
    if a.big != "none":
        models.update(build_big(work, a.device, a.big))
    print(f"[built {len(models)} model folders in {time.perf_counter() - t0:.1f}s]", flush=True)

    runs = plan_runs(models, modes, a.device)
    results = []
    for name, model, args, expect in runs:
        results.append(run_one(name, model, [*args, "--device", a.device], expect, work))
    results.append(run_subprocess(models, modes, a.device, work))
    (out / "device_sanity.json").write_text(json.dumps(results, indent=1, default=str))
    summary(results)
    bad = [r for r in results if r["verdict"] != "as expected"]
    print(f"\n{len(results) - len(bad)}/{len(results)} runs as expected; total {time.perf_counter() - t0:.1f}s")
    return 1 if bad else 0


def mode_args(mode: str) -> list[str]:
    return ["--load-4bit"] if mode == "4bit" else ["--load-8bit"] if mode == "8bit" else ["--dtype", mode]


def plan_runs(m: dict[str, Path], modes: list[str], device: str) -> list[tuple[str, Path, list[str], dict[int, str]]]:
    """(name, model, extra args, expected statuses by stage). Quantized modes skip stage 5, and skip
    everything off CUDA."""
    runs = []
    clean = {1: "pass", 2: "pass", 3: "pass", 4: "pass"}
    skipped = {n: "skip" for n in range(1, 7)}
    for mode in modes:
        quant_off_gpu = mode in ("4bit", "8bit") and not device.startswith("cuda")
        for fam in ("llava", "llava_next", "mllama"):
            runs.append((f"{fam}", m[fam], mode_args(mode), skipped if quant_off_gpu else clean))
    first = modes[0]
    runs.append(("llava+adapter", m["llava"], [*mode_args(first), "--adapter", str(m["adapter"]), "--probe",
                                              str(PROBE), "--probe-min-accuracy", "0"],
                 {**clean, 5: "pass", 6: "pass"}))
    runs.append(("llava merged vs base+adapter", m["merged"], [*mode_args(first), "--adapter", str(m["adapter"]),
                                                              "--base", str(m["llava"])], {**clean, 5: "pass"}))
    runs.append(("llava no projector", m["noproj"], mode_args(first), {1: "fail", 2: "skip"}))
    runs.append(("llava zero projector", m["zeroproj"], mode_args(first), {1: "pass", 4: "fail"}))
    runs.append(("mllama untrained gates", m["mllama_cut"], mode_args(first), {1: "pass", 4: "fail"}))
    runs.append(("llava nan adapter", m["llava"], [*mode_args(first), "--adapter", str(m["nan_adapter"])],
                 {1: "pass", 2: "fail"}))
    if "big" in m:
        for mode in modes:
            quant = mode in ("4bit", "8bit")
            args = mode_args(mode) + ([] if quant else ["--adapter", str(m["big_adapter"])])
            expect = skipped if quant and not device.startswith("cuda") else {**clean, **({} if quant else {5: "pass"})}
            runs.append((f"big llava {m['big_params']}", m["big"], args, expect))
    return runs


def cli(argv: list[str]) -> int:
    """``vlm-doctor sanity ...`` through the subcommand module itself (what doctor/cli.py dispatches
    to), so a half-edited sibling command cannot take the device run down."""
    from doctor.commands import sanity
    from doctor.errors import DoctorError
    from doctor.options import add_report_options

    parser = argparse.ArgumentParser(prog="vlm-doctor sanity")
    sanity.add_arguments(parser)
    add_report_options(parser)  # the shared report options, as doctor/cli.py adds them
    try:
        return sanity.run(parser.parse_args(argv[1:]))
    except DoctorError as e:
        print(f"vlm-doctor: error: {e}", file=sys.stderr)
        return e.exit_code


def run_one(name: str, model: Path, args: list[str], expect: dict[int, str], work: Path) -> dict:
    js = work / "run.json"
    argv = ["sanity", str(model), *args, "--max-new-tokens", "16", "--timeout", "60"]
    started = time.perf_counter()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli([*argv, "--output-format", "json", "-o", str(js)])
    wall = time.perf_counter() - started
    doc = json.loads(js.read_text()) if js.exists() and rc in (0, 1) else {}
    doc = (doc.get("sanity", {}).get("models") or [{}])[0]  # the report's sanity section (docs/report.md)
    js.unlink(missing_ok=True)
    return _record(name, argv, rc, wall, doc, expect)


def run_subprocess(m: dict[str, Path], modes: list[str], device: str, work: Path) -> dict:
    """One run through a fresh interpreter: the real ``python -m doctor`` entry, with the table output."""
    model = m.get("big", m["llava"])
    argv = ["sanity", str(model), *mode_args(modes[0]), "--device", device, "--max-new-tokens", "16"]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "doctor", *argv], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    print(f"\n$ vlm-doctor {' '.join(argv)}   (subprocess, rc={proc.returncode}, {wall:.1f}s wall)\n{proc.stdout}"
          f"{proc.stderr[-2000:]}", flush=True)
    expect = {1: "pass", 2: "pass", 3: "pass", 4: "pass"}
    verdict = "as expected" if proc.returncode == 0 and "FAILED" not in proc.stdout else "UNEXPECTED"
    return {"name": "subprocess table", "argv": argv, "rc": proc.returncode, "wall_s": round(wall, 2),
            "stages": [], "expect": expect, "verdict": verdict, "text": proc.stdout}


def _record(name: str, argv: list[str], rc: int, wall: float, doc: dict, expect: dict[int, str]) -> dict:
    stages = doc.get("stages", [])
    got = {s["stage"]: s["status"] for s in stages}
    ok = bool(stages) and all(got.get(k) == v or (v == "pass" and got.get(k) == "warn") for k, v in expect.items())
    rec = {"name": name, "argv": argv, "rc": rc, "wall_s": round(wall, 2), "device": doc.get("device"),
           "dtype": doc.get("dtype"), "quantization": doc.get("quantization"), "environment": doc.get("environment"),
           "stages": stages, "expect": expect, "verdict": "as expected" if ok else "UNEXPECTED"}
    mode = doc.get("quantization") or doc.get("dtype")
    print(f"\n== {name} [{mode} on {doc.get('device')}] rc={rc} {wall:.1f}s  -> {rec['verdict']}", flush=True)
    for s in stages:
        mem = "" if s["peak_memory_bytes"] is None else f"{s['peak_memory_bytes'] / 2**20:9.1f} MiB {s['memory_kind']}"
        print(f"  {s['stage']} {s['name']:<18} {s['status']:<5} {s['seconds']:7.2f}s {mem:<20} {s['detail'][:110]}")
        for f in s["findings"]:
            print(f"      {f['code']} {f['severity']}: {f['message'][:220]}")
    return rec


def summary(results: list[dict]) -> None:
    print("\n== summary: run | mode | rc | stage statuses 1-6 | load s | forward s | generate s | peak GPU/RSS MiB")
    for r in results:
        st = {s["stage"]: s for s in r["stages"]}
        marks = " ".join(st[n]["status"][0].upper() if n in st else "-" for n in range(1, 7))
        peak = max((s["peak_memory_bytes"] or 0 for s in r["stages"]), default=0) / 2**20
        times = [f"{st[n]['seconds']:.2f}" if n in st else "-" for n in (1, 2, 3)]
        mode = r.get("quantization") or r.get("dtype") or "-"
        print(f"  {r['name']:<30} {mode:<5} rc={r['rc']} [{marks}] {' '.join(times)} {peak:9.1f}  {r['verdict']}")


# ---- models ----------------------------------------------------------------------------------
def build_tiny(work: Path) -> dict[str, Path]:
    from doctor.testing.adapters import make_lora_adapter
    from doctor.testing.models import make_llava_model

    m: dict[str, Path] = {}
    with contextlib.redirect_stderr(io.StringIO()):
        for fam in ("llava", "llava_next", "mllama"):
            m[fam] = make_llava_model(work / fam, family=fam).path
        set_mllama_gates(m["mllama"], 0.5)  # a trained mllama has open gates; init leaves them at 0
        m["mllama_cut"] = make_llava_model(work / "mllama_cut", family="mllama").path
        m["noproj"] = make_llava_model(work / "noproj", drop_tensors=("multi_modal_projector",)).path
        m["zeroproj"] = make_llava_model(work / "zeroproj").path
        zero_tensors(m["zeroproj"], "multi_modal_projector.linear_2.weight")
        m["adapter"] = make_lora_adapter(m["llava"], work / "adapter")
        m["nan_adapter"] = make_lora_adapter(m["llava"], work / "nan_adapter", nan=True)
        m["merged"] = merge(m["llava"], m["adapter"], work / "merged")
    return m


def set_mllama_gates(folder: Path, value: float) -> None:
    _edit_tensors(folder, lambda k, t: t.fill_(value) if k.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")) else t)


def zero_tensors(folder: Path, suffix: str) -> None:
    _edit_tensors(folder, lambda k, t: t.zero_() if k.endswith(suffix) else t)


def _edit_tensors(folder: Path, fn) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = {k: fn(k, v.clone()) for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})


def merge(base: Path, adapter: Path, out: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter).merge_and_unload()
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(base).save_pretrained(out)
    return out


def build_big(work: Path, device: str, size: str) -> dict[str, Path]:
    """llava-1.5's layout with TinyLlama's LM shape (full: ~1.4B params), random, saved in fp16."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from doctor.testing.tokenizer import make_tokenizer

    out = work / "big"
    full = size == "full"
    tok_info = make_tokenizer(out, vocab_size=32000)
    text = transformers.LlamaConfig(
        vocab_size=32064, hidden_size=2048 if full else 128, intermediate_size=5632 if full else 256,
        num_hidden_layers=22 if full else 2, num_attention_heads=32 if full else 4, num_key_value_heads=4 if full else 2,
        max_position_embeddings=4096, bos_token_id=tok_info.bos_token_id, eos_token_id=tok_info.eos_token_id,
        pad_token_id=tok_info.pad_token_id)
    vision = transformers.CLIPVisionConfig(
        hidden_size=1024 if full else 64, intermediate_size=4096 if full else 128, num_hidden_layers=24 if full else 2,
        num_attention_heads=16 if full else 2, image_size=336 if full else 56, patch_size=14, projection_dim=768)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok_info.image_token_id,
                                      vision_feature_layer=-2, vision_feature_select_strategy="default",
                                      image_seq_length=(vision.image_size // 14) ** 2, projector_hidden_act="gelu")
    dev = "cuda" if device.startswith("cuda") else "cpu"
    torch.manual_seed(0)
    with torch.device(dev):
        model = transformers.LlavaForConditionalGeneration(config).to(torch.float16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out, max_shard_size="2GB")
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": vision.image_size},
                                                      crop_size={"height": vision.image_size, "width": vision.image_size})
    transformers.LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                                vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                chat_template=tokenizer.chat_template).save_pretrained(out)
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=r".*language_model.*\.(q_proj|v_proj)",
                                            task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)  # a trained adapter's B is not zero
    lora.save_pretrained(work / "big_lora")
    del lora, model
    if dev == "cuda":
        torch.cuda.empty_cache()
    print(f"[big llava: {n / 1e9:.2f}B parameters, fp16 on disk]", flush=True)
    return {"big": out, "big_adapter": work / "big_lora", "big_params": f"{n / 1e9:.2f}B"}  # type: ignore[dict-item]


if __name__ == "__main__":
    sys.exit(main())

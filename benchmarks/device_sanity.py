"""The sanity pass for real on a device, and what it costs beside bare transformers.

    python benchmarks/device_sanity.py --device cuda --modes fp16,bf16,4bit --big 7b --out $OUT
    python benchmarks/device_sanity.py --tiny                      # the same on the CPU, small (dry run)

Part 1, the families: builds tiny llava / llava_next / mllama / qwen2_vl / qwen2_5_vl folders
*without processor files* (what merges and training runs leave), each clean and with a NaN
planted in a weight, a llava_next whose config and processor pinpoints disagree, and the older
planted defects (no projector, zeroed projector, closed mllama gates, NaN adapter, merged vs
base + adapter); runs ``vlm-doctor sanity`` on each in each mode through the subcommand module
(in-process, so torch is imported once) and checks every run gives what it should.

Part 2, the cost: builds a LLaVA in llava-1.5-7b's exact shape (CLIP ViT-L/14-336, a 32-layer
4096-wide Llama, vocabulary 32064; random weights, fp16 on disk, processor files as llava-hf
ships them), then, per mode, in two fresh processes each: bare transformers doing the work the
pass does (``from_pretrained`` + ``AutoProcessor``, one image forward, 32 greedy tokens) and the
sanity pass, stages 1-4, with 32 tokens. Both time from a warm CUDA context and imported
libraries, so the numbers compare the work. Prints both side by side with the ratio
(target: the pass costs at most 1.5x the bare work). ``--big small`` uses the same code with tiny
dimensions (the CPU dry run); ``--big none`` skips part 2.

Every run's JSON goes to ``OUT/device_sanity.json``; exit 1 when a run is not as expected.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
PROBE = REPO / "doctor" / "data" / "pope_example.jsonl"
FAMILIES = ("llava", "llava_next", "mllama", "qwen2_vl", "qwen2_5_vl")
NEW_TOKENS = 32
TARGET_RATIO = 1.5
# The first self-attention query projection of the language model, in every family's key layout.
FIRST_TEXT_Q = re.compile(r"^(?!.*visu)(?!.*vision).*layers\.0\.self_attn\.q_proj\.weight$")
# A tensor that stays in floating point under 4-bit (bitsandbytes quantizes Linear weights only).
FIRST_TEXT_NORM = re.compile(r"^(?!.*visu)(?!.*vision).*layers\.0\.input_layernorm\.weight$")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "chat_template.jinja", "chat_template.json")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--modes", default="fp16,bf16,4bit")
    ap.add_argument("--big", choices=("7b", "small", "none"), default="7b")
    ap.add_argument("--tiny", action="store_true", help="the dry run: --device cpu --modes fp32,4bit --big small")
    ap.add_argument("--no-families", action="store_true", help="skip part 1 (the tiny families): the cost only")
    ap.add_argument("--repeat", type=int, default=1, help="bare / sanity runs per mode, alternating (default 1)")
    ap.add_argument("--work", default="/tmp/device_sanity")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/device_sanity_out"))
    ap.add_argument("--child", choices=("bare", "sanity"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.model, a.mode, a.device)
    if a.tiny:
        a.device, a.modes, a.big = "cpu", "fp32,4bit", "small"
    work, out = Path(a.work), Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    modes = a.modes.split(",")
    t0 = time.perf_counter()
    results = []
    if not a.no_families:
        models = build_tiny(work)
        print(f"[built {len(models)} tiny model folders in {time.perf_counter() - t0:.1f}s]", flush=True)
        results = [run_one(name, model, [*args, "--device", a.device], expect, work)
                   for name, model, args, expect in plan_runs(models, modes, a.device)]
        summary(results)
    costs = []
    if a.big != "none":
        t1 = time.perf_counter()
        big = build_big(work, a.device, a.big)
        print(f"[built the {a.big} llava ({big['params']}) in {time.perf_counter() - t1:.1f}s]", flush=True)
        for mode in modes:
            if mode in ("4bit", "8bit") and not a.device.startswith("cuda"):
                print(f"\n[{mode}: bitsandbytes needs CUDA; skipped on {a.device}]")
                continue
            costs.append(compare(big, mode, a.device, a.repeat))
        cost_table(costs, big)
    (out / "device_sanity.json").write_text(json.dumps({"runs": results, "costs": costs}, indent=1, default=str))
    bad = [r for r in results if r["verdict"] != "as expected"] + [c for c in costs if c.get("error")]
    print(f"\n{len(results) - sum(r['verdict'] != 'as expected' for r in results)}/{len(results)} runs as expected; "
          f"{len(costs)} cost comparisons; total {time.perf_counter() - t0:.1f}s")
    return 1 if bad else 0


# ---- part 1: the families ----------------------------------------------------------------------
def mode_args(mode: str) -> list[str]:
    return ["--load-4bit"] if mode == "4bit" else ["--load-8bit"] if mode == "8bit" else ["--dtype", mode]


def plan_runs(m: dict[str, Path], modes: list[str], device: str) -> list[tuple[str, Path, list[str], dict[int, str]]]:
    """(name, model, extra args, expected statuses by stage). Quantized modes skip stage 5, and skip
    everything off CUDA."""
    runs = []
    clean = {1: "pass", 2: "pass", 3: "pass", 4: "pass"}
    skipped = {n: "skip" for n in range(1, 7)}
    for mode in modes:
        off = mode in ("4bit", "8bit") and not device.startswith("cuda")
        for fam in FAMILIES:
            runs.append((f"{fam} (no processor files)", m[fam], mode_args(mode), skipped if off else clean))
            runs.append((f"{fam} NaN weight", m[f"{fam}_nan"], mode_args(mode),
                         skipped if off else {1: "pass", 2: "fail", 3: "skip"}))
        runs.append(("llava_next pinpoints disagree", m["pinpoints"], mode_args(mode),
                     skipped if off else {1: "pass", 2: "fail"}))
    first = modes[0]
    single = [
        ("llava+adapter", m["llava_full"], ["--adapter", str(m["adapter"]), "--probe", str(PROBE),
                                           "--probe-min-accuracy", "0"], {**clean, 5: "pass", 6: "pass"}),
        ("llava merged vs base+adapter", m["merged"], ["--adapter", str(m["adapter"]), "--base", str(m["llava_full"])],
         {**clean, 5: "pass"}),
        ("qwen2_5_vl+adapter", m["qwen2_5_vl"], ["--adapter", str(m["qwen_adapter"])], {**clean, 5: "pass"}),
        ("llava no projector", m["noproj"], [], {1: "fail", 2: "skip"}),
        ("llava zero projector", m["zeroproj"], [], {1: "pass", 4: "fail"}),
        ("mllama untrained gates", m["mllama_cut"], [], {1: "pass", 4: "fail"}),
        ("llava nan adapter", m["llava_full"], ["--adapter", str(m["nan_adapter"])], {1: "pass", 2: "fail"}),
    ]
    off = first in ("4bit", "8bit") and not device.startswith("cuda")
    runs += [(name, path, [*mode_args(first), *args], skipped if off else expect) for name, path, args, expect in single]
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
    argv = ["sanity", str(model), *args, "--max-new-tokens", "8", "--timeout", "60"]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli([*argv, "--output-format", "json", "-o", str(js)])
    wall = time.perf_counter() - started
    full = json.loads(js.read_text()) if js.exists() and rc in (0, 1) else {}
    doc = (full.get("sanity", {}).get("models") or [{}])[0]  # the report's sanity section (docs/report.md)
    findings = full.get("findings", [])  # the stages' findings are the report's (SAN001-SAN006)
    js.unlink(missing_ok=True)
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
        print(f"  {s['stage']} {s['name']:<18} {s['status']:<5} {s['seconds']:7.2f}s {mem:<20} {s['detail'][:150]}")
        for f in (f for f in findings if f["code"] == s.get("code")):
            print(f"      {f['code']} {f['severity']}: {f['message'][:240]}")
    return rec


def summary(results: list[dict]) -> None:
    print("\n== summary: run | mode | rc | stage statuses 1-6 | load s | forward s | generate s | peak MiB")
    for r in results:
        st = {s["stage"]: s for s in r["stages"]}
        marks = " ".join(st[n]["status"][0].upper() if n in st else "-" for n in range(1, 7))
        peak = max((s["peak_memory_bytes"] or 0 for s in r["stages"]), default=0) / 2**20
        times = [f"{st[n]['seconds']:.2f}" if n in st else "-" for n in (1, 2, 3)]
        mode = r.get("quantization") or r.get("dtype") or "-"
        print(f"  {r['name']:<34} {mode:<5} rc={r['rc']} [{marks}] {' '.join(times)} {peak:9.1f}  {r['verdict']}")


def build_tiny(work: Path) -> dict[str, Path]:
    from doctor.testing.adapters import make_lora_adapter
    from doctor.testing.models import make_llava_model
    from doctor.testing.qwen import make_qwen_lora_adapter, make_qwen_model

    m: dict[str, Path] = {}
    with contextlib.redirect_stderr(io.StringIO()):
        for fam in FAMILIES:
            full = (make_qwen_model(work / f"{fam}_full", family=fam) if fam.startswith("qwen")
                    else make_llava_model(work / f"{fam}_full", family=fam)).path
            if fam == "mllama":
                edit_tensors(full, lambda k, t: t.fill_(0.5) if k.endswith(("cross_attn_attn_gate",
                                                                              "cross_attn_mlp_gate")) else t)
            m[f"{fam}_full"] = full
            m[fam] = copy_without_processor(full, work / fam)
            m[f"{fam}_nan"] = copy_without_processor(full, work / f"{fam}_nan")
            plant_nan(m[f"{fam}_nan"], FIRST_TEXT_NORM)  # stays floating point in 4-bit too
        m["pinpoints"] = make_llava_model(work / "pinpoints", family="llava_next", processor_overrides={
            "image_processor.image_grid_pinpoints": [[28, 28], [56, 28], [28, 56], [56, 56]]}).path
        m["mllama_cut"] = make_llava_model(work / "mllama_cut", family="mllama").path
        m["noproj"] = make_llava_model(work / "noproj", drop_tensors=("multi_modal_projector",)).path
        m["zeroproj"] = make_llava_model(work / "zeroproj").path
        edit_tensors(m["zeroproj"], lambda k, t: t.zero_() if k.endswith("multi_modal_projector.linear_2.weight") else t)
        m["adapter"] = make_lora_adapter(m["llava_full"], work / "adapter")
        m["nan_adapter"] = make_lora_adapter(m["llava_full"], work / "nan_adapter", nan=True)
        m["qwen_adapter"] = make_qwen_lora_adapter(m["qwen2_5_vl_full"], work / "qwen_adapter")
        m["merged"] = merge(m["llava_full"], m["adapter"], work / "merged")  # weights + config only
    return m


def copy_without_processor(src: Path, dst: Path) -> Path:
    import shutil

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*PROCESSOR_FILES))
    return dst


def plant_nan(folder: Path, pattern: re.Pattern[str]) -> None:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        name = next(k for k in sorted(f.keys()) if pattern.search(k))
    edit_tensors(folder, lambda k, t: t.fill_(float("nan")) if k == name else t)


def edit_tensors(folder: Path, fn) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = {k: fn(k, v.clone()) for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})


def merge(base: Path, adapter: Path, out: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter).merge_and_unload()
    model.save_pretrained(out)
    return out


# ---- part 2: the cost beside bare transformers --------------------------------------------------
def build_big(work: Path, device: str, size: str) -> dict[str, str]:
    """llava-1.5-7b's exact shape (size "7b": ~7.06B parameters) or the same code with tiny
    dimensions ("small"); random weights initialised on the device, saved in fp16 with the
    processor files llava-hf ships."""
    import torch
    import transformers

    from doctor.testing.tokenizer import make_tokenizer

    out = work / f"llava-{size}"
    full = size == "7b"
    tok_info = make_tokenizer(out, vocab_size=32000)
    text = transformers.LlamaConfig(
        vocab_size=32064, hidden_size=4096 if full else 128, intermediate_size=11008 if full else 256,
        num_hidden_layers=32 if full else 2, num_attention_heads=32 if full else 4,
        num_key_value_heads=32 if full else 4, max_position_embeddings=4096, rms_norm_eps=1e-5,
        bos_token_id=tok_info.bos_token_id, eos_token_id=tok_info.eos_token_id, pad_token_id=tok_info.pad_token_id)
    vision = transformers.CLIPVisionConfig(
        hidden_size=1024 if full else 64, intermediate_size=4096 if full else 128, num_hidden_layers=24 if full else 2,
        num_attention_heads=16 if full else 2, image_size=336 if full else 56, patch_size=14, projection_dim=768,
        hidden_act="quick_gelu")
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok_info.image_token_id,
                                      vision_feature_layer=-2, vision_feature_select_strategy="default",
                                      image_seq_length=(vision.image_size // 14) ** 2, projector_hidden_act="gelu")
    dev = "cuda" if device.startswith("cuda") else "cpu"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16 if dev == "cuda" else torch.float32)
    try:
        with torch.device(dev):
            model = transformers.LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(torch.float16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out, max_shard_size="5GB")
    del model
    if dev == "cuda":
        torch.cuda.empty_cache()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    image_processor = cls(size={"shortest_edge": vision.image_size},
                          crop_size={"height": vision.image_size, "width": vision.image_size})
    transformers.LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                                vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                chat_template=tokenizer.chat_template).save_pretrained(out)
    return {"path": str(out), "params": f"{n / 1e9:.2f}B"}


def compare(big: dict[str, str], mode: str, device: str, repeat: int = 1) -> dict:
    """Bare transformers and the sanity pass on the big model in ``mode``, each in a fresh process,
    alternating ``repeat`` times (bare first, so the page cache favours the pass no more than bare);
    the fastest run of each is compared."""
    rec: dict = {"mode": mode, "params": big["params"], "runs": {"bare": [], "sanity": []}}
    env = dict(os.environ)
    if not device.startswith("cuda"):
        env["OMP_NUM_THREADS"] = "1"  # the CPU dry run on a shared machine: threads fighting are noise
    for _ in range(repeat):
        for kind in ("bare", "sanity"):
            cmd = [sys.executable, __file__, "--child", kind, "--model", big["path"], "--mode", mode, "--device", device]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900, env=env)
            line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
            if proc.returncode != 0 or line is None:
                rec["error"] = f"{kind} rc={proc.returncode}: {proc.stderr[-1500:]}"
                print(f"\n[{mode}] {kind} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}", flush=True)
                return rec
            rec["runs"][kind].append(json.loads(line))
    for kind in ("bare", "sanity"):
        rec[kind] = min(rec["runs"][kind], key=lambda r: r["total_s"])
    rec["ratio"] = rec["sanity"]["total_s"] / rec["bare"]["total_s"]
    totals = {k: ", ".join(f"{r['total_s']:.2f}" for r in v) for k, v in rec["runs"].items()}
    print(f"\n[{mode}] bare {totals['bare']} s; sanity {totals['sanity']} s; fastest ratio {rec['ratio']:.2f}x",
          flush=True)
    return rec


def cost_table(costs: list[dict], big: dict[str, str]) -> None:
    print(f"\n== the sanity pass (stages 1-4, {NEW_TOKENS} tokens) beside bare transformers doing the same work, "
          f"llava-1.5-7b shape ({big['params']} random parameters); fastest of each, seconds")
    print(f"  {'mode':<5} {'':<7} {'load':>7} {'forward':>8} {'generate':>9} {'other':>7} {'total':>7} "
          f"{'tokens':>6} {'peak GiB':>8}  stage statuses / ratio")
    for c in costs:
        if c.get("error"):
            print(f"  {c['mode']:<5} ERROR {c['error'][:200]}")
            continue
        b, s = c["bare"], c["sanity"]
        print(f"  {c['mode']:<5} {'bare':<7} {b['load_s']:7.2f} {b['forward_s']:8.2f} {b['generate_s']:9.2f} "
              f"{0.0:7.2f} {b['total_s']:7.2f} {b['tokens']:6d} {b['peak_gib']:8.2f}")
        other = s["total_s"] - s["load_s"] - s["forward_s"] - s["generate_s"]
        verdict = "OK" if c["ratio"] <= TARGET_RATIO else f"OVER the {TARGET_RATIO}x target"
        print(f"  {'':<5} {'sanity':<7} {s['load_s']:7.2f} {s['forward_s']:8.2f} {s['generate_s']:9.2f} "
              f"{other:7.2f} {s['total_s']:7.2f} {s['tokens']:6d} {s['peak_gib']:8.2f}  {s['statuses']}  "
              f"ratio {c['ratio']:.2f}x {verdict}")
    print("  (sanity 'other' = stage 4's two extra forwards, with the blank and the noise image, and the pass's own "
          "bookkeeping; a CPU dry run on a shared machine times noise, not the pass)")


def child(kind: str, model: str, mode: str, device: str) -> int:
    """One timed run in this fresh process; prints one JSON line."""
    import torch
    import transformers  # noqa: F401 - imported before the clock, as in the sanity process

    from doctor.sanity import inputs as _inputs

    cuda = device.startswith("cuda")
    if cuda:
        torch.zeros(1, device=device)  # the CUDA context, outside both clocks
        torch.cuda.synchronize()
    if kind == "sanity":
        import peft  # noqa: F401

        from doctor.sanity import load as _load  # noqa: F401 - the modules the pass imports lazily
        from doctor.sanity import run_sanity
        from doctor.sanity import stages as _stages  # noqa: F401

        started = time.perf_counter()
        result = run_sanity(model, device=device, dtype="auto" if mode in ("4bit", "8bit") else mode,
                            load_4bit=mode == "4bit", load_8bit=mode == "8bit", max_new_tokens=NEW_TOKENS,
                            timeout=600)
        total = time.perf_counter() - started
        st = {s.number: s for s in result.stages}
        print(json.dumps({
            "total_s": total, "load_s": st[1].seconds, "forward_s": st[2].seconds, "generate_s": st[3].seconds,
            "image_matters_s": st[4].seconds, "tokens": int(st[3].metrics.get("new_tokens", 0)),
            "peak_gib": max((s.peak_memory_bytes or 0) for s in result.stages) / 2**30,
            "statuses": "".join(s.status[0].upper() for s in result.stages[:4]),
            "findings": [f.message[:200] for f in result.findings]}))
        return 0
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(mode, torch.float16)
    if mode in ("4bit", "8bit") and cuda:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() and mode == "4bit" else torch.float16
    kwargs: dict = {"dtype": dtype}
    if cuda:
        kwargs["device_map"] = {"": device}
    if mode == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=dtype)
    elif mode == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    image = _inputs.default_image()
    t0 = time.perf_counter()
    net = AutoModelForImageTextToText.from_pretrained(model, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(model)
    sync()
    t1 = time.perf_counter()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": _inputs.DEFAULT_PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=image, text=text, return_tensors="pt", add_special_tokens=False)
    inputs = {k: (v.to(device).to(dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
    with torch.no_grad():
        logits = net(**inputs).logits
    sync()
    t2 = time.perf_counter()
    with torch.no_grad():
        out = net.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1,
                           pad_token_id=processor.tokenizer.pad_token_id)
    sync()
    t3 = time.perf_counter()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    print(json.dumps({"total_s": t3 - t0, "load_s": t1 - t0, "forward_s": t2 - t1, "generate_s": t3 - t2,
                      "tokens": int(out.shape[-1] - inputs["input_ids"].shape[-1]), "peak_gib": peak,
                      "finite": bool(torch.isfinite(logits).all())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

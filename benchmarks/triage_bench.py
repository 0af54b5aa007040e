"""Triage of a 7B-shaped LoRA run: 20 checkpoints of a rank-128 adapter on every linear layer of a
Llama-2-7B-shaped LM (32 layers; q/k/v/o 4096x4096, gate/up 4096->11008, down 11008->4096), bf16,
as finetune_lora.sh leaves it (checkpoint-N/ with the adapter, the final adapter + config.json at
the top). The adapters are sparse files: 610 MiB each by size, only the first 4 KiB of every tensor
written (random, different per checkpoint) so deltas are real and the disk stays small.

    python benchmarks/triage_bench.py [--checkpoints 20] [--keep DIR]

Prints a ratio table: the RUN analysis alone, the whole ``vlm-doctor triage`` command (every family
that applies to the run folder), and ``--deep`` (every LoRA tensor compared) measured on one pair of
checkpoints and scaled to the run, against reading every LoRA byte once (the naive approach).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAYERS, HIDDEN, INTER, R = 32, 4096, 11008, 128
MODULES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
           "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
           "mlp.gate_proj": (HIDDEN, INTER), "mlp.up_proj": (HIDDEN, INTER), "mlp.down_proj": (INTER, HIDDEN)}
STEPS_PER_SAVE = 50


def lora_shapes() -> dict[str, tuple[int, int]]:
    out = {}
    for layer in range(LAYERS):
        for mod, (fan_in, fan_out) in MODULES.items():
            prefix = f"base_model.model.model.layers.{layer}.{mod}"
            out[f"{prefix}.lora_A.weight"] = (R, fan_in)
            out[f"{prefix}.lora_B.weight"] = (fan_out, R)
    return out


def write_sparse_adapter(folder: Path, seed: int) -> int:
    """A bf16 adapter_model.safetensors with a valid header; only 4 KiB per tensor hold data."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = lora_shapes()
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(shapes):
        n = shapes[name][0] * shapes[name][1] * 2
        header[name] = {"dtype": "BF16", "shape": list(shapes[name]), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    rng = np.random.default_rng(seed)
    start = 8 + len(head)
    with open(folder / "adapter_model.safetensors", "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for name in sorted(shapes):
            values = (rng.standard_normal(2048).astype(np.float32) * 0.01).view(np.uint32) >> 16
            f.seek(start + header[name]["data_offsets"][0])
            f.write(values.astype("<u2").tobytes())
        f.truncate(start + offset)
    config = {"base_model_name_or_path": "lmsys/vicuna-7b-v1.5", "peft_type": "LORA", "task_type": "CAUSAL_LM",
              "r": R, "lora_alpha": 256, "lora_dropout": 0.05, "bias": "none", "target_modules": sorted(
                  m.split(".")[-1] for m in MODULES), "use_rslora": False, "inference_mode": True}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return start + offset


def write_state(folder: Path, step: int, max_steps: int) -> None:
    log = []
    for s in range(1, step + 1):
        log.append({"epoch": s / max_steps, "grad_norm": 0.5, "learning_rate": 2e-4 * min(1.0, s / 30),
                    "loss": 2.0 * 0.999 ** s + 0.01 * ((s * 7) % 5), "step": s})
        if s % STEPS_PER_SAVE == 0:
            log.append({"epoch": s / max_steps, "eval_loss": 1.9 * 0.9995 ** s + (0.02 if s > 700 else 0), "step": s})
    state = {"best_metric": None, "best_model_checkpoint": None, "epoch": step / max_steps, "global_step": step,
             "log_history": log, "logging_steps": 1, "max_steps": max_steps, "save_steps": STEPS_PER_SAVE,
             "total_flos": 0.0, "train_batch_size": 16, "trial_name": None, "trial_params": None}
    (folder / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def write_training_state(folder: Path) -> None:
    """optimizer.pt, scheduler.pt, rng_state.pth as torch.save zip archives (small: the resume
    verdict reads only the zip directory at the end of each file)."""
    import zipfile

    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        with zipfile.ZipFile(folder / name, "w") as z:
            z.writestr(f"{name.split('.')[0]}/data.pkl", b"\x80\x02}q\x00.")
            z.writestr(f"{name.split('.')[0]}/version", "3\n")


def build(root: Path, checkpoints: int) -> int:
    max_steps = checkpoints * STEPS_PER_SAVE
    total = 0
    for i in range(1, checkpoints + 1):
        step = i * STEPS_PER_SAVE
        total += write_sparse_adapter(root / f"checkpoint-{step}", seed=i)
        write_state(root / f"checkpoint-{step}", step, max_steps)
        write_training_state(root / f"checkpoint-{step}")
    total += write_sparse_adapter(root, seed=checkpoints)
    write_state(root, max_steps, max_steps)
    (root / "config.json").write_text(json.dumps({"model_type": "llava_llama", "architectures": ["LlavaLlamaForCausalLM"],
                                                  "hidden_size": HIDDEN, "mm_projector_type": "mlp2x_gelu",
                                                  "mm_hidden_size": 1024, "mm_vision_tower": "openai/clip-vit-large-patch14-336"}))
    return total


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", type=int, default=20)
    p.add_argument("--keep", metavar="DIR", help="build the run in DIR and keep it")
    a = p.parse_args(argv)
    from doctor.cli import main as cli
    from doctor.runs.tensors import delta, lora_tensors
    from doctor.runs.triage import analyze_run

    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="triage-bench-")) / "llava-v1.5-7b-lora"
    try:
        t0 = time.perf_counter()
        logical = build(root, a.checkpoints)
        print(f"built {a.checkpoints} checkpoints + final adapter: {logical / 2**30:.1f} GiB by size, "
              f"{len(lora_shapes())} LoRA tensors each, in {time.perf_counter() - t0:.1f} s\n")

        def core() -> object:
            run = analyze_run(root)
            run.deltas  # noqa: B018 - the sampled deltas are part of triage
            return run.recommendation

        t_core, rec = timed(core)
        fresh = [analyze_run(root) for _ in range(3)]
        t_resume, verdicts = timed(lambda: fresh.pop().resume)  # the verdicts alone, on a fresh analysis

        def command() -> int:
            with contextlib.redirect_stdout(io.StringIO()):
                return cli(["triage", str(root), "--output-format", "json"])

        t_cmd, code = timed(command)
        first, second = sorted(root.glob("checkpoint-*"), key=lambda q: int(q.name.split("-")[1]))[:2]
        old = lora_tensors(first / "adapter_model.safetensors")
        new = lora_tensors(second / "adapter_model.safetensors")
        t_pair, d = timed(lambda: delta(old, new, deep=True), repeat=1)
        t_deep = t_pair * a.checkpoints  # one pair per save (19 pairs + the final vs the last)
        lora_bytes = sum(i.nbytes for i in old.values())
        t_read, _ = timed(lambda: _read_all(new), repeat=1)
        t_naive = t_read * (a.checkpoints + 1)

        rows = [
            ("RUN analysis (layout, record, sampled deltas, recommendation)", t_core),
            ("of which: resume verdicts of every save (names, zip directories)", t_resume),
            ("vlm-doctor triage --output-format json (all families)", t_cmd),
            (f"--deep: every LoRA tensor compared (1 pair measured, x{a.checkpoints})", t_deep),
            (f"naive: read every LoRA byte once (1 save measured, x{a.checkpoints + 1})", t_naive),
        ]
        print("| what | seconds | vs vlm-doctor triage |")
        print("|---|---|---|")
        for name, secs in rows:
            print(f"| {name} | {secs:.3f} | {secs / t_cmd:.2f}x |")
        print(f"\nadapter: {lora_bytes / 2**20:.0f} MiB of LoRA tensors per save; triage exit code {code}; "
              f"keep: {rec.keep_label} ({'; '.join(rec.reasons)}); resume from: {rec.resume_from} "
              f"({sum(v.resumable for v in verdicts.values())} resumable saves); "
              f"deep delta of the first pair {d.relative:.3g}")
    finally:
        if not a.keep:
            shutil.rmtree(root.parent, ignore_errors=True)
    return 0


def _read_all(tensors: dict) -> int:
    from doctor.runs.tensors import read_tensor

    return sum(int(read_tensor(i).size) for i in tensors.values())


if __name__ == "__main__":
    sys.exit(main())

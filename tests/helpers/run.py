"""Builders for training-run folders shaped exactly like the Trainer's (no tests here).

``trainer_state.json`` is written as ``TrainerState.save_to_json`` does (``json.dumps(asdict(state),
indent=2, sort_keys=True)``: NaN and Infinity bare); ``checkpoint-N/`` holds what a PEFT LoRA save
holds (``adapter_config.json``, ``adapter_model.safetensors`` with peft's key names, the state).
The real-Trainer runs are in test_run_trainer.py and test_callback.py."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LORA_CONFIG = {
    "base_model_name_or_path": "lmsys/vicuna-7b-v1.5", "bias": "none", "fan_in_fan_out": False,
    "inference_mode": True, "init_lora_weights": True, "lora_alpha": 256, "lora_dropout": 0.05,
    "modules_to_save": None, "peft_type": "LORA", "r": 128, "target_modules": ["q_proj", "v_proj"],
    "task_type": "CAUSAL_LM", "use_rslora": False,
}


def history(losses: Sequence[float], lrs: Sequence[float] | None = None, grad_norms: Sequence[float] | None = None,
            evals: dict[int, float] | None = None, steps_per_epoch: int = 100) -> list[dict[str, Any]]:
    """log_history with one train entry per step (logging_steps=1) and eval entries after their step."""
    out: list[dict[str, Any]] = []
    for i, loss in enumerate(losses):
        step = i + 1
        entry = {"epoch": step / steps_per_epoch, "learning_rate": 2e-4 if lrs is None else lrs[i],
                 "loss": loss, "step": step}
        if grad_norms is not None:
            entry["grad_norm"] = grad_norms[i]
        out.append(entry)
        if evals and step in evals:
            out.append({"epoch": step / steps_per_epoch, "eval_loss": evals[step], "eval_runtime": 1.5,
                        "eval_samples_per_second": 10.0, "eval_steps_per_second": 2.0, "step": step})
    return out


def write_state(folder: Path, log: list[dict[str, Any]], global_step: int, max_steps: int,
                best_model_checkpoint: str | None = None, best_metric: float | None = None) -> Path:
    state = {
        "best_global_step": None, "best_metric": best_metric, "best_model_checkpoint": best_model_checkpoint,
        "epoch": global_step / 100, "eval_steps": 500, "global_step": global_step, "is_hyper_param_search": False,
        "is_local_process_zero": True, "is_world_process_zero": True, "log_history": log, "logging_steps": 1,
        "max_steps": max_steps, "num_input_tokens_seen": 0, "num_train_epochs": 1, "save_steps": 10,
        "stateful_callbacks": {"TrainerControl": {"args": {"should_epoch_stop": False, "should_evaluate": False,
                                                           "should_log": False, "should_save": True,
                                                           "should_training_stop": global_step >= max_steps},
                                                  "attributes": {}}},
        "total_flos": 1.0e12, "train_batch_size": 4, "trial_name": None, "trial_params": None,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trainer_state.json"
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    return path


def lora_tensors(seed: int, layers: int = 2, hidden: int = 16, r: int = 128, dtype: str = "float32",
                 empty: bool = False) -> dict[str, np.ndarray]:
    """peft's saved names for q_proj/v_proj LoRA on a Llama LM (``base_model.model.model.layers...``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in range(layers):
        for proj in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            a = rng.standard_normal((r, hidden)).astype(np.float32) * 0.1
            b = rng.standard_normal((hidden, r)).astype(np.float32) * 0.01
            if empty:
                a, b = np.zeros((0,), np.float32), np.zeros((0,), np.float32)
            out[f"{prefix}.lora_A.weight"] = a.astype(dtype)
            out[f"{prefix}.lora_B.weight"] = b.astype(dtype)
    return out


def write_adapter(folder: Path, tensors: dict[str, np.ndarray] | None, config: dict[str, Any] | bool | None = None,
                  bf16: bool = False) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if config is not False:
        (folder / "adapter_config.json").write_text(json.dumps(config or LORA_CONFIG, indent=2))
    if tensors is not None:
        if bf16:
            write_bf16(folder / "adapter_model.safetensors", tensors)
        else:
            save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})


def write_bf16(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file with BF16 tensors (numpy has no bf16: truncate float32 to its high half)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        raw = (tensors[name].astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state.pth")


def write_torch_file(path: Path, payload: bytes = b"\x80\x02}q\x00.") -> None:
    """A file shaped like ``torch.save``'s output (a zip archive with ``<name>/data.pkl``); the
    triage only reads its zip directory."""
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{path.stem}/data.pkl", payload)
        z.writestr(f"{path.stem}/version", "3\n")


def make_run(root: Path, losses: Sequence[float], save_every: int, *, lrs: Sequence[float] | None = None,
             grad_norms: Sequence[float] | None = None, evals: dict[int, float] | None = None,
             max_steps: int | None = None, frozen_after: int | None = None, best: str | None = None,
             tensors: Any = None, training_state: Sequence[str] = TRAINING_STATE) -> Path:
    """A LoRA run (the adapter in LLaVA's recipe, r 128 / alpha 256, on a tiny 2-layer LM):
    checkpoint-N every ``save_every`` steps, each with the adapter as trained to N
    (identical to the previous save from ``frozen_after`` on), the state up to N and the
    ``training_state`` files the Trainer's resume reads (optimizer, scheduler, RNG)."""
    total = len(losses)
    max_steps = max_steps or total
    log = history(losses, lrs, grad_norms, evals)
    for step in range(save_every, total + 1, save_every):
        seed = step if frozen_after is None or step <= frozen_after else frozen_after
        folder = root / f"checkpoint-{step}"
        write_adapter(folder, (tensors or lora_tensors)(seed))
        upto = [e for e in log if e["step"] <= step]
        write_state(folder, upto, step, max_steps, best_model_checkpoint=best and str(root / best))
        for name in training_state:
            write_torch_file(folder / name)
    return root


def decreasing(n: int, start: float = 2.5, end: float = 1.0, noise: float = 0.05, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(start + (end - start) * (i / max(1, n - 1)) + noise * rng.standard_normal()) for i in range(n)]


def finding_codes(report: Any) -> set[str]:
    return {f.code for f in report.findings}


def only(report: Any, code: str) -> Any:
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, [(f.code, f.message) for f in report.findings]
    return found[0]


NAN = math.nan


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_peft_model(seed: int = 0, vocab: int = 64) -> Any:
    """A 2-layer LlamaForCausalLM (vocab 64, hidden 16) with LoRA r 8 on every linear layer.
    initializer_range 0.3 so that a few steps visibly lower the loss."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         initializer_range=0.3)
    return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS,
                                                               task_type="CAUSAL_LM"))


def token_dataset(ignore_labels: bool = False, n: int = 4) -> Any:
    """n fixed 8-token sequences; with ``ignore_labels`` every label is -100 (LLaVA's tokenization
    mismatch does exactly this: ``target[:] = IGNORE_INDEX``)."""
    import torch

    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, 64, (8,), generator=g) for _ in range(n)]

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> dict[str, Any]:
            labels = torch.full_like(rows[i], -100) if ignore_labels else rows[i].clone()
            return {"input_ids": rows[i], "labels": labels}

    return Rows()


def train(out: Path, *, ignore_labels: bool = False, lr: float = 5e-2, max_steps: int = 12, save_steps: int = 3,
          evaluate: bool = True, callbacks: list[Any] | None = None, dataset: Any = None,
          processing_class: Any = None, vocab: int = 64) -> Any:
    """A real transformers Trainer run on CPU (a few seconds); returns the Trainer."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(out), max_steps=max_steps, save_steps=save_steps, logging_steps=1,
        eval_strategy="steps" if evaluate else "no", eval_steps=save_steps, per_device_train_batch_size=2,
        per_device_eval_batch_size=4, learning_rate=lr, warmup_steps=2, report_to=[], use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True, seed=0)
    data = dataset if dataset is not None else token_dataset(ignore_labels)
    trainer = Trainer(model=tiny_peft_model(vocab=vocab), args=args, train_dataset=data,
                      eval_dataset=token_dataset(ignore_labels) if evaluate else None, callbacks=callbacks,
                      processing_class=processing_class)
    trainer.train()
    return trainer


def tiny_full_model(kind: str = "llava", seed: int = 0) -> Any:
    """A full fine-tune model: a 2-layer Llama, or a LLaVA around it (CLIP tower of one layer)."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    text = T.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.3)
    if kind == "llama":
        return T.LlamaForCausalLM(text)
    vision = T.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14, projection_dim=16)
    return T.LlavaForConditionalGeneration(T.LlavaConfig(vision_config=vision, text_config=text, image_token_index=63))


def train_full(out: Path, kind: str = "llava", max_steps: int = 2, save_steps: int = 1) -> Any:
    """A real Trainer full fine-tune (text-only batches) of ``tiny_full_model(kind)``."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(out), max_steps=max_steps, save_steps=save_steps, logging_steps=1,
                             per_device_train_batch_size=2, learning_rate=5e-2, report_to=[], use_cpu=True,
                             dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = Trainer(model=tiny_full_model(kind), args=args, train_dataset=token_dataset())
    trainer.train()
    return trainer


def resume(checkpoint: Path, out: Path, max_steps: int, model: Any = None) -> tuple[Any, BaseException | None, Any]:
    """``trainer.train(resume_from_checkpoint=checkpoint)`` with a fresh model (same init as the
    run) and ``max_steps`` steps in all; returns (trainer, the exception it raised or None, the
    python ``random`` state at the first step after the resume, or None if no step ran)."""
    import random

    from transformers import Trainer, TrainerCallback, TrainingArguments

    seen: list[Any] = []

    class FirstStep(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not seen:
                seen.append(random.getstate())

    args = TrainingArguments(output_dir=str(out), max_steps=max_steps, save_strategy="no", logging_steps=1,
                             per_device_train_batch_size=2, learning_rate=5e-2, warmup_steps=2, report_to=[],
                             use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model if model is not None else tiny_peft_model(), args=args,
                      train_dataset=token_dataset(), callbacks=[FirstStep()])
    random.seed(12345)  # a state the checkpoint does not hold
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint))
    except Exception as e:  # noqa: BLE001 - the test asserts on it
        return trainer, e, None
    return trainer, None, seen[0] if seen else None


def optimizer_steps(trainer: Any) -> set[int]:
    """The ``step`` count Adam holds for each parameter (the resumed count, or 1 for a fresh optimizer)."""
    return {int(s["step"]) for s in trainer.optimizer.state.values() if "step" in s}

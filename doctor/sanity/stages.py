"""Stages 2-4: one forward pass, greedy generation, and whether the image reaches the logits."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from doctor.findings import Severity
from doctor.sanity import inputs as _inputs
from doctor.sanity import shapes as _shapes
from doctor.sanity.diagnose import image_path_problems, nonfinite_parameters
from doctor.sanity.load import Loaded, Plan
from doctor.sanity.memory import gib, is_oom
from doctor.sanity.quiet import quiet
from doctor.sanity.results import StageResult
from doctor.sanity.shapes import Shape

# Stage 4: the image "matters" when swapping it changes the next-token logits by more than this
# fraction of their largest magnitude. A disconnected path gives exactly 0 (same kernels, same text).
IMAGE_TOLERANCE = 1e-3
MIN_REPEAT = 4  # a generation of at least this many tokens, all the same token, is degenerate


@dataclass
class Session:
    plan: Plan
    loaded: Loaded
    image: Any
    image_label: str
    prompt: str
    text: str = ""
    templated: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)
    last_logits: Any = None  # next-token logits for the main image, float32 on CPU
    all_logits: Any = None  # all positions, float32 on CPU (stage 5 compares them)
    main_finite: bool = False  # the main image's logits are all finite (stages 3, 4 and 6 read them)
    _config: dict[str, Any] | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The tested folder's config.json as a dict ({} when unreadable)."""
        if self._config is None:
            from pathlib import Path

            from doctor.sanity.processor import read_json

            cfg = read_json(Path(self.plan.model) / "config.json")
            self._config = cfg if isinstance(cfg, dict) else {}
        return self._config

    @property
    def model(self) -> Any:
        """The transformers model to call: with an adapter, peft's base model with LoRA layers in place."""
        m = self.loaded.model
        return m.get_base_model() if self.loaded.is_peft else m

    @property
    def path(self) -> str:
        return self.plan.adapter or self.plan.model


def forward(s: Session, stage: StageResult) -> None:
    """Stage 2: finite logits for the main image and for every shape the processor treats apart
    (``doctor.sanity.shapes``); every floating-point parameter finite."""
    import torch

    s.text, s.templated = _inputs.build_prompt(s.loaded.processor, s.plan.family, s.prompt)
    config = s.config
    main = f"{s.image_label} ({_inputs.aspect_of(s.image)})"
    runs: list[tuple[str, Any, Shape | None]] = [(main, s.image, None)]
    extra, left_out = _shapes.bounded(_shapes.shapes(s.loaded.processor, config, s.plan.family))
    if extra:
        runs += [(sh.label, _shapes.image_for(sh, s.image), sh) for sh in extra]
    elif _inputs.tiles_images(s.loaded.processor):  # a tiling processor of a family not in _shapes
        runs += [(label, img, None) for label, img in _inputs.aspect_variants(s.image).items()
                 if label != _inputs.aspect_of(s.image)]
    shown: list[str] = []
    nonfinite: list[str] = []
    raised: list[tuple[str, Any, Shape | None, Exception]] = []
    for label, img, shape in runs:
        try:
            inputs = _inputs.make_inputs(s.loaded.processor, s.text, img, s.plan.device, s.loaded.torch_dtype)
            with torch.no_grad(), quiet():
                logits = s.model(**inputs).logits
        except Exception as e:  # noqa: BLE001 - a forward failure is the finding
            raised.append((label, img, shape, e))
            shown.append(f"{label} {img.size[0]}x{img.size[1]}: raised {type(e).__name__}")
            continue
        logits = logits.float()
        bad = int((~torch.isfinite(logits)).sum())
        if bad:
            nonfinite.append(f"{bad} of {logits.numel()} for the {label} image")
        shown.append(f"{label} {img.size[0]}x{img.size[1]}: {inputs['input_ids'].shape[-1]} tokens")
        if label == main:
            s.inputs = inputs
            s.all_logits = logits[0].detach().cpu()
            s.last_logits = s.all_logits[-1]
            s.main_finite = not bad
    _forward_errors(s, stage, raised)
    culprits = nonfinite_parameters(s.loaded.model)
    if nonfinite:
        _nonfinite_finding(s, stage, nonfinite, culprits)
    elif culprits:
        _nonfinite_finding(s, stage, [], culprits)
    stage.metrics["images"] = shown
    if left_out:  # bounded run time; said, not hidden
        stage.metrics["images_left_out"] = [f"{sh.label} {sh.size[0]}x{sh.size[1]}" for sh in left_out]
        shown = [*shown, f"{len(left_out)} more shapes not run (at most {_shapes.MAX_IMAGES}): "
                 + ", ".join(sh.label for sh in left_out)]
    stage.detail = "; ".join(shown) + ("" if s.templated else " (default prompt, no chat template)")


def _nonfinite_finding(s: Session, stage: StageResult, counts: list[str], culprits: list[str]) -> None:
    where = f"; non-finite parameters: {', '.join(culprits)}" if culprits else ""
    from_adapter = bool(s.plan.adapter) and any("lora" in c for c in culprits)
    if counts:
        message = f"logits are NaN or inf ({'; '.join(counts)}){where}"
    else:  # the weights hold NaN/inf that these prompts did not reach (unused rows or layers)
        message = (f"parameters hold NaN or inf ({', '.join(culprits)}) although the logits for these images are "
                   "finite: prompts or images that reach them give NaN")
    stage.add(message, path=s.plan.adapter if from_adapter else s.path, tensor=culprits[0] if culprits else None,
              hint=("The adapter holds NaN/inf tensors (a diverged run): retrain or use an earlier checkpoint."
                    if from_adapter else
                    "Fix the tensors named above (a diverged run or a broken save: use an earlier checkpoint); "
                    "if none are named, the dtype overflows: try --dtype bf16 or fp32."))


def _forward_errors(s: Session, stage: StageResult, raised: list[tuple[str, Any, Shape | None, Exception]]) -> None:
    """One finding per cause: the images whose forward pass raised the same error (numbers aside)."""
    import re

    if not raised:
        return
    disagree = _shapes.disagreements(s.loaded.processor, s.config)
    groups: dict[tuple[str, str], list[tuple[str, Any, Shape | None, Exception]]] = {}
    for item in raised:
        e = item[3]
        if is_oom(e):
            key = ("oom", "")
        elif disagree:  # one cause, whatever each shape raised
            key = ("disagree", "")
        else:
            key = (type(e).__name__, re.sub(r"\d+", "N", " ".join(str(e).split())))
        groups.setdefault(key, []).append(item)
    for (kind, _), items in groups.items():
        sizes = "; ".join(f"the {lb} image {im.size[0]}x{im.size[1]}" + (f" ({sh.note})" if sh and sh.note else "")
                          for lb, im, sh, _ in items)
        if kind == "oom":
            from doctor.sanity.memory import free_memory

            stage.add(f"out of memory in the forward pass with {sizes} on {s.plan.device} "
                      f"({gib(free_memory(s.plan.device))} free after loading)", path=s.path,
                      hint="Use --load-4bit, a smaller image, or a larger GPU.")
            continue
        errors = list(dict.fromkeys(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}" for *_, e in items))
        shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} other errors" if len(errors) > 3 else "")
        stage.add(f"the forward pass raised with {sizes}: {shown}", path=s.path, hint=_forward_hint(disagree, shown))


def _forward_hint(disagree: list[str], msg: str) -> str:
    if disagree:
        return ("The processor and config.json disagree: " + "; ".join(disagree) + ". The processor cuts the image "
                "one way and the model expects another: write the model's values (the ones it was trained with) into "
                "the processor config.")
    if "image features and image tokens do not match" in msg.lower():
        return ("The processor expands the image token to a different count than the model produces: align "
                "patch_size, vision_feature_select_strategy and num_additional_image_tokens in the processor "
                "config with config.json.")
    if "split_with_sizes" in msg or "image_grid_pinpoints" in msg:
        return "config.json and the processor tile images differently: write one image_grid_pinpoints list into both."
    return "Read the error; run `vlm-doctor check` on the model folder for the static cause."


def generate(s: Session, stage: StageResult, max_new_tokens: int, timeout: float) -> None:
    """Stage 3: greedy generation gives text that is not empty and not one token repeated."""
    import torch

    tok = s.loaded.processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    started = time.perf_counter()
    try:
        with torch.no_grad(), quiet():
            out = s.model.generate(**s.inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                   max_time=timeout, pad_token_id=pad)
    except Exception as e:  # noqa: BLE001
        msg = " ".join(str(e).split())[:300]
        stage.add(f"generate() raised {type(e).__name__}: {msg}", path=s.path,
                  hint="Read the error; the forward pass worked, so check generation_config.json.")
        return
    elapsed = time.perf_counter() - started
    new = [int(t) for t in out[0, s.inputs["input_ids"].shape[-1]:]]
    special = set(getattr(tok, "all_special_ids", []) or [])
    content = [t for t in new if t not in special]
    text = tok.decode(new, skip_special_tokens=True)
    stage.metrics.update({"new_tokens": len(new), "text": text, "seconds_generating": round(elapsed, 3),
                          "tokens_per_second": round(len(new) / elapsed, 2) if elapsed > 0 else None})
    stage.detail = f"{len(new)} tokens: {text[:60]!r}"
    if not content:
        stage.add(f"the model generated no text: {len(new)} token(s), all special ({new[:8]})", path=s.path,
                  hint="The first token is EOS: the prompt format or chat template does not match the model "
                       "(pass --prompt, check chat_template.json and eos_token_id).")
    elif len(new) >= MIN_REPEAT and len(set(new)) == 1:
        piece = tok.convert_ids_to_tokens(new[0])
        stage.add(f"the model repeats one token {len(new)} times ({new[0]} {piece!r})", path=s.path,
                  hint="Degenerate output points to a wrong base model for these weights or a broken chat template.")
    elif not text.strip():
        stage.add(f"the generated tokens {new[:8]} decode to empty text", path=s.path,
                  hint="The tokenizer does not match the model's vocabulary: copy the tokenizer of the base.")
    if elapsed >= timeout:
        stage.add(f"generation stopped at the {timeout:g} s timeout after {len(new)} token(s)", path=s.path,
                  severity=Severity.WARNING, hint="Raise --timeout, use a GPU, or lower --max-new-tokens.")


def image_matters(s: Session, stage: StageResult, tolerance: float = IMAGE_TOLERANCE) -> None:
    """Stage 4: next-token logits with the real image vs a blank and a noise image of the same size."""
    import torch

    real = s.last_logits
    scale = max(float(real.abs().max()), 1e-6)
    diffs = {}
    for label, img in (("blank", _inputs.blank_like(s.image)), ("noise", _inputs.noise_like(s.image))):
        inputs = _inputs.make_inputs(s.loaded.processor, s.text, img, s.plan.device, s.loaded.torch_dtype)
        with torch.no_grad(), quiet():
            other = s.model(**inputs).logits[0, -1].float().cpu()
        diffs[label] = float((other - real).abs().max()) / scale
        same_top = int(other.argmax()) == int(real.argmax())
        stage.metrics[f"{label}_same_top_token"] = same_top
    stage.metrics.update({f"relative_difference_{k}": v for k, v in diffs.items()})
    stage.metrics["tolerance"] = tolerance
    stage.detail = ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()) + f" (relative max |Δlogit|, tol {tolerance:g})"
    if max(diffs.values()) <= tolerance:
        causes = image_path_problems(s.model, s.inputs)
        stage.add(
            "the image does not reach the logits: the next-token logits with a blank and a noise image differ from "
            f"the real image's by at most {max(diffs.values()):.2g} of their magnitude"
            + (f"; {'; '.join(causes)}" if causes else ""),
            path=s.path,
            hint=("Fix the causes named above." if causes else
                  "The projector output is constant or the image features never reach the language model: "
                  "check the projector tensors and (mllama) the cross-attention layers and gates."),
        )

"""SAN: the inference sanity pass, run by ``vlm-doctor check --sanity`` after the static checks.

The runner adds a ``sanity`` pseudo-artifact for every model and adapter folder when
``Options.sanity`` is set; it comes last, so the static findings are already in the report. One
fixture, ``sanity_result``, runs ``doctor.sanity.run_sanity`` once (the model loads once) and each
check below reports one stage. Sanity options beyond ``device``/``dtype`` come from
``Options.extra``: ``sanity_image``, ``sanity_prompt``, ``sanity_probe``, ``sanity_max_new_tokens``,
``sanity_timeout``, ``sanity_load_4bit``, ``sanity_load_8bit``, ``sanity_processor`` (a folder to take
the processor from). A folder without processor files still gets the pass (CKP406 warns; the pass
builds the processor from config.json and the tokenizer, or takes the base's); a folder without a
tokenizer gets it when ``--base`` (or ``sanity_processor``) has one. ``vlm-doctor sanity`` runs the pass
itself and hands it in through ``Options.extra["sanity_results"][path]``. The stage table reaches
the report through the runner (``Report.collect``), never written into it by a check.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doctor.errors import Skip, UsageError
from doctor.findings import Finding, Severity
from doctor.registry import Check, fixture, register

# Static families whose errors make loading pointless (or, for SEC, unsafe: a pickle would run).
_BLOCKING = ("CKP", "SEC", "ADP", "LLV", "XTN")


@fixture
def sanity_result(artifact: Any, options: Any, report: Any) -> Any:
    """The whole sanity pass for this model or adapter, run once and shared by the SAN checks."""
    pre = (options.extra or {}).get("sanity_results", {}).get(artifact.path)
    if pre is not None:
        return pre
    path = Path(artifact.path)
    base = options.base
    model_dir = path
    if (path / "adapter_config.json").is_file():
        if base is None:
            recorded = _json(path / "adapter_config.json").get("base_model_name_or_path")
            base = recorded if isinstance(recorded, str) and Path(recorded).is_dir() else None
        if base is None:
            raise Skip("the adapter's base is not a local folder: pass --base DIR to run the sanity pass")
        model_dir = Path(base)
    config = _json(model_dir / "config.json")
    if not config:
        raise Skip(f"{model_dir}/config.json is missing or unreadable; nothing to load")
    if not _registered(config.get("model_type")):
        raise Skip(f"model_type {config.get('model_type')!r} is not an architecture of the installed transformers")
    processor = _extra_dir(options.extra.get("sanity_processor"))
    local_base = base if base and Path(base).is_dir() else None
    # A missing tokenizer (CKP401) does not stop the pass when the base or --processor has one.
    spare = ("CKP401",) if any(d and _has_tokenizer(d) for d in (local_base, processor)) else ()
    blocking = [c for c in _static_errors(report, [str(path), str(model_dir)]) if c not in spare]
    if blocking:
        raise Skip(f"the static checks found errors that make loading pointless ({', '.join(blocking)}); "
                   "fix them first, or run `vlm-doctor sanity` directly")
    extra = options.extra
    from doctor.sanity import run_sanity

    try:
        result = run_sanity(
            str(path), base=base if model_dir != path else local_base, image=extra.get("sanity_image"),
            prompt=extra.get("sanity_prompt"), device=options.device, dtype=options.dtype,
            load_4bit=bool(extra.get("sanity_load_4bit")), load_8bit=bool(extra.get("sanity_load_8bit")),
            max_new_tokens=int(extra.get("sanity_max_new_tokens", 16)), probe=extra.get("sanity_probe"),
            timeout=float(extra.get("sanity_timeout", 120.0)), processor=processor,
        )
    except UsageError as e:
        raise Skip(str(e)) from None
    return result


def _extra_dir(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _has_tokenizer(folder: str) -> bool:
    from doctor.sanity.processor import has_tokenizer

    return has_tokenizer(folder)


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _registered(model_type: Any) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING_NAMES


def _static_errors(report: Any, paths: list[str]) -> list[str]:
    if report is None:
        return []
    roots = [p.rstrip("/") for p in paths]
    codes = {
        f.code for f in report.findings
        if f.severity is Severity.ERROR and f.code[:3] in _BLOCKING
        and any(f.path == r or f.path.startswith(r + "/") for r in roots)
    }
    return sorted(codes)


class _StageCheck(Check):
    """Base of the SAN checks: report the findings of one stage of the shared sanity pass."""

    stage = 0
    artifacts = frozenset({"sanity"})
    packages = ("torch", "transformers")

    def run(self, sanity_result: Any) -> Iterator[Finding]:
        st = sanity_result.stage(self.stage)
        if st.status == "skip":
            raise Skip(st.detail)
        for f in st.findings:
            yield self.finding(f.message, path=f.path, location=f.location, hint=f.hint, severity=f.severity)


@register
class ModelDoesNotLoad(_StageCheck):
    """The model does not load cleanly through transformers' Auto classes.

    ## What it does
    Loads the folder with `AutoModelForImageTextToText.from_pretrained(..., output_loading_info=True)`
    (`AutoModelForVision2Seq` on older 4.x) and its processor, plus the adapter through peft. Without
    processor files the processor comes from `--processor DIR`, the base, or config.json's vision
    settings and the tokenizer (the stage's detail says which; CKP406 warns about the files); no
    tokenizer anywhere is an error. Missing
    and shape-mismatched weights are errors naming the tensors, grouped by part (projector, vision tower,
    image_newline, cross-attention, language model); unused weights are warnings, or errors when they are
    LoRA tensors or original-LLaVA names. Out-of-memory is reported with the parameter bytes needed and
    the memory free.

    ## Why is this bad?
    transformers only logs "Some weights ... were newly initialized" and goes on with random values: a
    model without its projector loads, answers, and ignores the image.

    ## Example
    `projector not loaded: 4 tensor(s) missing ...: model.multi_modal_projector.linear_1.bias, ...`

    ## How to fix
    Put the missing tensors back: for an original-LLaVA LoRA run, load non_lora_trainables.bin before
    merging; for a merged model, re-run the merge so it writes every part.
    """

    code = "SAN001"
    name = "model-does-not-load"
    stage = 1


@register
class ForwardPassBroken(_StageCheck):
    """One forward pass with an image raises or gives NaN/inf logits.

    ## What it does
    Builds the prompt through the processor's chat template (or the family default with its image
    token), runs one forward pass and checks every logit is finite, then one image per shape the
    processor treats apart: llava_next one per aspect ratio in the union of config.json's and the
    processor's `image_grid_pinpoints` (at the pinpoint's size, which is what selects it) plus every
    pinpoint only one side knows, a very tall and a very wide image; mllama one per tile arrangement;
    Qwen2-VL / Qwen2.5-VL a portrait, a square and a landscape image within `min_pixels`/`max_pixels`.
    Images that raise for one cause are one finding naming each image size, the exception, and where
    the processor and config.json disagree. Every floating-point parameter is checked for NaN/inf
    (one float32 sum each), so NaN weights fail here even where this prompt does not reach them.

    ## Why is this bad?
    A processor/config mismatch (image token count, grid pinpoints, tile count, merge size) raises at
    the first request with that shape; NaN logits or weights (a diverged run, a broken save, fp16
    overflow) make answers garbage.

    ## Example
    `logits are NaN or inf (12382 of 12382 ...); non-finite parameters: ...q_proj.lora_B.default.weight`

    ## How to fix
    Fix the tensors or config keys named in the message: retrain or pick an earlier checkpoint for a NaN
    adapter; align the processor config with config.json for token-count errors.
    """

    code = "SAN002"
    name = "forward-pass-broken"
    stage = 2


@register
class GenerationDegenerate(_StageCheck):
    """Greedy generation is empty, one token repeated, or does not decode to text.

    ## What it does
    Generates `--max-new-tokens` tokens greedily, bounded by a wall-time limit (`max_time`), and checks
    that some are not special tokens, that they are not all one token (4 or more), and that they decode
    to non-blank text.

    ## Why is this bad?
    An immediate EOS or a loop of one token is what a user sees first; it points to a chat template or
    stop-token mistake, or a base model that does not match the weights.

    ## Example
    `the model repeats one token 16 times (29871 '▁')`

    ## How to fix
    Check the chat template and eos_token_id, and that the weights were merged into the right base.
    """

    code = "SAN003"
    name = "generation-degenerate"
    severity = Severity.ERROR
    stage = 3


@register
class ImageIgnored(_StageCheck):
    """The image does not change the model's logits.

    ## What it does
    Compares the next-token logits for the real image with those for a uniform grey and a noise image
    of the same size (so the same tiling and token count). The image matters when the largest logit
    change exceeds 0.001 of the largest logit. A disconnected image path gives exactly zero change;
    the check then names what it can see: all-zero projector weights, mllama cross-attention gates at 0,
    `cross_attention_layers` outside the text model, no image token in the prompt.

    ## Why is this bad?
    A model whose logits ignore the image answers from text alone; every image benchmark then measures
    a text model. A random tiny model still passes: the check finds a cut path, not an untrained one.

    ## Example
    `the image does not reach the logits ...; all 1 cross-attention gates are 0`

    ## How to fix
    Restore the projector (or mllama cross-attention) weights from a trained checkpoint and check the
    image-token and cross-attention settings in config.json.
    """

    code = "SAN004"
    name = "image-ignored"
    stage = 4


@register
class AdapterMergeDisagrees(_StageCheck):
    """Base + adapter (peft) and the merged model give different logits.

    ## What it does
    With an adapter, compares the logits of base + adapter through peft with those of the merged model
    (peft's in-memory `merge_and_unload(safe_merge=True)`, or a merged folder given as MODEL), over every
    position of the prompt. Tolerance of the relative max |Δlogit|: 1e-3 fp32, 2e-2 fp16, 5e-2 bf16. Also
    warns when the adapter changes nothing at all (lora_B all zero).

    ## Why is this bad?
    The merged model is what gets deployed; if it disagrees with base + adapter, the merge lost or
    corrupted the fine-tuning (a dropped tensor, a wrong scale, the wrong base).

    ## Example
    `base + out/lora and the merged model merged/ disagree: relative max |Δlogit| 0.26 > 0.001`

    ## How to fix
    Merge again from the exact base the adapter was trained on, with the adapter's alpha/r (rslora), and
    check that no adapter tensor was dropped.
    """

    code = "SAN005"
    name = "adapter-merge-disagrees"
    stage = 5


@register
class ProbeAccuracyLow(_StageCheck):
    """POPE-style yes/no questions about images are answered at chance level.

    ## What it does
    Reads the `--probe` JSONL file (`{"image", "question", "answer": "yes"|"no"}` per line), asks each
    question with LLaVA-1.5's POPE prompt and reads yes/no from the next-token logits. Reports accuracy,
    precision, recall, F1 and the yes-ratio; fails below the minimum accuracy (default 0.6).

    ## Why is this bad?
    Chance accuracy (0.5) or a constant answer means the model does not look at the image, whatever the
    loss curve said.

    ## Example
    `probe accuracy 48.0% on 50 yes/no questions is below 60%`

    ## How to fix
    Look at stages 1 and 4 first (projector, image path); then check the base model and the data.
    """

    code = "SAN006"
    name = "probe-accuracy-low"
    stage = 6

"""Stage 1: load the model and its processor through transformers' Auto classes.

``from_pretrained(..., output_loading_info=True, ignore_mismatched_sizes=True)`` returns the keys
transformers could not fill (missing: randomly initialised), did not use (unexpected) and
re-initialised for a shape mismatch; each group becomes a finding that names the tensors.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doctor.errors import UsageError
from doctor.sanity import keys as _keys
from doctor.sanity.memory import estimate_bytes, free_memory, gib, is_oom
from doctor.sanity.quiet import quiet, short
from doctor.sanity.results import StageResult

TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class Plan:
    """What to load, resolved from the command line before anything heavy is imported."""

    model: str  # the folder whose weights stages 1-4 test (the base when ``adapter`` is applied on top)
    adapter: str | None  # a PEFT adapter applied on top of ``model`` in stage 1
    compare: tuple[str, str] | None  # stage 5: (base, adapter) to compare with ``model``, a merged output
    device: str
    dtype: str
    quantization: str | None
    family: str | None
    processor: str | None = None  # --processor DIR: where the image processor (and a missing tokenizer) come from
    sources: tuple[str, ...] = ()  # other folders to take a missing processor or tokenizer from (bases, the adapter)


@dataclass
class Loaded:
    model: Any
    processor: Any
    torch_dtype: Any
    is_peft: bool = False


def plan(model: str, adapter: str | None, base: str | None, device: str, dtype: str,
         quantization: str | None, processor: str | None = None) -> Plan:
    """Decide the roles of MODEL / --adapter / --base:

    - MODEL is an adapter folder: stages 1-4 test base + adapter, base = --base or the adapter's local
      base_model_name_or_path; stage 5 compares with the in-memory merge;
    - --adapter alone: MODEL is the base, as above;
    - --adapter and --base: MODEL is the merged model (stages 1-4); stage 5 compares it with
      base + adapter through peft;
    - --base alone: MODEL is tested; the base is where a missing processor or tokenizer comes from.
    """
    root = Path(model)
    if not root.is_dir():
        raise UsageError(f"{model}: no such model folder")
    compare = None
    if processor is not None and not Path(processor).is_dir():
        raise UsageError(f"{processor}: no such processor folder (--processor takes a folder with "
                         "preprocessor_config.json or processor_config.json)")
    given_base = base
    if (root / "adapter_config.json").is_file():
        if adapter:
            raise UsageError(f"{model} is itself an adapter; pass the base as MODEL or with --base, not two adapters")
        adapter, model = model, base or _adapter_base(root)
    elif adapter and base:
        compare, adapter = (base, adapter), None
    elif base and not Path(base).is_dir():
        raise UsageError(f"{base}: no such base model folder")
    for a in (adapter, compare[1] if compare else None):
        if a and not Path(a, "adapter_config.json").is_file():
            raise UsageError(f"{a}: no adapter_config.json; --adapter takes a PEFT adapter folder")
    if compare and not Path(compare[0]).is_dir():
        raise UsageError(f"{compare[0]}: no such base model folder")
    cfg = _read_json(Path(model) / "config.json")
    family = cfg.get("model_type") if isinstance(cfg, dict) else None
    from doctor.sanity.processor import recorded_base

    candidates = [compare[0] if compare else None, given_base, recorded_base(model), adapter,
                  compare[1] if compare else None]
    sources = tuple(dict.fromkeys(str(c) for c in candidates if c and Path(c).is_dir() and str(c) != str(model)))
    return Plan(model, adapter, compare, resolve_device(device), resolve_dtype(dtype, device, quantization), quantization,
                family, processor, sources)


def _adapter_base(adapter: Path) -> str:
    cfg = _read_json(adapter / "adapter_config.json") or {}
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if isinstance(base, str) and Path(base).is_dir():
        return base
    raise UsageError(
        f"{adapter} is an adapter whose base ({base!r}) is not a local folder; pass the base model with --base DIR"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def resolve_device(device: str) -> str:
    if device not in ("auto", "cuda", "cpu") and not device.startswith("cuda:"):
        raise UsageError(f"unknown device {device!r}: use auto, cuda or cpu")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda:0" if device in ("auto", "cuda") else device
    if device == "auto":
        return "cpu"
    raise UsageError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")


def resolve_dtype(dtype: str, device: str, quantization: str | None = None) -> str:
    if dtype not in ("auto", *TORCH_DTYPES):
        raise UsageError(f"unknown dtype {dtype!r}: use auto, fp16, bf16 or fp32")
    if dtype != "auto":
        return dtype
    if not resolve_device(device).startswith("cuda"):
        return "fp32"  # half precision on CPU is slow and some kernels lack it
    if quantization == "8bit":
        return "fp16"  # LLM.int8 matmuls run in fp16; bf16 inputs are cast (bitsandbytes says so per call)
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def skip_reason(p: Plan) -> str | None:
    """Why this plan cannot run here at all (quantization without CUDA or bitsandbytes)."""
    if p.quantization:
        if not p.device.startswith("cuda"):
            return f"--load-{p.quantization} needs bitsandbytes on a CUDA GPU; this run is on {p.device}"
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            return f"--load-{p.quantization} needs the bitsandbytes package: pip install bitsandbytes"
    return None


def load(p: Plan, stage: StageResult) -> Loaded | None:
    """Stage 1. Returns the loaded model, or None with findings on ``stage``."""
    model = load_model(p.model, p, stage)
    if model is None:
        return None
    processor = _processor(p, stage)
    loaded = Loaded(model, processor, torch_dtype(p))
    if p.adapter:
        peft_model = apply_adapter(model, p.adapter, stage)
        if peft_model is None:
            return None
        loaded.model, loaded.is_peft = peft_model, True
    stage.detail = f"{type(model).__name__}, {p.dtype}" + (f", {p.quantization}" if p.quantization else "")
    if processor is None:
        return None
    stage.detail += f"; processor: {stage.metrics['processor']}"
    return loaded


def torch_dtype(p: Plan) -> Any:
    import torch

    return getattr(torch, TORCH_DTYPES[p.dtype])


def load_model(folder: str, p: Plan, stage: StageResult) -> Any | None:
    """One model folder through the Auto classes; loading-info problems become findings on ``stage``."""
    cfg = _read_json(Path(folder) / "config.json")
    if not isinstance(cfg, dict):
        stage.add(f"{folder}/config.json is missing or not valid JSON; transformers cannot build the model",
                  path=folder, hint="Copy config.json from the base model (or re-run the merge that wrote this folder).")
        return None
    if not _registered(cfg.get("model_type")):
        stage.add(f"model_type {cfg.get('model_type')!r} is not an architecture of the installed transformers",
                  path=f"{folder}/config.json", key="model_type",
                  hint="Original-LLaVA types (llava_llama, llava_mistral) load only with the LLaVA repo; "
                       "convert the folder to transformers' llava layout, or upgrade transformers.")
        return None
    need, free = estimate_bytes(folder, p.dtype, p.quantization), free_memory(p.device)
    stage.metrics.update({"parameter_bytes_estimate": need, "free_bytes": free})
    if need is not None and free is not None and need > free:
        stage.add(_oom_message(folder, p, need, free), path=folder, hint=_oom_hint(p))
        return None
    try:
        with quiet():
            model, info = _from_pretrained(folder, p, torch_dtype(p))
    except Exception as e:  # noqa: BLE001 - every load failure becomes a finding
        if is_oom(e):
            stage.add(_oom_message(folder, p, need, free_memory(p.device)), path=folder, hint=_oom_hint(p))
        else:
            stage.add(f"loading {folder} raised {type(e).__name__}: {short(e)}", path=folder,
                      hint="Read the error: a wrong config, a missing shard or a transformers version that "
                           "does not know this layout are the usual causes (run `vlm-doctor check` on the folder).")
        return None
    _keys.report_loading_info(stage, folder, info)
    return model.eval()


def _registered(model_type: Any) -> bool:
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    except ImportError:
        return True
    return isinstance(model_type, str) and model_type in CONFIG_MAPPING_NAMES


def auto_classes() -> list[Any]:
    """The Auto classes for image-text-to-text models of the installed transformers, newest first
    (``AutoModelForImageTextToText`` from 4.46, ``AutoModelForVision2Seq`` on older 4.x)."""
    import transformers

    return [c for n in ("AutoModelForImageTextToText", "AutoModelForVision2Seq") if (c := getattr(transformers, n, None))]


def _from_pretrained(folder: str, p: Plan, torch_dtype: Any) -> tuple[Any, dict[str, Any]]:
    import importlib.util

    import transformers
    from packaging.version import Version

    kwargs: dict[str, Any] = {"output_loading_info": True, "ignore_mismatched_sizes": True,
                              "trust_remote_code": False}
    new_api = Version(transformers.__version__.split("+")[0]) >= Version("4.56")
    kwargs["dtype" if new_api else "torch_dtype"] = torch_dtype
    on_cuda = p.device.startswith("cuda")
    if on_cuda and importlib.util.find_spec("accelerate") is not None:
        kwargs["device_map"] = {"": p.device}
    if p.quantization:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype)
            if p.quantization == "4bit" else BitsAndBytesConfig(load_in_8bit=True)
        )
    last: Exception | None = None
    for cls in auto_classes():
        try:
            model, info = cls.from_pretrained(folder, **kwargs)
        except ValueError as e:  # "Unrecognized configuration class": try the older Auto class
            if "Unrecognized configuration class" not in str(e):
                raise
            last = e
            continue
        if on_cuda and "device_map" not in kwargs:
            model = model.to(p.device)
        return model, info
    raise last or RuntimeError("transformers has no AutoModelForImageTextToText / AutoModelForVision2Seq")


def _processor(p: Plan, stage: StageResult) -> Any:
    """The folder's processor, or one built from what is there (``doctor.sanity.processor``)."""
    from doctor.sanity.processor import ProcessorError, resolve

    cfg = _read_json(Path(p.model) / "config.json")
    try:
        processor, how = resolve(p.model, cfg if isinstance(cfg, dict) else {}, p.processor, list(p.sources))
    except ProcessorError as e:
        stage.add(str(e), path=p.processor or p.model,
                  hint="Copy the processor and tokenizer files (preprocessor_config.json / processor_config.json, "
                       "tokenizer files, chat_template.jinja) from the base model, or name a folder that has them "
                       "with --processor DIR or --base DIR.")
        return None
    stage.metrics["processor"] = how
    return processor


def apply_adapter(model: Any, adapter: str, stage: StageResult) -> Any | None:
    """base + adapter through peft; adapter tensors peft drops become a finding."""
    from peft import PeftModel

    try:
        with warnings.catch_warnings(record=True) as caught, quiet(keep_warnings=True):
            warnings.simplefilter("always")
            peft_model = PeftModel.from_pretrained(model, adapter).eval()
    except Exception as e:  # noqa: BLE001
        stage.add(f"peft could not apply {adapter}: {type(e).__name__}: {short(e)}", path=adapter,
                  hint="Check that the adapter was trained on this base (`vlm-doctor check` on the adapter).")
        return None
    for w in caught:
        text = str(w.message)
        if "missing adapter keys" in text:
            stage.add(f"peft dropped adapter tensors: {short(text, 400)}", path=adapter,
                      hint="The adapter's key layout does not match this base's modules (a different family or "
                           "transformers layout); rename the keys or merge in the layout it was saved in.")
    return peft_model


def _oom_message(folder: str, p: Plan, need: int | None, free: int | None) -> str:
    what = p.quantization or p.dtype
    return (f"out of memory loading {folder} on {p.device}: the parameters need about {gib(need)} in {what}, "
            f"{gib(free)} is free")


def _oom_hint(p: Plan) -> str:
    if p.device.startswith("cuda"):
        return ("Use --load-4bit (about a quarter of fp16) or --load-8bit, free the GPU, or run on a larger one; "
                "--device cpu works with enough RAM.")
    return "Free memory, run on a GPU (--device cuda), or test a smaller model."

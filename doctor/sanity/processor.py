"""The processor for the sanity pass: the folder's own, or one built from what is there.

Most merge and training outputs hold ``config.json``, the weights and the tokenizer, but no
processor files; the pass must still run. In order:

1. ``--processor DIR``: its image-processor files (and its tokenizer when the model has none);
2. the model folder's processor files, through ``AutoProcessor`` as users load them. Qwen2-VL,
   Qwen2.5-VL and Qwen3-VL processors hold a video processor that needs torchvision; without torchvision
   ``AutoProcessor`` raises, so the processor is assembled from the folder's image processor
   (the PIL one) and tokenizer with no video processor (images need none);
3. the base's processor files (``--base``, an adapter's base, or ``_name_or_path`` recorded in
   ``config.json`` when it is a local folder), with the model's own tokenizer;
4. built from ``config.json``: the image processor from ``vision_config`` (and, for llava_next,
   ``image_grid_pinpoints``), the processor's token settings from the model config, the tokenizer
   from the model folder (else the base, else ``--processor DIR``).

``resolve`` returns the processor and a sentence saying which of these was used; stage 1 puts it
in its detail. Family specifics live in ``FAMILIES``: adding a family is one entry there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doctor.sanity.quiet import quiet, short

# transformers' defaults for CLIP-style and SigLIP-style towers (image_utils.OPENAI_CLIP_MEAN, IMAGENET_STANDARD_MEAN)
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]
# Extra tokens a vision tower emits besides its patches (the CLS token); CKP407 uses the same numbers.
ADDITIONAL_TOKENS = {"clip_vision_model": 1, "siglip_vision_model": 0}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class ProcessorError(Exception):
    """No processor can be had: the message says what is missing and where it was looked for."""


@dataclass(frozen=True)
class Family:
    """How to build one family's processor from its model config."""

    processor: str  # the transformers processor class
    image_processor: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]  # config -> (class, kwargs)
    processor_kwargs: Callable[[dict[str, Any], Any], dict[str, Any]]  # (config, tokenizer) -> kwargs
    video: bool = False  # the processor class takes a video_processor (built without one)


def _vision(cfg: dict[str, Any]) -> dict[str, Any]:
    v = cfg.get("vision_config")
    return v if isinstance(v, dict) else {}


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def _tower_norm(cfg: dict[str, Any]) -> dict[str, Any]:
    siglip = "siglip" in str(_vision(cfg).get("model_type", ""))
    return {"image_mean": HALF if siglip else CLIP_MEAN, "image_std": HALF if siglip else CLIP_STD}


def _llava_image(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    size = _int(_vision(cfg).get("image_size"), 336)
    siglip = "siglip" in str(_vision(cfg).get("model_type", ""))
    if siglip:  # SigLIP processors resize to a square, no crop
        return "SiglipImageProcessor", {"size": {"height": size, "width": size}, **_tower_norm(cfg)}
    return "CLIPImageProcessor", {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size},
                                  **_tower_norm(cfg)}


def _llava_next_image(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    size = _int(_vision(cfg).get("image_size"), 336)
    kwargs: dict[str, Any] = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size},
                              **_tower_norm(cfg)}
    if isinstance(cfg.get("image_grid_pinpoints"), list):
        kwargs["image_grid_pinpoints"] = cfg["image_grid_pinpoints"]
    return "LlavaNextImageProcessor", kwargs


def _llava_tokens(cfg: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    v = _vision(cfg)
    out: dict[str, Any] = {"patch_size": _int(v.get("patch_size"), 14),
                           "vision_feature_select_strategy": cfg.get("vision_feature_select_strategy", "default"),
                           "num_additional_image_tokens": ADDITIONAL_TOKENS.get(str(v.get("model_type")), 1)}
    token = _token_at(tokenizer, cfg.get("image_token_id", cfg.get("image_token_index")))
    if token:
        out["image_token"] = token
    return out


def _mllama_image(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    v = _vision(cfg)
    size = _int(v.get("image_size"), 560)
    return "MllamaImageProcessor", {"size": {"height": size, "width": size},
                                    "max_image_tiles": _int(v.get("max_num_tiles"), 4)}


def _qwen_image(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    v = _vision(cfg)
    return "Qwen2VLImageProcessor", {"patch_size": _int(v.get("patch_size"), 14),
                                     "merge_size": _int(v.get("spatial_merge_size"), 2),
                                     "temporal_patch_size": _int(v.get("temporal_patch_size"), 2)}


def _qwen3_image(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name, kwargs = _qwen_image(cfg)  # qwen3_vl maps to Qwen2-VL's image processor, with 16-px patches
    return name, {**kwargs, "patch_size": _int(_vision(cfg).get("patch_size"), 16)}


def _gemma3_image(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    v = _vision(cfg)
    size = _int(v.get("image_size"), 896)
    return "Gemma3ImageProcessor", {"size": {"height": size, "width": size}, "image_mean": HALF, "image_std": HALF}


def _gemma3_tokens(cfg: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    return {"image_seq_length": _int(cfg.get("mm_tokens_per_image"), 256)}


def _no_tokens(cfg: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    return {}


FAMILIES: dict[str, Family] = {
    "llava": Family("LlavaProcessor", _llava_image, _llava_tokens),
    "llava_next": Family("LlavaNextProcessor", _llava_next_image, _llava_tokens),
    "mllama": Family("MllamaProcessor", _mllama_image, _no_tokens),
    "qwen2_vl": Family("Qwen2VLProcessor", _qwen_image, _no_tokens, video=True),
    "qwen2_5_vl": Family("Qwen2_5_VLProcessor", _qwen_image, _no_tokens, video=True),
    "qwen3_vl": Family("Qwen3VLProcessor", _qwen3_image, _no_tokens, video=True),
    "gemma3": Family("Gemma3Processor", _gemma3_image, _gemma3_tokens),
}


def _token_at(tokenizer: Any, token_id: Any) -> str | None:
    if not isinstance(token_id, int) or token_id < 0:
        return None
    try:
        token = tokenizer.convert_ids_to_tokens(token_id)
    except Exception:  # noqa: BLE001 - an id beyond the vocabulary: CKP403 reports it
        return None
    return token if isinstance(token, str) and token != getattr(tokenizer, "unk_token", None) else None


# ---- where the parts are ---------------------------------------------------------------------

def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def has_image_processor(folder: str | Path) -> bool:
    """The folder holds image-processor settings (what CKP406 looks for)."""
    f = Path(folder)
    proc = read_json(f / "processor_config.json")
    return (f / "preprocessor_config.json").is_file() or (isinstance(proc, dict) and isinstance(
        proc.get("image_processor"), dict))


def has_tokenizer(folder: str | Path) -> bool:
    f = Path(folder)
    return any((f / name).is_file() for name in TOKENIZER_FILES[:3])


def recorded_base(folder: str | Path) -> str | None:
    """``_name_or_path`` in config.json (transformers 4.x writes it) when it is another local folder."""
    cfg = read_json(Path(folder) / "config.json")
    name = cfg.get("_name_or_path") if isinstance(cfg, dict) else None
    if isinstance(name, str) and name and Path(name).is_dir() and Path(name).resolve() != Path(folder).resolve():
        return name
    return None


# ---- building --------------------------------------------------------------------------------

def resolve(model: str, cfg: dict[str, Any], processor_dir: str | None, bases: list[str]) -> tuple[Any, str]:
    """The processor for ``model`` and a sentence saying how it was had. Raises ``ProcessorError``."""
    family = FAMILIES.get(str(cfg.get("model_type")))
    own = has_image_processor(model)
    if processor_dir is None and own and has_tokenizer(model):
        return _auto(model, cfg, family)
    if family is None:
        missing = "processor files" if not own else "tokenizer files"
        raise ProcessorError(f"{model} has no {missing} and vlm-doctor cannot build a processor for model_type "
                             f"{cfg.get('model_type')!r} from config.json")
    tokenizer_dir = next((d for d in [model, processor_dir, *bases] if d and has_tokenizer(d)), None)
    if tokenizer_dir is None:
        where = ", ".join(dict.fromkeys(d for d in [model, processor_dir, *bases] if d))
        raise ProcessorError(f"no tokenizer files in {where}: the prompt cannot be tokenized")
    if processor_dir is not None:
        if not has_image_processor(processor_dir):
            raise ProcessorError(f"--processor {processor_dir} holds no preprocessor_config.json and no "
                                 "processor_config.json with an image_processor section")
        image_dir: str | None = processor_dir
        what = f"the image processor of --processor {processor_dir}"
    elif own:
        image_dir, what = model, f"the image processor of {model}"
    else:
        image_dir = next((b for b in bases if has_image_processor(b)), None)
        what = (f"the image processor of the base {image_dir}" if image_dir else
                "an image processor built from config.json's vision settings")
    processor = _assemble(model, cfg, family, image_dir, tokenizer_dir)
    note = " (no processor files in the folder)" if not own and processor_dir is None else \
        " (no tokenizer files in the folder)" if tokenizer_dir != model else ""
    return processor, f"{type(processor).__name__} from {what} and the tokenizer of {tokenizer_dir}{note}"


def _auto(model: str, cfg: dict[str, Any], family: Family | None) -> tuple[Any, str]:
    """The folder's own processor, as users load it."""
    from transformers import AutoProcessor

    try:
        with quiet():
            processor = AutoProcessor.from_pretrained(model, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001
        text = str(e).lower()
        if family is not None and family.video and ("torchvision" in text or "video" in text):
            # Qwen's video processor: torchvision missing, or no video processor settings saved.
            # Images need none: the same files without it.
            processor = _assemble(model, cfg, family, model, model)
            why = "AutoProcessor needs torchvision for it" if "torchvision" in text else \
                f"AutoProcessor failed on it: {type(e).__name__}: {short(e, 120)}"
            return processor, f"{type(processor).__name__} from {model}'s processor files, without a video processor ({why})"
        raise ProcessorError(f"AutoProcessor could not load from {model}: {type(e).__name__}: {short(e)}") from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise ProcessorError(f"AutoProcessor returned {type(processor).__name__}, not a multimodal processor "
                             "(no image processor or no tokenizer)")
    return processor, f"AutoProcessor from {model}"


def _assemble(model: str, cfg: dict[str, Any], family: Family, image_dir: str | None, tokenizer_dir: str) -> Any:
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001
        raise ProcessorError(f"AutoTokenizer could not load from {tokenizer_dir}: {type(e).__name__}: {short(e)}") from None
    kwargs = family.processor_kwargs(cfg, tokenizer)
    if image_dir is not None:
        try:
            with quiet():
                image_processor = AutoImageProcessor.from_pretrained(image_dir, trust_remote_code=False)
        except Exception as e:  # noqa: BLE001
            raise ProcessorError(f"AutoImageProcessor could not load from {image_dir}: {type(e).__name__}: "
                                 f"{short(e)}") from None
        saved = read_json(Path(image_dir) / "processor_config.json")
        if isinstance(saved, dict):  # the saved processor's own token settings win over config.json's
            kwargs.update({k: saved[k] for k in kwargs if saved.get(k) is not None})
    else:
        name, ip_kwargs = family.image_processor(cfg)
        try:  # 5.x: the PIL class (the default one needs torchvision); 4.x: the slow class is PIL
            image_processor = (getattr(transformers, name + "Pil", None) or getattr(transformers, name))(**ip_kwargs)
        except Exception as e:  # noqa: BLE001 - an old transformers without the class, or junk config values
            raise ProcessorError(f"cannot build {name} from config.json's vision settings {ip_kwargs}: "
                                 f"{type(e).__name__}: {short(e)}") from None
    template = getattr(tokenizer, "chat_template", None) or _chat_template(image_dir, tokenizer_dir, model)
    try:
        cls = getattr(transformers, family.processor)
        if family.video:
            return _without_video(cls)(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                       chat_template=template, **kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=template, **kwargs)
    except Exception as e:  # noqa: BLE001 - e.g. a transformers older than these processor arguments
        raise ProcessorError(f"cannot build {family.processor} from its parts: {type(e).__name__}: {short(e)}") from None


def _without_video(cls: type) -> type:
    """``cls`` accepting ``video_processor=None``: ProcessorMixin checks each part against its base
    class, and the video base class is importable only with torchvision."""

    def check_argument_for_proper_class(self: Any, name: str, arg: Any) -> Any:
        if name == "video_processor" and arg is None:
            return None
        return cls.check_argument_for_proper_class(self, name, arg)

    return type(cls.__name__, (cls,), {"check_argument_for_proper_class": check_argument_for_proper_class,
                                       "__module__": __name__})


def _chat_template(*folders: str | None) -> str | None:
    """A chat template saved beside a processor (chat_template.jinja, chat_template.json, or inside
    processor_config.json), the first found."""
    for folder in folders:
        if not folder:
            continue
        f = Path(folder)
        jinja = f / "chat_template.jinja"
        if jinja.is_file():
            try:
                return jinja.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                pass
        for name in ("chat_template.json", "processor_config.json"):
            doc = read_json(f / name)
            if isinstance(doc, dict) and isinstance(doc.get("chat_template"), str):
                return doc["chat_template"]
    return None

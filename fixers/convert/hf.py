"""Build the non-weight half of a transformers-native llava / llava_next checkpoint from an
original-LLaVA (or XTuner) one: the config, the tokenizer with ``<image>`` (and ``<pad>``)
added, and a processor with a slow (PIL) image processor, as transformers' own
``convert_llava_weights_to_hf.py`` / ``convert_llava_next_weights_to_hf.py`` do.

Weight names go through ``doctor.layouts``' canonical form and come out in the layout every
transformers version saves (``language_model.model.*``, ``vision_tower.vision_model.*``,
``multi_modal_projector.linear_{1,2}.*``), which transformers 4.36+ and 5.x both load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.fixers.merge.plan import Item

from doctor.errors import ArtifactError, UsageError

# original model_type -> transformers text model_type (what LlavaConfig's text_config becomes)
TEXT_TYPES = {"llava_llama": "llama", "llava": "llama", "llava_mistral": "mistral"}
_LLAVA_ONLY_KEYS = re.compile(r"^(mm_|tune_mm|freeze_mm|use_mm|image_|tokenizer_|unfreeze_mm|s2|pretrain_mm|"
                              r"mm_vision|vision_tower|_name_or_path$|architectures$|model_type$|auto_map$)")
OUT_PREFIX = {"language": "language_model.model.", "lm_head": "language_model.lm_head",
              "projector": "multi_modal_projector.", "vision": "vision_tower.vision_model."}
_IMAGE_KWARGS = frozenset({"size", "crop_size", "do_resize", "do_center_crop", "do_rescale", "rescale_factor",
                           "do_normalize", "image_mean", "image_std", "do_convert_rgb", "resample", "do_pad",
                           "image_grid_pinpoints"})
# CLIP/SigLIP towers by width: heads are not recoverable from tensor shapes.
_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1152: 16, 1280: 16}


@dataclass
class LlavaSpec:
    """Everything the HF side needs that is not a tensor."""

    text_config: dict[str, Any]
    vision_config: dict[str, Any]
    tokenizer_dir: Path
    select_layer: int = -2
    select_feature: str = "patch"
    aspect: str | None = None
    grid_pinpoints: list[list[int]] | None = None
    image_processor: dict[str, Any] | None = None
    projector_act: str = "gelu"
    generation_config: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def next(self) -> bool:
        return bool(self.grid_pinpoints) and "anyres" in str(self.aspect or "")


def hf_name(part: str, rest: str, spec: LlavaSpec) -> str | None:
    """The on-disk name of a canonical tensor in the transformers llava layout."""
    if part == "image_newline":
        return "image_newline" if spec.next else None
    if part == "lm_head":
        return OUT_PREFIX["lm_head"] + ("." + rest if rest else "")
    if part not in OUT_PREFIX:
        return None
    return OUT_PREFIX[part] + rest


def text_config_from_original(config: dict[str, Any], where: Path) -> dict[str, Any]:
    """The LLM's config inside an original-LLaVA config.json (the llama/mistral fields)."""
    mtype = str(config.get("model_type", ""))
    archs = " ".join(map(str, config.get("architectures") or []))
    text_type = TEXT_TYPES.get(mtype)
    if "Mistral" in archs:
        text_type = "mistral"
    if text_type is None:
        raise UsageError(f"{where}: model_type {mtype!r} is not convertible by vlm-doctor (llava_llama, "
                         "llava_mistral and the v1.5 'llava' collision are); keep the LLaVA codebase for it")
    text = {k: v for k, v in config.items() if not _LLAVA_ONLY_KEYS.match(k)}
    text["model_type"] = text_type
    text["architectures"] = [f"{text_type.capitalize()}ForCausalLM"]
    return text


def vision_config_from(folder: Path | None, config: dict[str, Any], vision: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The vision tower's config: from its folder's config.json, else derived from the tensor
    shapes and ``mm_hidden_size`` (heads by the usual CLIP width table)."""
    if folder is not None and (folder / "config.json").exists():
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        data = data.get("vision_config", data) if data.get("model_type") in ("clip", "siglip") else data
        data.setdefault("model_type", "clip_vision_model")
        return {k: v for k, v in data.items() if k not in ("architectures", "transformers_version", "_name_or_path")}
    patch = vision.get("embeddings.patch_embedding.weight")
    pos = vision.get("embeddings.position_embedding.weight")
    fc1 = vision.get("encoder.layers.0.mlp.fc1.weight")
    if not (patch and pos and fc1):
        raise UsageError("cannot tell the vision tower's geometry: pass --vision-tower DIR (a local CLIP folder)")
    width, p = patch[0], patch[-1]
    side = int(round((pos[0] - 1) ** 0.5)) * p
    layers = 1 + max(int(m.group(1)) for k in vision if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    return {"model_type": "clip_vision_model", "hidden_size": width, "intermediate_size": fc1[0],
            "num_hidden_layers": layers, "num_attention_heads": _HEADS_BY_WIDTH.get(width, max(1, width // 64)),
            "image_size": side, "patch_size": p, "projection_dim": config.get("mm_hidden_size", width),
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}


class HfParts:
    """The tokenizer (tokens added), the LlavaConfig and the processor, built in memory at
    planning time (the vocabulary growth decides tensor shapes) and saved at the end."""

    def __init__(self, spec: LlavaSpec, items: list[Item], seed: int = 0) -> None:
        from transformers import AddedToken, AutoTokenizer

        self.spec = spec
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(spec.tokenizer_dir))
        except Exception as e:  # noqa: BLE001 - missing/broken tokenizer files
            raise ArtifactError(f"{spec.tokenizer_dir}: cannot load its tokenizer ({type(e).__name__}: {e}); "
                                "the tokenizer files (tokenizer.json / tokenizer.model) must be there") from None
        tok = self.tokenizer
        if "<image>" not in tok.get_vocab():
            tok.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
        if tok.pad_token is None:
            tok.add_special_tokens({"pad_token": "<pad>"})
        self.image_token_id = tok.convert_tokens_to_ids("<image>")
        embed = _find(items, "language", "embed_tokens.weight")
        head = _find(items, "lm_head", "weight")
        rows = embed.shape[0]
        if len(tok) > rows:  # grow, padded to a multiple of 64 as the converter does
            new_rows = -(-len(tok) // 64) * 64
            for it in (embed, head):
                if it is not None:
                    it.grow_rows = new_rows - it.shape[0]
            rows = new_rows
        self.embed = embed
        self.config = self._config(rows)

    def _config(self, rows: int) -> Any:
        from transformers import AutoConfig, LlavaConfig, LlavaNextConfig

        spec = self.spec
        text = dict(spec.text_config)
        text["vocab_size"] = rows
        text_cfg = AutoConfig.for_model(**text)
        vision_cfg = AutoConfig.for_model(**spec.vision_config)
        strategy = {"patch": "default", "cls_patch": "full"}.get(spec.select_feature)
        if strategy is None:
            raise UsageError(f"mm_vision_select_feature {spec.select_feature!r} has no transformers equivalent "
                             "(patch -> default, cls_patch -> full)")
        patches = (vision_cfg.image_size // vision_cfg.patch_size) ** 2 + (1 if strategy == "full" else 0)
        common = dict(text_config=text_cfg, vision_config=vision_cfg, image_token_index=self.image_token_id,
                      projector_hidden_act=spec.projector_act, vision_feature_layer=spec.select_layer,
                      vision_feature_select_strategy=strategy, image_seq_length=patches,
                      tie_word_embeddings=bool(text.get("tie_word_embeddings", False)))
        if spec.next:
            cfg = LlavaNextConfig(image_grid_pinpoints=spec.grid_pinpoints, **common)
        else:
            cfg = LlavaConfig(**common)
        if self.tokenizer.pad_token_id is not None:
            cfg.pad_token_id = self.tokenizer.pad_token_id
        return cfg

    def check_names(self, items: list[Item]) -> list[str]:
        """Compare the planned tensor names with the parameters the model class declares (built
        on the meta device: no memory); drop buffers, refuse anything that would load missing."""
        import torch
        from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

        from doctor.fixers.merge.keys import canonical

        cls = LlavaNextForConditionalGeneration if self.spec.next else LlavaForConditionalGeneration
        with torch.device("meta"):
            model = cls(self.config)
        expected = {canonical(n) for n, _ in model.named_parameters()}
        tied = bool(getattr(self.config, "tie_word_embeddings", False))
        planned = {canonical(it.name): it for it in items}
        dropped = [it.name for k, it in planned.items() if k not in expected]
        missing = [f"{p}.{r}" for p, r in expected - set(planned) if not (tied and p == "lm_head")]
        if missing:
            raise ArtifactError(
                f"the converted model would lack {len(missing)} tensor(s), which transformers would initialize at "
                f"random: {', '.join(sorted(missing)[:4])}. Pass the missing part (--vision-tower DIR for the CLIP "
                "tower; the run's non_lora_trainables.bin for the projector).")
        return dropped

    def save(self, folder: Path, dtype_name: str) -> None:
        """Tokenizer and processor first, config.json last (a folder without it does not look
        finished)."""
        processor = self._processor()
        processor.save_pretrained(str(folder))
        if self.spec.generation_config is not None and self.spec.generation_config.exists():
            (folder / "generation_config.json").write_bytes(self.spec.generation_config.read_bytes())
        self.config.dtype = dtype_name
        self.config.save_pretrained(str(folder))

    def _processor(self) -> Any:
        import transformers

        spec, cfg = self.spec, self.config
        vision = cfg.vision_config
        given = dict(spec.image_processor or {})
        given.pop("image_processor_type", None)
        given.pop("processor_class", None)
        given.setdefault("size", {"shortest_edge": vision.image_size})
        given.setdefault("crop_size", {"height": vision.image_size, "width": vision.image_size})
        if spec.next:
            cls = transformers.LlavaNextImageProcessorPil
            given["image_grid_pinpoints"] = spec.grid_pinpoints
        elif spec.aspect == "pad":  # LLaVA's expand2square: pad with the mean colour, then CLIP
            cls = transformers.LlavaImageProcessorPil
            given["do_pad"] = True
        else:
            cls = transformers.CLIPImageProcessorPil
        kwargs = {k: v for k, v in given.items() if k in _IMAGE_KWARGS}
        image_processor = cls(**kwargs)
        proc_cls = transformers.LlavaNextProcessor if spec.next else transformers.LlavaProcessor
        extra = 1 if vision.model_type.startswith("clip") else 0  # CLIP's CLS token
        return proc_cls(image_processor=image_processor, tokenizer=self.tokenizer, patch_size=vision.patch_size,
                        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                        num_additional_image_tokens=extra, chat_template=getattr(self.tokenizer, "chat_template", None))


def _find(items: list[Item], part: str, rest: str) -> Any:
    from doctor.fixers.merge.keys import canonical

    for it in items:
        if canonical(it.name) == (part, rest):
            return it
    if part == "language":
        raise ArtifactError(f"no embedding matrix ({rest}) among the language model's tensors")
    return None


def read_image_processor(folder: Path | None) -> dict[str, Any] | None:
    if folder is None:
        return None
    for name in ("preprocessor_config.json", "processor_config.json"):
        p = folder / name
        if p.exists():
            data = json.loads(p.read_text(encoding="utf-8"))
            return data.get("image_processor", data)
    return None

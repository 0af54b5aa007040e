"""A tiny XTuner LLaVA release, laid out as ``xtuner convert pth_to_hf`` writes it.

Read from InternLM/xtuner (``xtuner/model/llava.py``, ``xtuner/model/utils.py``,
``xtuner/model/modules/projector/``, ``xtuner/tools/model_converters/pth_to_hf.py``):

- ``llm_adapter/``: ``self.llm.save_pretrained`` on the PEFT-wrapped LLM; targets from
  ``find_all_linear_names`` (every Linear name, minus lm_head / output_layer);
- ``visual_encoder_adapter/``: the same on the PEFT-wrapped ``CLIPVisionModel``;
- ``projector/``: ``ProjectorModel.save_pretrained``: config.json (``model_type: "projector"``,
  ``auto_map``, ``visual_hidden_size``, ``llm_hidden_size``, ``depth``, ``hidden_act``,
  ``bias``) + ``model.safetensors`` (``model.0.weight`` [llm_hidden, visual_hidden],
  ``model.0.bias``, ``model.2.weight`` [llm_hidden, llm_hidden], ``model.2.bias``) + the two
  remote-code modules its ``auto_map`` names (written here from our own minimal version).

The base LLM and CLIP tower are not in a release; they are built next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from doctor.testing import weights as _weights
from doctor.testing.models import make_clip_vision_tower, make_text_model
from doctor.testing.torch_context import seeded

XTUNER_LLM_TARGETS = ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")
XTUNER_CLIP_TARGETS = ("fc1", "fc2", "k_proj", "out_proj", "q_proj", "v_proj")
XTUNER_TRANSFORMERS = "4.36.2"


@dataclass
class XTunerInfo:
    """What ``make_xtuner_release`` wrote: the release folder, its parts (None when left out),
    the base folders it needs, and the projector's config and tensor shapes."""

    path: Path
    llm_dir: Path
    visual_encoder_dir: Path
    projector: Path
    llm_adapter: Path | None
    visual_encoder_adapter: Path | None
    projector_config: dict[str, Any]
    llm_hidden_size: int
    visual_hidden_size: int
    projector_keys: dict[str, tuple[int, ...]] = field(default_factory=dict)


def make_xtuner_release(
    out: str | Path,
    folder_name: str = "llava-tiny-xtuner",
    llm_lora: bool = True,
    visual_encoder_lora: bool = True,
    depth: int = 2,
    hidden_act: str = "gelu",
    r: int = 4,
    alpha: int = 8,
    seed: int = 0,
    hidden: int = 32,
    visual_hidden: int = 32,
    vision_key_layout: Literal["v4", "native"] = "v4",
    with_code: bool = True,
) -> XTunerInfo:
    """Write ``out/<folder_name>`` with ``llm_adapter/``, ``visual_encoder_adapter/`` and
    ``projector/``, plus the tiny base LLM (``out/llm``) and CLIP tower (``out/visual_encoder``).

    ``vision_key_layout="v4"`` names the visual-encoder LoRA tensors as releases made with
    transformers 4.x do (``base_model.model.vision_model.encoder.layers...``). Note: peft 0.21
    on transformers 5 does NOT map them onto 5.x's CLIPVisionModel (which has no
    ``vision_model`` submodule): it only warns "Found missing adapter keys" and the LoRA has no
    effect. ``"native"`` keeps the names the installed transformers gives
    (``base_model.model.encoder.layers...``), which load. ``with_code=False`` omits the
    projector's remote-code .py files (their ``auto_map`` then points at nothing).
    """
    from doctor.testing.adapters import make_lora_adapter

    out = Path(out)
    release = out / folder_name
    llm = make_text_model(out / "llm", seed=seed, hidden=hidden)
    tower = make_clip_vision_tower(out / "visual_encoder", seed=seed + 1, hidden=visual_hidden)
    llm_adapter = visual_adapter = None
    if llm_lora:
        llm_adapter = make_lora_adapter(llm, release / "llm_adapter", target_modules=list(XTUNER_LLM_TARGETS),
                                        r=r, alpha=alpha, seed=seed, dropout=0.05)
    if visual_encoder_lora:
        visual_adapter = make_lora_adapter(tower, release / "visual_encoder_adapter",
                                           target_modules=list(XTUNER_CLIP_TARGETS), r=r, alpha=alpha,
                                           seed=seed + 2, dropout=0.05)
        if vision_key_layout == "v4":
            _weights.rewrite_weights(visual_adapter, _weights.rename_keys(
                r"^base_model\.model\.(?!vision_model\.)", "base_model.model.vision_model."))
    projector_dir = release / "projector"
    config, keys = _write_projector(projector_dir, visual_hidden, hidden, depth, hidden_act, seed, with_code)
    return XTunerInfo(path=release, llm_dir=llm.path, visual_encoder_dir=tower.path, projector=projector_dir,
                      llm_adapter=llm_adapter, visual_encoder_adapter=visual_adapter, projector_config=config,
                      llm_hidden_size=hidden, visual_hidden_size=visual_hidden, projector_keys=keys)


def _write_projector(path: Path, visual_hidden: int, llm_hidden: int, depth: int, hidden_act: str, seed: int,
                     with_code: bool) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    import torch

    state = {}
    with seeded(seed + 3):
        for i in range(depth):  # Linear, act, Linear, ...: the Linears sit at 0, 2, 4, ...
            fan_in = visual_hidden if i == 0 else llm_hidden
            state[f"model.{2 * i}.weight"] = (torch.randn(llm_hidden, fan_in) * 0.02).to(torch.float16)
            state[f"model.{2 * i}.bias"] = (torch.randn(llm_hidden) * 0.02).to(torch.float16)
    _weights.write_state_dict(path, state)
    config = {
        "architectures": ["ProjectorModel"],
        "auto_map": {"AutoConfig": "configuration_projector.ProjectorConfig",
                     "AutoModel": "modeling_projector.ProjectorModel"},
        "bias": True, "depth": depth, "hidden_act": hidden_act, "llm_hidden_size": llm_hidden,
        "model_type": "projector", "torch_dtype": "float16", "transformers_version": XTUNER_TRANSFORMERS,
        "visual_hidden_size": visual_hidden,
    }
    _weights.dump_json(path / "config.json", config)
    if with_code:
        (path / "configuration_projector.py").write_text(_CONFIG_CODE, encoding="utf-8")
        (path / "modeling_projector.py").write_text(_MODEL_CODE, encoding="utf-8")
    return config, {k: tuple(v.shape) for k, v in state.items()}


# Minimal remote code matching the auto_map (our own; a doctor must never execute it).
_CONFIG_CODE = '''from transformers import PretrainedConfig


class ProjectorConfig(PretrainedConfig):
    model_type = "projector"

    def __init__(self, visual_hidden_size=4096, llm_hidden_size=4096, depth=2, hidden_act="gelu",
                 bias=True, **kwargs):
        self.visual_hidden_size = visual_hidden_size
        self.llm_hidden_size = llm_hidden_size
        self.depth = depth
        self.hidden_act = hidden_act
        self.bias = bias
        super().__init__(**kwargs)
'''
_MODEL_CODE = '''from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN

from .configuration_projector import ProjectorConfig


class ProjectorModel(PreTrainedModel):
    config_class = ProjectorConfig
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        layers = [nn.Linear(config.visual_hidden_size, config.llm_hidden_size, bias=config.bias)]
        for _ in range(1, config.depth):
            layers += [ACT2FN[config.hidden_act],
                       nn.Linear(config.llm_hidden_size, config.llm_hidden_size, bias=config.bias)]
        self.model = nn.Sequential(*layers)
        self.post_init()  # required by transformers 5 (xtuner's own version omits it)

    def forward(self, x):
        return self.model(x)
'''

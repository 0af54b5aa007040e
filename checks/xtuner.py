"""XTN: XTuner LLaVA releases (``xtuner convert pth_to_hf``): ``llm_adapter/`` (or ``llm/``),
``visual_encoder_adapter/`` (or ``visual_encoder/``), ``projector/``. Each part is read from
headers; the adapters are checked against their recorded bases like ADP does. Consolidating the
parts into one checkpoint is the merge fixer's work."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.checks.adapter.fixtures import Versions, split_adapter_tensors
from doctor.checks.adapter.keys import plan_keys
from doctor.checks.adapter.reading import (
    JsonDoc,
    Weights,
    find_adapter_file,
    load_base,
    read_json_doc,
    read_weights,
    resolve_base,
)
from doctor.checks.adapter.targets import resolve

from doctor.findings import Applicability, Fix, Location, Severity
from doctor.registry import Check, fixture, register

XTUNER = frozenset({"xtuner"})
ADAPTER_PARTS = {"llm_adapter": "llm", "visual_encoder_adapter": "visual_encoder"}


@dataclass
class Part:
    name: str
    folder: Path
    config: JsonDoc
    weights: Weights


@dataclass
class Release:
    path: Path
    parts: dict[str, Part] = field(default_factory=dict)


@fixture
def xtuner_release(path: str) -> Release:
    root = Path(path)
    rel = Release(root)
    for name in ("llm_adapter", "llm", "visual_encoder_adapter", "visual_encoder", "projector"):
        folder = root / name
        if not folder.is_dir():
            continue
        is_adapter = name.endswith("_adapter")
        config = read_json_doc(folder / ("adapter_config.json" if is_adapter else "config.json"))
        if is_adapter:
            weights = read_weights(find_adapter_file(folder))
        else:
            file = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
            weights = read_weights(file)
        rel.parts[name] = Part(name, folder, config, weights)
    return rel


@register
class XtunerPartsMissing(Check):
    """The XTuner release lacks its projector, or names no LLM part.

    ## What it does
    Looks for `projector/` (always written by `xtuner convert pth_to_hf` for LLaVA) and for
    `llm_adapter/` or `llm/` (absent only when the LLM was frozen, as in the pretrain stage).

    ## Why is this bad?
    Without `projector/` the image features never reach the LLM: xtuner's loading of the release
    (`AutoModel.from_pretrained(projector_path, trust_remote_code=True)`) fails, and the release cannot
    be used or consolidated. A release with a projector but no LLM part is a pretrain-stage release:
    info.

    ## Example
    A release uploaded with only `llm_adapter/` and `visual_encoder_adapter/`.

    ## How to fix
    Re-run `xtuner convert pth_to_hf` on the training checkpoint, or fetch the missing folder.
    """

    code = "XTN001"
    name = "xtuner-parts-missing"
    artifacts = XTUNER

    def run(self, xtuner_release: Release, path: str):
        parts = xtuner_release.parts
        if "projector" not in parts:
            yield self.finding("projector/ is missing: image features cannot reach the LLM", path=path)
        if not ({"llm_adapter", "llm"} & set(parts)):
            yield self.finding("neither llm_adapter/ nor llm/: the base LLM is used unchanged (a pretrain-stage "
                               "release?)", path=path, severity=Severity.INFO)


@register
class XtunerPartUnreadable(Check):
    """A part of the XTuner release has no readable config or weights.

    ## What it does
    Reads each part's config (adapter_config.json / config.json) and its weights' headers, and
    checks that the projector's `auto_map` names code files that exist.

    ## Why is this bad?
    xtuner loads the projector with `AutoModel.from_pretrained(..., trust_remote_code=True)`:
    a missing `modeling_projector.py` or weights file fails there; a broken adapter fails in `PeftModel.from_pretrained`.

    ## Example
    `projector/` with config.json but no model.safetensors.

    ## How to fix
    Re-export the part with `xtuner convert pth_to_hf`.
    """

    code = "XTN002"
    name = "xtuner-part-unreadable"
    artifacts = XTUNER
    requires = ("XTN001",)

    def run(self, xtuner_release: Release, path: str):
        for part in xtuner_release.parts.values():
            cfg_name = Path(part.config.file).name
            if not part.config.ok or not isinstance(part.config.data, dict):
                loc = Location(line=part.config.line, column=part.config.column) if part.config.line else None
                yield self.finding(f"{part.name}/{cfg_name}: {part.config.error or 'not a JSON object'}",
                                   path=part.config.file, location=loc)
            if part.weights.file is None:
                yield self.finding(f"{part.name}/ has no weights file", path=str(part.folder))
            elif part.weights.problem or not part.weights.tensors:
                yield self.finding(f"{part.name}/{Path(part.weights.file).name} is unreadable: "
                                   f"{part.weights.problem or 'no tensors'}", path=part.weights.file)
            auto = part.config.data.get("auto_map") if isinstance(part.config.data, dict) else None
            for ref in (auto or {}).values() if isinstance(auto, dict) else []:
                module = str(ref).split("--")[-1].rsplit(".", 1)[0]
                if not (part.folder / f"{module}.py").is_file():
                    yield self.finding(f"{part.name}/config.json auto_map names {ref!r} but {module}.py is missing: "
                                       "AutoModel.from_pretrained(trust_remote_code=True) fails",
                                       path=part.config.file, location=Location(key="auto_map"))


@register
class XtunerProjectorMismatch(Check):
    """The projector's config, its weights, the LLM and the vision encoder disagree on sizes.

    ## What it does
    Checks `model.0.weight` is [llm_hidden_size, visual_hidden_size], each later Linear
    [llm_hidden_size, llm_hidden_size], `depth` Linears in all; then `llm_hidden_size` against
    the LLM adapter's `lora_A` in-features and `visual_hidden_size` against the vision adapter's.

    ## Why is this bad?
    A projector from another run or model loads with a size mismatch, or (when only the config
    is wrong) fails when `ProjectorModel` is built from it.

    ## Example
    `"llm_hidden_size": 4096` with `model.0.weight` of shape [5120, 1024] (a 13B projector).

    ## How to fix
    Use the projector exported from the same training run as the adapters.
    """

    code = "XTN003"
    name = "xtuner-projector-mismatch"
    artifacts = XTUNER
    requires = ("XTN002",)

    def run(self, xtuner_release: Release, path: str):
        proj = xtuner_release.parts.get("projector")
        if proj is None:
            return
        cfg, tensors = proj.config.data, proj.weights.tensors
        llm, vis, depth = cfg.get("llm_hidden_size"), cfg.get("visual_hidden_size"), cfg.get("depth", 2)
        if cfg.get("model_type") != "projector":
            yield self.finding(f"projector/config.json model_type is {cfg.get('model_type')!r}, not 'projector'",
                               path=proj.config.file, location=Location(key="model_type"), severity=Severity.WARNING)
        linears = sorted((int(m.group(1)), k) for k in tensors if (m := re.fullmatch(r"model\.(\d+)\.weight", k)))
        if len(linears) != depth:
            yield self.finding(f"depth is {depth} but the weights hold {len(linears)} Linear layers",
                               path=proj.config.file, location=Location(key="depth"))
        for i, (_, name) in enumerate(linears):
            want = (llm, vis if i == 0 else llm)
            if tuple(tensors[name].shape) != want:
                yield self.finding(f"{name} is {list(tensors[name].shape)}; config (llm_hidden_size {llm}, "
                                   f"visual_hidden_size {vis}) needs {list(want)}", path=proj.weights.file or path,
                                   location=Location(tensor=name))
        for part_name, key, want in (("llm_adapter", "llm_hidden_size", llm),
                                     ("visual_encoder_adapter", "visual_hidden_size", vis)):
            part = xtuner_release.parts.get(part_name)
            ins = _lora_in_features(part.weights) if part else set()
            if ins and want not in ins:
                yield self.finding(f"projector {key} is {want} but {part_name}'s lora_A tensors take {sorted(ins)} "
                                   "features: the parts come from different models", path=proj.config.file,
                                   location=Location(key=key))


@register
class XtunerAdapterKeysDropped(Check):
    """An adapter part of the release would not land on its base: its LoRA does nothing.

    ## What it does
    Runs the adapter family's key check on `llm_adapter/` and `visual_encoder_adapter/` against
    the bases they record (`base_model_name_or_path`, or `--base` for the LLM).

    ## Why is this bad?
    Releases made with transformers 4.x name the vision LoRA `vision_model.encoder...`; a
    transformers 5 `CLIPVisionModel` has no `vision_model` submodule and peft 0.21 does not rename
    them: it only logs "Found missing adapter keys" and the vision LoRA has no effect.

    ## Example
    `base_model.model.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight` loaded on transformers 5.

    ## How to fix
    Consolidate the release with `vlm-doctor merge` (it renames for the installed transformers),
    or run it with the transformers version it was exported with.
    """

    code = "XTN004"
    name = "xtuner-adapter-keys-dropped"
    artifacts = XTUNER
    requires = ("XTN002",)

    def run(self, xtuner_release: Release, options: Any, versions: Versions, path: str):
        for part_name in ADAPTER_PARTS:
            part = xtuner_release.parts.get(part_name)
            if part is None or not isinstance(part.config.data, dict):
                continue
            given = getattr(options, "base", None) if part_name == "llm_adapter" else None
            base_dir = Path(given) if given else resolve_base(part.config.data.get("base_model_name_or_path"),
                                                              relative_to=str(part.folder))
            if base_dir is None:
                continue
            base = load_base(base_dir, versions.transformers or "5.0")
            if not base.tensors:
                continue
            plan = plan_keys(split_adapter_tensors(part.weights.tensors), base, resolve(part.config.data, base), versions)
            if plan.dropped:
                fix = Fix("consolidate the release into one checkpoint (vlm-doctor merge)", Applicability.SAFE,
                          fixer="merge")
                yield self.finding(f"{part_name}: {len(plan.dropped)} of {plan.saved_count} adapted modules land on no "
                                   f"module of {base_dir} under transformers {versions.transformers}, e.g. "
                                   f"{plan.dropped[0]!r}: that LoRA has no effect", path=str(part.folder),
                                   location=Location(tensor=plan.dropped[0]), fix=fix)


@register
class XtunerNeedsConsolidation(Check):
    """An XTuner release is not loadable as a LLaVA or transformers llava model as it is.

    ## What it does
    Reports the release layout and offers the consolidation into one transformers `llava`
    checkpoint (LLM with the LoRA merged, vision tower, projector as `multi_modal_projector`).

    ## Why is this bad?
    Neither LLaVA's builder nor `LlavaForConditionalGeneration` reads `llm_adapter/` +
    `projector/`; continuing fine-tuning needs one checkpoint (the seeds' "merge into a .pth").

    ## Example
    `llava-internlm2-7b/` with `llm_adapter/`, `visual_encoder_adapter/`, `projector/`.

    ## How to fix
    `vlm-doctor merge RELEASE --base LLM --vision-tower CLIP -o OUT` (or `xtuner convert merge`).
    """

    code = "XTN005"
    name = "xtuner-needs-consolidation"
    severity = Severity.INFO
    artifacts = XTUNER
    requires = ("XTN003",)

    def run(self, xtuner_release: Release, path: str):
        parts = ", ".join(f"{p}/" for p in xtuner_release.parts)
        yield self.finding(f"XTuner release ({parts}): load it through xtuner, or consolidate it into one checkpoint",
                           path=path, fix=Fix("consolidate into one llava checkpoint (vlm-doctor merge)",
                                              Applicability.SAFE, fixer="merge"))


def _lora_in_features(weights: Weights) -> set[int]:
    return {t.shape[1] for n, t in weights.tensors.items() if ".lora_A" in n and len(t.shape) == 2
            and n.rsplit(".lora_A", 1)[0].endswith(("q_proj", "k_proj", "v_proj", "fc1", "gate_proj", "up_proj"))}

"""CKP006-CKP010: the vision side of config.json (layer indices, feature strategy, projector
dimensions, llava_next pinpoints, mllama cross-attention) against itself, the weights' headers and
the image processor. Header-only, no torch.

Index ranges were measured on the installed transformers with real forwards: llava's
``vision_feature_layer`` indexes the tower's ``hidden_states`` (embeddings + one per layer), so it
is valid in [-(depth+1), depth]; mllama's ``intermediate_layers_indices`` index one entry per
layer, [-depth, depth).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.fixtures import ModelWeights, image_processor_config, text_config, vision_config

from doctor.findings import Location
from doctor.registry import Check, register

STRATEGIES = ("default", "full")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _where(path: str) -> str:
    return str(Path(path) / "config.json")


@register
class VisionLayerIndexOutOfRange(Check):
    """`vision_feature_layer` (llava) or `intermediate_layers_indices` (mllama) is outside the
    vision tower's depth.

    ## What it does
    Checks each index against `vision_config.num_hidden_layers` (llava, llava_next: the tower
    returns depth+1 hidden states, valid indices -(depth+1)..depth; mllama: -depth..depth-1), and for
    mllama that `vision_output_dim` = vision `hidden_size` x (number of indices + 1).

    ## Why is this bad?
    The model loads without a warning, then the first image forward raises
    `IndexError: tuple index out of range` (or, for mllama's width, `mat1 and mat2 shapes cannot be
    multiplied`).

    ## Example
    `"vision_feature_layer": -25` with a 24-layer CLIP tower (valid: -25 is fine, -26 is not).

    ## How to fix
    Use an index inside the tower's depth: LLaVA uses the penultimate layer, -2.
    """

    code = "CKP006"
    name = "vision-layer-index-out-of-range"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], path: str):
        vc = vision_config(ckp_config)
        if vc is None:
            return
        depth = vc.get("num_hidden_layers")
        if ckp_config.get("model_type") == "mllama":
            yield from self._mllama(vc, depth, path)
            return
        for key in ("vision_feature_layer", "vision_feature_layers"):
            if key not in ckp_config:
                continue
            value = ckp_config[key]
            indices = [value] if _is_int(value) else value
            if not isinstance(indices, list) or not indices or not all(_is_int(i) for i in indices):
                yield self.finding(f"{key} is {value!r}; it must be an integer or a non-empty list of integers",
                                   path=_where(path), location=Location(key=key))
                continue
            if not _is_int(depth):
                continue
            bad = [i for i in indices if not -(depth + 1) <= i <= depth]
            if bad:
                yield self.finding(
                    f"{key} {value!r} selects {bad} but the {depth}-layer vision tower returns {depth + 1} hidden "
                    f"states (valid: {-(depth + 1)}..{depth}): the first image raises IndexError",
                    path=_where(path), location=Location(key=key),
                    hint=f"Use an index in {-(depth + 1)}..{depth}; LLaVA uses -2.")

    def _mllama(self, vc: dict[str, Any], depth: Any, path: str):
        key = "vision_config.intermediate_layers_indices"
        indices = vc.get("intermediate_layers_indices")
        if indices is None:
            return
        if not isinstance(indices, list) or not all(_is_int(i) for i in indices):
            yield self.finding(f"{key} is {indices!r}; it must be a list of integers", path=_where(path),
                               location=Location(key=key))
            return
        if _is_int(depth):
            bad = [i for i in indices if not -depth <= i < depth]
            if bad:
                yield self.finding(
                    f"{key} {indices} selects {bad} but the vision encoder has {depth} layers (valid: "
                    f"{-depth}..{depth - 1}): the first image raises IndexError", path=_where(path),
                    location=Location(key=key))
        hidden, out_dim = vc.get("hidden_size"), vc.get("vision_output_dim")
        if _is_int(hidden) and _is_int(out_dim) and out_dim != hidden * (len(indices) + 1):
            yield self.finding(
                f"vision_config.vision_output_dim is {out_dim} but hidden_size {hidden} x ({len(indices)} "
                f"intermediate layers + 1) = {hidden * (len(indices) + 1)}: the projector input width does not "
                "match (mat1 and mat2 shapes cannot be multiplied)", path=_where(path),
                location=Location(key="vision_config.vision_output_dim"))


@register
class VisionFeatureStrategyInvalid(Check):
    """`vision_feature_select_strategy` is neither "default" nor "full".

    ## What it does
    Checks the value in config.json and in the processor's config.

    ## Why is this bad?
    "default" drops the CLS token, "full" keeps it; any other value silently behaves like "full"
    in the model while the processor counts tokens differently, so image tokens and features
    disagree (`Image features and image tokens do not match`).

    ## Example
    `"vision_feature_select_strategy": "patch"` (the LLaVA codebase's `mm_vision_select_feature`
    spelling).

    ## How to fix
    Use "default" for LLaVA-style models (the LLaVA codebase's `mm_vision_select_feature: "patch"`).
    """

    code = "CKP007"
    name = "vision-feature-strategy-invalid"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], path: str):
        value = ckp_config.get("vision_feature_select_strategy")
        if value is not None and value not in STRATEGIES:
            yield self.finding(f"vision_feature_select_strategy is {value!r}; it must be \"default\" or \"full\"",
                               path=_where(path), location=Location(key="vision_feature_select_strategy"))
        proc_file = Path(path) / "processor_config.json"
        from doctor.checks.checkpoint.fixtures import load_json_dict

        proc = load_json_dict(proc_file) or {}
        pvalue = proc.get("vision_feature_select_strategy")
        if pvalue is not None and pvalue not in STRATEGIES:
            yield self.finding(f"processor vision_feature_select_strategy is {pvalue!r}; it must be \"default\" or "
                               "\"full\"", path=str(proc_file), location=Location(pointer="/vision_feature_select_strategy"))


_PROJ_RE = re.compile(r"(^|\.)(multi_modal_projector(\.linear_[12])?|mm_projector(\.[02])?)\.weight$")


@register
class ProjectorShapeMismatch(Check):
    """The projector weights do not map the vision width to the language model's width.

    ## What it does
    Reads the projector's weight shapes from the headers and compares them with config.json:
    llava/llava_next `linear_1` [text hidden, vision hidden x number of feature layers] and
    `linear_2` [text hidden, text hidden]; mllama [text hidden, `vision_output_dim`]; original LLaVA
    `mm_projector.0` [`hidden_size`, `mm_hidden_size`].

    ## Why is this bad?
    `from_pretrained` refuses mismatched sizes (or re-initializes the projector at random with
    `ignore_mismatched_sizes=True`); it usually means the projector came from another run, e.g. a
    13B projector in a 7B model, or a vision tower of another width.

    ## Example
    `multi_modal_projector.linear_1.weight` [5120, 1024] in a model whose text hidden size is 4096.

    ## How to fix
    Use the projector saved by the same training run as the language model (non_lora_trainables.bin
    / mm_projector.bin of that run), or fix the sizes in config.json if they were edited by hand.
    """

    code = "CKP008"
    name = "projector-shape-mismatch"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], ckp_weights: ModelWeights, path: str):
        expected = _expected_projector(ckp_config)
        if not expected:
            return
        for name, t in ckp_weights.tensors.items():
            m = _PROJ_RE.search(name)
            if not m:
                continue
            which = m.group(2).rsplit(".", 1)[-1] if "." in m.group(2) else "single"
            want = expected.get({"linear_1": "in", "0": "in", "single": "in", "linear_2": "out", "2": "out"}[which])
            if want is not None and tuple(t.shape) != want:
                yield self.finding(f"projector weight {name} has shape {list(t.shape)}; config.json implies {list(want)}",
                                   path=t.file, location=Location(tensor=name))


def _expected_projector(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    tc, vc = text_config(config), vision_config(config)
    mt = config.get("model_type")
    if "mm_hidden_size" in config and _is_int(config.get("hidden_size")) and _is_int(config.get("mm_hidden_size")):
        h = config["hidden_size"]
        return {"in": (h, config["mm_hidden_size"]), "out": (h, h)}
    if vc is None or not _is_int(tc.get("hidden_size")):
        return {}
    th = tc["hidden_size"]
    if mt == "mllama":
        return {"in": (th, vc["vision_output_dim"])} if _is_int(vc.get("vision_output_dim")) else {}
    if not _is_int(vc.get("hidden_size")):
        return {}
    layers = config.get("vision_feature_layer", -2)
    n = len(layers) if isinstance(layers, list) else 1
    return {"in": (th, vc["hidden_size"] * n), "out": (th, th)}


@register
class PinpointsMismatch(Check):
    """llava_next's `image_grid_pinpoints` differ between config.json and the image processor, or
    are not multiples of the vision tower's image size.

    ## What it does
    Compares `image_grid_pinpoints` in config.json with the image processor's
    (processor_config.json or preprocessor_config.json), and checks every resolution is a whole
    number of tower-sized tiles.

    ## Why is this bad?
    The processor tiles an image with its own list and the model un-tiles the features with the
    config's: square images work, tall or wide ones raise `RuntimeError: split_with_sizes ...` or
    mix up the tiles silently.

    ## Example
    config.json `[[336, 672], [672, 336]]`, preprocessor_config.json `[[336, 672], [672, 336], [672, 672]]`.

    ## How to fix
    Write the same list into both files (the one the model was trained with).
    """

    code = "CKP009"
    name = "pinpoints-mismatch"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], path: str):
        pins = ckp_config.get("image_grid_pinpoints")
        if pins is None:
            return
        folder = Path(path)
        proc, proc_path, prefix = image_processor_config(folder)
        if proc is not None and proc_path is not None and "image_grid_pinpoints" in proc:
            theirs = proc["image_grid_pinpoints"]
            if _norm(theirs) != _norm(pins):
                yield self.finding(
                    f"image_grid_pinpoints differ: config.json {pins} vs {proc_path.name} {theirs}: non-square images "
                    "are tiled one way and un-tiled another", path=str(proc_path),
                    location=Location(pointer=f"{prefix}/image_grid_pinpoints"))
        vc = vision_config(ckp_config) or {}
        size = vc.get("image_size")
        if _is_int(size) and size > 0 and isinstance(pins, list):
            bad = [p for p in pins if not (isinstance(p, list) and len(p) == 2 and all(_is_int(x) and x % size == 0
                                                                                      for x in p))]
            if bad:
                yield self.finding(f"image_grid_pinpoints {bad} are not multiples of the vision image_size {size}",
                                   path=_where(path), location=Location(key="image_grid_pinpoints"))


def _norm(pins: Any) -> Any:
    try:
        return sorted(tuple(p) for p in pins)
    except TypeError:
        return pins


@register
class CrossAttentionLayersInvalid(Check):
    """mllama's `cross_attention_layers` point outside the text model or lack their weights.

    ## What it does
    Checks that `text_config.cross_attention_layers` is a non-empty list of distinct indices below
    the text `num_hidden_layers`, and that the weights hold `cross_attn` tensors for exactly those
    layers.

    ## Why is this bad?
    Images reach mllama's language model only through these layers. Indices outside the depth (or a
    list that disagrees with the weights) cut the image path: the model loads, and every image gives
    the same answer; the listed layers' cross-attention is initialized at random.

    ## Example
    `"cross_attention_layers": [3, 8, 40]` in a 40-layer text model (40 does not exist).

    ## How to fix
    Restore the list the checkpoint was trained with: the layers that have `cross_attn.*` tensors.
    """

    code = "CKP010"
    name = "cross-attention-layers-invalid"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], ckp_weights: ModelWeights, path: str):
        if ckp_config.get("model_type") != "mllama":
            return
        tc, key = text_config(ckp_config), "text_config.cross_attention_layers"
        layers, depth = tc.get("cross_attention_layers"), tc.get("num_hidden_layers")
        if not isinstance(layers, list) or not layers or not all(_is_int(i) for i in layers):
            yield self.finding(f"{key} is {layers!r}: images never reach the language model", path=_where(path),
                               location=Location(key=key))
            return
        if _is_int(depth):
            bad = sorted({i for i in layers if not 0 <= i < depth})
            if bad:
                yield self.finding(f"{key} lists {bad}, outside the {depth}-layer text model (0..{depth - 1})",
                                   path=_where(path), location=Location(key=key))
        if not ckp_weights.complete:
            return
        have = {int(m.group(1)) for n in ckp_weights.tensors if (m := re.search(r"layers\.(\d+)\.cross_attn\.", n))}
        if have and set(layers) != have:
            yield self.finding(
                f"{key} is {sorted(set(layers))} but the weights have cross-attention tensors for layers {sorted(have)}: "
                "the listed layers' cross-attention would be initialized at random", path=_where(path),
                location=Location(key=key), hint=f"Set {key} to {sorted(have)}.")


# ---- family tables (doctor.families): Qwen2-VL's mrope and merger ------------------------------------


def rope_sections(config: dict[str, Any]) -> tuple[Any, str]:
    """(``mrope_section`` or None, the dotted key it sits under) in a flat 4.x config
    (``rope_scaling``) or a nested 5.x one (``text_config.rope_parameters`` / ``rope_scaling``)."""
    tc = text_config(config)
    candidates = [("text_config.", tc)] if tc is not config else []
    candidates.append(("", config))
    for prefix, node in candidates:
        for key in ("rope_parameters", "rope_scaling"):
            rope = node.get(key)
            if isinstance(rope, dict) and "mrope_section" in rope:
                return rope["mrope_section"], f"{prefix}{key}.mrope_section"
    for prefix, node in candidates:
        for key in ("rope_parameters", "rope_scaling"):
            if isinstance(node.get(key), dict):
                return None, f"{prefix}{key}.mrope_section"
    return None, ("text_config." if tc is not config else "") + "rope_scaling.mrope_section"


def head_dim(config: dict[str, Any]) -> int | None:
    """The text attention head size transformers uses: ``head_dim``, else hidden / heads."""
    tc = text_config(config)
    if _is_int(tc.get("head_dim")) and tc["head_dim"] > 0:
        return tc["head_dim"]
    hidden, heads = tc.get("hidden_size"), tc.get("num_attention_heads")
    if _is_int(hidden) and _is_int(heads) and heads > 0:
        return hidden // heads
    return None


@register
class MropeSectionMismatch(Check):
    """The multimodal rotary sections (`mrope_section`) do not split the attention head.

    ## What it does
    For families whose table names `rope="mrope"` (Qwen2-VL, Qwen2.5-VL), reads
    `rope_scaling.mrope_section` (4.x flat config) or `text_config.rope_parameters.mrope_section`
    (5.x) and checks that its sum times 2 equals the head dim (`head_dim`, else `hidden_size /
    num_attention_heads`). Without the key the model uses the family's default (Qwen: `[16, 24, 24]`,
    i.e. head dim 128).

    ## Why is this bad?
    The rotary embedding splits its `head_dim / 2` frequencies into temporal, height and width
    sections. Sections that do not add up make the first forward raise `RuntimeError:
    split_with_sizes expects split_sizes to sum exactly to ...` (measured on transformers 5), for text
    and images alike; the model loads without a warning.

    ## Example
    A Qwen2-VL config resized to 16-dim heads keeping `"mrope_section": [16, 24, 24]` (sum 64, needs 8).

    ## How to fix
    Set `mrope_section` to three numbers summing to head_dim / 2, in Qwen's proportions (1/4, 3/8,
    3/8): e.g. `[16, 24, 24]` for head dim 128, `[2, 3, 3]` for 16.
    """

    code = "CKP501"
    name = "mrope-section-mismatch"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], path: str):
        from doctor.families import family_of

        fam = family_of(ckp_config.get("model_type"))
        if fam is None or fam.rope != "mrope":
            return
        dim = head_dim(ckp_config)
        sections, key = rope_sections(ckp_config)
        given = sections is not None
        if not given:
            sections = list(fam.rope_default_sections)
        if not isinstance(sections, list) or not sections or not all(_is_int(s) and s > 0 for s in sections):
            yield self.finding(f"{key} is {sections!r}; it must be a list of positive integers (temporal, height, "
                               "width)", path=_where(path), location=Location(key=key))
            return
        if dim is None or sum(sections) * 2 == dim:
            return
        what = f"{key} {sections}" if given else f"no {key}, so {fam.title} uses its default {sections},"
        yield self.finding(
            f"{what} sums to {sum(sections)} but the head dim is {dim} (needs {dim // 2}): the first forward "
            f"raises \"split_with_sizes expects split_sizes to sum exactly to {dim // 2}\"",
            path=_where(path), location=Location(key=key),
            hint=f"Set {key} to three numbers summing to {dim // 2}, e.g. {_split(dim // 2)}.")


def _split(half: int) -> list[int]:
    t = max(1, round(half / 4))
    h = (half - t) // 2
    return [t, h, half - t - h]


@register
class VisionMergerWidthMismatch(Check):
    """The vision merger's output width (its projector) differs from the language model's width.

    ## What it does
    For families with a merger width key in their table (Qwen2-VL: `vision_config.hidden_size`;
    Qwen2.5-VL: `vision_config.out_hidden_size`), compares it with `text_config.hidden_size`
    (flat 4.x configs: `hidden_size`). When the weights' merger output (the table's last projector
    Linear: `visual.merger.mlp.2.weight`, Qwen3-VL `visual.merger.linear_fc2.weight`) already disagrees with config.json, CKP106 reports the tensor instead.

    ## Why is this bad?
    The merger maps merged patches to this width and the model writes them into the text embeddings:
    a different width builds and loads, then the first image raises (`masked_scatter` / shape
    mismatch). It happens when a vision tower and an LLM of other sizes are put together by hand.

    ## Example
    Qwen2.5-VL-3B vision (`out_hidden_size` 2048) with a 7B language model (`hidden_size` 3584).

    ## How to fix
    Use the vision encoder and merger trained for this language model, or retrain the merger
    (`visual.merger.*`) with `out_hidden_size` = the text hidden size.
    """

    code = "CKP502"
    name = "vision-merger-width-mismatch"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], ckp_weights: ModelWeights, path: str):
        from doctor.families import family_of

        fam = family_of(ckp_config.get("model_type"))
        vc = vision_config(ckp_config)
        key = fam.vision_keys.get("out_width") if fam is not None and fam.layouts else None
        if key is None or vc is None:
            return
        out, hidden = vc.get(key), text_config(ckp_config).get("hidden_size")
        if not (_is_int(out) and _is_int(hidden)) or out == hidden:
            return
        out_leaf = fam.projector_modules[-1] if fam.projector_modules else "mlp.2"  # the merger's last Linear
        pattern = r"(^|\.)" + re.escape(f"{fam.projector}.{out_leaf}.weight") + "$"
        merger_out = [t for n, t in ckp_weights.tensors.items() if re.search(pattern, n) and len(t.shape) == 2]
        if merger_out and merger_out[0].shape[0] != out:
            return  # the weights contradict config.json: CKP106 names the tensor
        yield self.finding(
            f"vision_config.{key} is {out} but the language model's hidden_size is {hidden}: the merger's "
            f"image features ({out} wide) do not fit the text embeddings; the first image raises",
            path=_where(path), location=Location(key=f"vision_config.{key}"),
            hint=f"Use a merger trained to output {hidden} (vision_config.{key} = {hidden}) for this language model.")

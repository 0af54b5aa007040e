"""Key layouts of LLaVA-style models: which prefix holds the language model, the vision encoder
and the projector, in each of the worlds users still run. Pure Python, no torch.

Four layouts (see CATALOGUE "Key map"):

==============  ================================  ==================================  =============================
part            ``ORIGINAL`` (haotian-liu/LLaVA)  ``HF_LEGACY`` (4.36-4.51 in memory,  ``HF_MODERN`` (>= 4.52 in
                                                  and what every version saves)       memory, transformers 5.x)
==============  ================================  ==================================  =============================
language        ``model.layers.*``                ``language_model.model.layers.*``    ``model.language_model.layers.*``
lm_head         ``lm_head``                       ``language_model.lm_head``           ``lm_head``
projector       ``model.mm_projector.{0,2}``      ``multi_modal_projector.linear_N``   ``model.multi_modal_projector.*``
vision          ``model.vision_tower.vision_      ``vision_tower.[vision_model.]*``    ``model.vision_tower.*``
                tower.vision_model.*``            (mllama: ``vision_model.*``)         (mllama: ``model.vision_model.*``)
image_newline   ``model.image_newline``           ``image_newline``                    ``model.image_newline``
==============  ================================  ==================================  =============================

Families with names of their own declare their layouts as data in ``doctor.families`` (Qwen2-VL:
``QWEN_LEGACY`` = ``visual.*`` / ``model.layers.*`` on disk and before 4.52, ``QWEN_MODERN`` =
``model.visual.*`` / ``model.language_model.*`` in memory from 4.52); they are built into
:class:`Layout` objects here and take part in detection, classification and renaming like the
four above. Their projector sits inside the vision encoder (``visual.merger``): it is matched first.

``TEXT`` is a plain causal LM (``model.layers.*``, ``lm_head``): the vicuna base of
``finetune_lora.sh``, XTuner's ``llm_adapter``. Its language names equal ``ORIGINAL``'s.

Names may be module names (``model.layers.0.self_attn.q_proj``), parameter/tensor names
(``...q_proj.weight``) or PEFT adapter keys (``base_model.model.<module>.lora_A.weight``): every
function here strips the PEFT wrapper prefix first (:func:`strip_peft_prefix`).

Stable API (other families import it):

- :data:`ORIGINAL`, :data:`HF_LEGACY`, :data:`HF_MODERN`, :data:`TEXT`, :data:`LAYOUTS`
- :func:`part_of` -> ``"language" | "lm_head" | "vision" | "projector" | "image_newline" | "other"``
- :func:`split_parts` names -> ``{part: [names]}``
- :func:`classify` names -> :class:`LayoutGuess` (``.layout``, ``.counts``, ``.parts``, ``.mixed``)
- :func:`to_canonical` / :func:`from_canonical` / :func:`map_name` / :func:`map_names`
- :func:`strip_peft_prefix`, :func:`adapter_module_name`, :func:`vision_style`
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

PEFT_PREFIX = "base_model.model."
PARTS = ("language", "lm_head", "vision", "projector", "image_newline", "other")

# LLaVA's mlp2x_gelu projector is an nn.Sequential: indices 0 and 2 are the Linear layers.
_ORIGINAL_TO_HF_PROJECTOR = {"0": "linear_1", "2": "linear_2"}
_HF_TO_ORIGINAL_PROJECTOR = {v: k for k, v in _ORIGINAL_TO_HF_PROJECTOR.items()}


@dataclass(frozen=True)
class Layout:
    """Where each part of a LLaVA-style model lives in one naming world.

    ``vision`` maps a vision style (``"tower"``: CLIP/SigLIP wrapped as ``vision_tower``;
    ``"model"``: mllama's ``vision_model``) to its prefixes, most specific first; the first one is
    what :func:`from_canonical` writes unless told otherwise."""

    name: str
    title: str
    language: str
    lm_head: str
    projector: str
    vision: dict[str, tuple[str, ...]] = field(hash=False, compare=False)
    image_newline: str | None

    def __str__(self) -> str:
        return self.name


ORIGINAL = Layout(
    name="llava-original",
    title="original LLaVA (LlavaLlamaForCausalLM: model.layers, model.mm_projector)",
    language="model.",
    lm_head="lm_head",
    projector="model.mm_projector",
    vision={"tower": ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower.vision_tower.")},
    image_newline="model.image_newline",
)
HF_LEGACY = Layout(
    name="hf-legacy",
    title="transformers 4.36-4.51 (language_model.model.*; also the on-disk layout of every version)",
    language="language_model.model.",
    lm_head="language_model.lm_head",
    projector="multi_modal_projector",
    vision={"tower": ("vision_tower.vision_model.", "vision_tower."), "model": ("vision_model.",)},
    image_newline="image_newline",
)
HF_MODERN = Layout(
    name="hf-modern",
    title="transformers >= 4.52 / 5.x in memory (model.language_model.*)",
    language="model.language_model.",
    lm_head="lm_head",
    projector="model.multi_modal_projector",
    vision={"tower": ("model.vision_tower.", "model.vision_tower.vision_model."), "model": ("model.vision_model.",)},
    image_newline="model.image_newline",
)
TEXT = Layout(
    name="text",
    title="plain causal LM (model.layers.*, lm_head)",
    language="model.",
    lm_head="lm_head",
    projector="",
    vision={},
    image_newline=None,
)


def _family_layouts() -> tuple[dict[str, Layout], dict[str, tuple[Layout, Layout]]]:
    """Layouts declared by ``doctor.families`` tables, and per model_type (legacy, modern)."""
    from doctor.families import families

    built: dict[str, Layout] = {}
    per_type: dict[str, tuple[Layout, Layout]] = {}
    for fam in families():
        pair: dict[bool, Layout] = {}
        for row in fam.layouts:
            lay = built.get(row.name) or Layout(
                name=row.name, title=row.title, language=row.language, lm_head=row.lm_head,
                projector=row.projector, vision={row.vision_style: tuple(row.vision)},
                image_newline=row.image_newline)
            built[row.name] = lay
            pair[row.modern] = lay
        if True in pair:  # a family with one naming world (Qwen3-VL) reads the same before and after
            for t in fam.model_types:
                per_type[t] = (pair.get(False, pair[True]), pair[True])
    return built, per_type


#: layouts of families with names of their own (``doctor.families``), by name
FAMILY_LAYOUTS, _FAMILY_TYPES = _family_layouts()
QWEN_LEGACY = FAMILY_LAYOUTS["qwen-legacy"]
QWEN_MODERN = FAMILY_LAYOUTS["qwen-modern"]
LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (ORIGINAL, HF_LEGACY, HF_MODERN, TEXT, *FAMILY_LAYOUTS.values())}
#: which generic layout reads a family layout's language names the same way (it absorbs their votes)
_SAME_LANGUAGE: dict[str, str] = {
    lay.name: next((g.name for g in (HF_MODERN, HF_LEGACY, TEXT) if g.language == lay.language), "")
    for lay in FAMILY_LAYOUTS.values()}


@dataclass(frozen=True)
class Canonical:
    """A name with its layout removed: ``part`` plus the rest relative to that part.

    language: ``layers.0.self_attn.q_proj.weight``; lm_head: ``weight`` (or ``""``);
    projector: ``linear_1.weight`` (HF names; a linear projector keeps ``weight``);
    vision: rest after the encoder prefix (``encoder.layers.0...``), with ``vision_style``."""

    part: str
    rest: str
    vision_style: str | None = None


@dataclass
class LayoutGuess:
    """What :func:`classify` found. ``layout`` is None when nothing LLaVA-like was recognised."""

    layout: Layout | None
    counts: dict[str, int]
    parts: dict[str, int]
    mixed: bool
    vision_prefix: str | None = None

    @property
    def name(self) -> str | None:
        return self.layout.name if self.layout else None


def strip_peft_prefix(name: str) -> str:
    """``base_model.model.X`` -> ``X`` (PEFT's wrapper prefix); other names unchanged."""
    if name.startswith(PEFT_PREFIX):
        return name[len(PEFT_PREFIX):]
    if name.startswith("base_model."):
        return name[len("base_model."):]
    return name


_LORA_PIECES = re.compile(
    r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|base_layer)(\.|$)"
)


def adapter_module_name(key: str) -> str:
    """The base-model module an adapter tensor belongs to.

    ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` ->
    ``model.layers.0.self_attn.q_proj``; a ``modules_to_save`` tensor
    (``...lm_head.weight``) -> ``...lm_head``."""
    name = strip_peft_prefix(key)
    m = _LORA_PIECES.search(name)
    if m:
        return name[: m.start()]
    return name.rsplit(".", 1)[0] if "." in name else name


def _match_vision(name: str, layout: Layout) -> tuple[str, str] | None:
    for style, prefixes in layout.vision.items():
        for p in prefixes:
            if name.startswith(p) or name == p.rstrip("."):
                return style, p
    return None


def _detect(name: str) -> tuple[Layout, Canonical] | None:
    """Most specific prefix first: ORIGINAL's ``model.vision_tower.vision_tower.`` before
    HF_MODERN's ``model.vision_tower.``; HF_MODERN's ``model.language_model.`` before ``model.``."""
    for layout in FAMILY_LAYOUTS.values():  # their vision / projector prefixes are their own
        c = _canonical_in(name, layout)
        if c is not None and c.part in ("vision", "projector"):
            return layout, c
    for layout in (ORIGINAL, HF_MODERN, HF_LEGACY):
        c = _canonical_in(name, layout)
        if c is not None and (layout is not ORIGINAL or c.part in ("vision", "projector")):
            return layout, c
    c = _canonical_in(name, TEXT)
    if c is not None:
        return TEXT, c
    return None


def _canonical_in(name: str, layout: Layout) -> Canonical | None:
    if layout.lm_head and (name == layout.lm_head or name.startswith(layout.lm_head + ".")):
        return Canonical("lm_head", name[len(layout.lm_head) + 1:])
    if layout.image_newline and name == layout.image_newline:
        return Canonical("image_newline", "")
    if layout.projector and (name == layout.projector or name.startswith(layout.projector + ".")):
        rest = name[len(layout.projector) + 1:]
        head, _, tail = rest.partition(".")
        if layout is ORIGINAL and head in _ORIGINAL_TO_HF_PROJECTOR:
            rest = _ORIGINAL_TO_HF_PROJECTOR[head] + ("." + tail if tail else "")
        return Canonical("projector", rest)
    v = _match_vision(name, layout)
    if v is not None:
        style, prefix = v
        return Canonical("vision", name[len(prefix):], style)
    if layout.language and (name.startswith(layout.language) or name == layout.language[:-1] != "model"):
        rest = name[len(layout.language):]
        # HF_MODERN's "model." siblings were matched above; a bare "model.X" under a modern
        # layout is not language.
        if layout is HF_MODERN or layout is HF_LEGACY or not rest.startswith(
            ("language_model.", "vision_tower", "multi_modal_projector", "vision_model.", "visual.")
        ):
            return Canonical("language", rest)
    return None


def to_canonical(name: str, layout: Layout | None = None) -> tuple[Layout, Canonical] | None:
    """Strip ``name``'s layout. With ``layout`` given, only that one is tried."""
    name = strip_peft_prefix(name)
    if layout is None:
        return _detect(name)
    c = _canonical_in(name, layout)
    return (layout, c) if c is not None else None


def from_canonical(c: Canonical, layout: Layout, vision_prefix: str | None = None) -> str | None:
    """Write a canonical name in ``layout``; None when the layout has no such part (the vision
    tower in ``TEXT``, a linear projector in ``ORIGINAL`` -> HF, ...)."""
    join = _join
    if c.part == "language":
        return layout.language + c.rest if layout.language else None
    if c.part == "lm_head":
        return join(layout.lm_head, c.rest)
    if c.part == "image_newline":
        return layout.image_newline
    if c.part == "projector":
        if not layout.projector:
            return None
        rest = c.rest
        if layout is ORIGINAL:
            head, _, tail = rest.partition(".")
            if head in _HF_TO_ORIGINAL_PROJECTOR:
                rest = _HF_TO_ORIGINAL_PROJECTOR[head] + ("." + tail if tail else "")
        return join(layout.projector, rest)
    if c.part == "vision":
        if vision_prefix is not None:
            return vision_prefix + c.rest
        prefixes = layout.vision.get(c.vision_style or "tower")
        return prefixes[0] + c.rest if prefixes else None
    return None


def _join(prefix: str, rest: str) -> str:
    return f"{prefix}.{rest}" if rest else prefix


def map_name(name: str, dst: Layout, src: Layout | None = None, vision_prefix: str | None = None) -> str | None:
    """Rename one module/tensor name from its layout (``src`` or detected) to ``dst``.

    Keeps a PEFT wrapper prefix if the input had one. Returns None when ``name`` is not in a
    known layout or ``dst`` has no such part."""
    peft = name.startswith(PEFT_PREFIX)
    found = to_canonical(name, src)
    if found is None:
        return None
    out = from_canonical(found[1], dst, vision_prefix)
    if out is None:
        return None
    return PEFT_PREFIX + out if peft else out


def map_names(names: Iterable[str], dst: Layout, src: Layout | None = None,
              vision_prefix: str | None = None) -> dict[str, str | None]:
    """:func:`map_name` over many names."""
    return {n: map_name(n, dst, src, vision_prefix) for n in names}


def part_of(name: str, layout: Layout | None = None) -> str:
    """Which part of a LLaVA-style model a name belongs to (``"other"`` when unknown)."""
    found = to_canonical(name, layout)
    return found[1].part if found else "other"


def split_parts(names: Iterable[str], layout: Layout | None = None) -> dict[str, list[str]]:
    """Group names by part; every part of :data:`PARTS` is a key (possibly empty)."""
    out: dict[str, list[str]] = {p: [] for p in PARTS}
    for n in names:
        out[part_of(n, layout)].append(n)
    return out


def classify(names: Iterable[str]) -> LayoutGuess:
    """Which layout a set of names is written in.

    A set with only language names (``model.layers.*``) is ``TEXT``; ``ORIGINAL`` needs an
    ``mm_projector`` / ``vision_tower`` name. ``mixed`` is True when names of more than one of
    ORIGINAL/HF_LEGACY/HF_MODERN appear (an adapter saved half in one world)."""
    counts: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    vision_prefixes: Counter[str] = Counter()
    for raw in names:
        name = strip_peft_prefix(raw)
        found = _detect(name)
        if found is None:
            parts["other"] += 1
            continue
        layout, c = found
        parts[c.part] += 1
        if _ambiguous(name):
            continue
        counts[layout.name] += 1
        if c.part == "vision":
            v = _match_vision(name, layout)
            if v:
                vision_prefixes[v[1]] += 1
    own = [n for n in FAMILY_LAYOUTS if counts[n]]
    if own:  # a family layout's language names were counted under the generic layout that shares them
        best_own = max(own, key=lambda n: counts[n])
        shared = _SAME_LANGUAGE.get(best_own, "")
        if shared and shared in counts:
            counts[best_own] += counts.pop(shared)
    multimodal = [n for n in (HF_MODERN.name, HF_LEGACY.name, ORIGINAL.name, *FAMILY_LAYOUTS) if counts[n]]
    if multimodal:
        best = max(multimodal, key=lambda n: counts[n])
        layout: Layout | None = LAYOUTS[best]
        if best == ORIGINAL.name:
            # the language names were counted as TEXT: they belong to the original model
            counts[ORIGINAL.name] += counts.pop(TEXT.name, 0)
    elif counts[TEXT.name]:
        layout = TEXT
    else:
        layout = None
    return LayoutGuess(
        layout=layout,
        counts=dict(counts),
        parts={p: parts.get(p, 0) for p in PARTS},
        mixed=len(multimodal) > 1,
        vision_prefix=vision_prefixes.most_common(1)[0][0] if vision_prefixes else None,
    )


def _ambiguous(name: str) -> bool:
    """``lm_head`` and ``model.image_newline`` read the same in several layouts: no vote."""
    return name == "lm_head" or name.startswith("lm_head.") or name == "model.image_newline"


def vision_style(names: Iterable[str]) -> str | None:
    """``"tower"`` (llava / llava_next: CLIP or SigLIP), ``"model"`` (mllama), ``"visual"``
    (Qwen2-VL) or None."""
    styles: Counter[str] = Counter()
    for raw in names:
        found = _detect(strip_peft_prefix(raw))
        if found and found[1].part == "vision" and found[1].vision_style:
            styles[found[1].vision_style] += 1
    return styles.most_common(1)[0][0] if styles else None


#: transformers model types whose checkpoints use the HF_LEGACY / HF_MODERN names
HF_VLM_TYPES = frozenset({"llava", "llava_next", "llava_next_video", "llava_onevision", "vipllava", "mllama"})
#: original-LLaVA codebase types (in memory = on disk = ORIGINAL)
ORIGINAL_TYPES = frozenset({"llava_llama", "llava_mistral", "llava_mpt", "llava_mixtral", "llava_qwen",
                            "llava_qwen_moe", "llava_gemma"})


def _version(v: str) -> tuple[int, ...]:
    out = []
    for piece in v.split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def in_memory_layout(model_type: str | None, transformers_version: str,
                     architectures: Iterable[str] = ()) -> tuple[Layout, str | None]:
    """The module-name layout a model of ``model_type`` has once loaded by that transformers (or,
    for original-LLaVA types, by the LLaVA codebase), and its vision prefix.

    llava / llava_next: 4.36-4.51 -> HF_LEGACY ``vision_tower.vision_model.``; 4.52-4.x ->
    HF_MODERN ``model.vision_tower.vision_model.``; 5.x -> HF_MODERN ``model.vision_tower.``
    (its CLIPVisionModel has no ``vision_model`` submodule). mllama: ``vision_model.`` /
    ``model.vision_model.``. A released v1.5 config that says ``llava`` with
    ``LlavaLlamaForCausalLM`` is ORIGINAL. Anything else: TEXT."""
    archs = list(architectures)
    if model_type in _FAMILY_TYPES:
        legacy, modern = _FAMILY_TYPES[model_type]
        from doctor.families import family_of

        fam = family_of(model_type)
        lay = modern if fam is not None and _version(transformers_version) >= fam.modern_since else legacy
        return lay, next(iter(lay.vision.values()))[0]
    if model_type in ORIGINAL_TYPES or (model_type == "llava" and any("LlavaLlama" in a or "LlavaMistral" in a for a in archs)):
        return ORIGINAL, ORIGINAL.vision["tower"][0]
    if model_type not in HF_VLM_TYPES and not _generic_family(model_type):
        return TEXT, None
    v = _version(transformers_version)
    style = "model" if model_type == "mllama" else "tower"
    if v < (4, 52):
        return HF_LEGACY, "vision_model." if style == "model" else "vision_tower.vision_model."
    if style == "model":
        return HF_MODERN, "model.vision_model."
    return HF_MODERN, "model.vision_tower." if v >= (5,) else "model.vision_tower.vision_model."


def _generic_family(model_type: str | None) -> bool:
    """A family table that declares no layouts of its own uses the generic LLaVA names (gemma3)."""
    from doctor.families import family_of

    fam = family_of(model_type)
    return fam is not None and not fam.layouts


#: standalone vision encoders (XTuner's visual_encoder, LLaVA's mm_vision_tower folders)
VISION_ONLY_TYPES = frozenset({"clip_vision_model", "siglip_vision_model", "clip"})


def disk_to_memory(names: Iterable[str], model_type: str | None, transformers_version: str,
                   architectures: Iterable[str] = ()) -> dict[str, str]:
    """Map a checkpoint's on-disk tensor names to the in-memory names of that transformers:
    ``{in_memory_name: on_disk_name}``. Names in no known layout are kept as they are.

    A standalone ``CLIPVisionModel`` / ``SiglipVisionModel`` has a ``vision_model`` submodule
    in transformers 4.x and none in 5.x (which strips the prefix on load)."""
    dst, vprefix = in_memory_layout(model_type, transformers_version, architectures)
    out: dict[str, str] = {}
    if model_type in VISION_ONLY_TYPES:
        modern = _version(transformers_version) >= (5,)
        for n in names:
            bare = n[len("vision_model."):] if n.startswith("vision_model.") else n
            out[bare if modern else "vision_model." + bare] = n
        return out
    for n in names:
        mapped = map_name(n, dst, vision_prefix=vprefix) if dst is not TEXT else n
        out[mapped or n] = n
    return out


__all__ = [
    "HF_VLM_TYPES", "ORIGINAL_TYPES", "VISION_ONLY_TYPES", "in_memory_layout", "disk_to_memory",
    "PEFT_PREFIX", "PARTS", "Layout", "Canonical", "LayoutGuess",
    "ORIGINAL", "HF_LEGACY", "HF_MODERN", "TEXT", "LAYOUTS", "FAMILY_LAYOUTS", "QWEN_LEGACY", "QWEN_MODERN",
    "strip_peft_prefix", "adapter_module_name", "to_canonical", "from_canonical",
    "map_name", "map_names", "part_of", "split_parts", "classify", "vision_style",
]

"""Which base tensor an adapter module (or a replacement tensor) belongs to.

An adapter names modules as they were in memory in the transformers release that trained it
(``model.language_model.layers.0.self_attn.q_proj`` on 5.x, ``language_model.model.layers...``
on 4.36-4.51, ``model.layers...`` in the original LLaVA codebase); a base checkpoint names
tensors as they are on disk. Both go through ``doctor.layouts`` to a layout-free form
(part + rest) and meet there; names outside the known layouts match exactly, or after the
installed transformers' own checkpoint renamings for the base's ``model_type``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from doctor.layouts import to_canonical


def canonical(name: str) -> tuple[str, str] | None:
    """``(part, rest)`` of a module or tensor name, or None outside the known layouts."""
    found = to_canonical(name)
    if found is None:
        return None
    c = found[1]
    if c.part == "other":
        return None
    if c.part == "vision":  # CLIP inside a tower: 4.x keeps a vision_model. level, 5.x does not
        return c.part, re.sub(r"^vision_model\.", "", c.rest)
    return c.part, c.rest


def vision_canonical(name: str) -> tuple[str, str] | None:
    """Names inside a bare vision-encoder folder (a CLIP tower and its adapter): transformers
    4.x writes ``vision_model.encoder...``, 5.x ``encoder...``; both mean the same tensor."""
    from doctor.layouts import strip_peft_prefix

    name = strip_peft_prefix(name)
    return "vision", re.sub(r"^vision_model\.", "", name)


class NameIndex:
    """Look up a base tensor by a name written in any layout."""

    def __init__(self, names: Iterable[str], model_type: str | None = None,
                 canon: Callable[[str], tuple[str, str] | None] | None = None) -> None:
        self.names = list(names)
        self.canon = canon or canonical
        self.exact = set(self.names)
        self.by_canonical: dict[tuple[str, str], str] = {}
        self.ambiguous: set[tuple[str, str]] = set()
        for n in self.names:
            k = self.canon(n)
            if k is None:
                continue
            if k in self.by_canonical and self.by_canonical[k] != n:
                self.ambiguous.add(k)
            self.by_canonical.setdefault(k, n)
        self.model_type = model_type
        self._renamings: list[tuple[str, str]] | None = None  # read lazily: it imports transformers
        self._by_renamed: dict[str, str] | None = None

    def find(self, name: str) -> str | None:
        """The base tensor name for ``name`` (a tensor name: module + ``.weight`` / ``.bias``)."""
        if name in self.exact:
            return name
        k = self.canon(name)
        if k is not None and k in self.by_canonical and k not in self.ambiguous:
            return self.by_canonical[k]
        if self._renamings is None:
            self._renamings = _renamings(self.model_type)
        if self._renamings:
            if self._by_renamed is None:
                self._by_renamed = {self.rename(n): n for n in self.names}
            hit = self._by_renamed.get(self.rename(name))
            if hit is not None:
                return hit
        return None

    def rename(self, name: str) -> str:
        for pattern, target in self._renamings or []:
            new = re.sub(pattern, target, name, count=1)
            if new != name:
                name = new
        return name


def _renamings(model_type: str | None) -> list[tuple[str, str]]:
    """The installed transformers' on-disk -> in-memory renamings for ``model_type`` (5.x);
    empty when it has none or its API differs."""
    if not model_type:
        return []
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping

        rules = get_checkpoint_conversion_mapping(model_type) or []
    except Exception:  # noqa: BLE001 - older transformers, or an internal API that moved
        return []
    out: list[tuple[str, str]] = []
    for rule in rules:
        src = getattr(rule, "source_patterns", None)
        tgt = getattr(rule, "target_patterns", None)
        if type(rule).__name__ not in ("WeightRenaming", "PrefixChange") or not src or not tgt:
            continue
        src = src if isinstance(src, (list, tuple)) else [src]
        tgt = tgt if isinstance(tgt, (list, tuple)) else [tgt]
        if len(src) == 1 and len(tgt) == 1:
            out.append((str(src[0]), str(tgt[0]).replace("\\1", r"\1")))
    return out

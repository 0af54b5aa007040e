"""CKP201-CKP209: sharded weights, ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``
against the shard files (headers only).

What transformers does with a shard set: it opens every file the ``weight_map`` names and loads
every tensor in those files (the tensor-to-file mapping itself is not used; other tools, like
accelerate's offloading and inference servers, do use it). A missing shard is an error; a tensor in
two shards silently takes the value of the one read last.
"""

from __future__ import annotations

import re
from pathlib import Path

from doctor.checks.checkpoint.fixtures import BIN_INDEX, SAFE_INDEX, ModelWeights, read_sharded

from doctor.findings import Location, Severity
from doctor.registry import Check, fixture, register

_SHARD_RE = re.compile(r"^(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)$")


@fixture
def ckp_shard_sets(ckp_folder: Path) -> list[ModelWeights]:
    """One entry per index file in the folder (safetensors and .bin)."""
    sets = []
    for name, fmt in ((SAFE_INDEX, "safetensors"), (BIN_INDEX, "bin")):
        if (ckp_folder / name).is_file():
            sets.append(read_sharded(ckp_folder, ckp_folder / name, fmt))
    return sets


def index_name(s: ModelWeights) -> str:
    return s.index_path.name if s.index_path else "index"


@register
class ShardIndexInvalid(Check):
    """A shard index file is not valid JSON or has no usable `weight_map`.

    ## What it does
    Parses `model.safetensors.index.json` / `pytorch_model.bin.index.json` and checks that
    `weight_map` maps tensor names to shard file names (strings).

    ## Why is this bad?
    `from_pretrained` reads the index to find the shards: it raises on invalid JSON, and a
    `weight_map` that is not a name -> file map loads nothing.

    ## Example
    `{"metadata": {"total_size": 13476839424}}` with no `weight_map`.

    ## How to fix
    Copy the index file again from the source model, or regenerate it from the shards' headers.
    """

    code = "CKP201"
    name = "shard-index-invalid"
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights]):
        for s in ckp_shard_sets:
            where = str(s.index_path)
            if s.index_error is not None:
                yield self.finding(f"{index_name(s)} is unusable: {s.index_error}", path=where)
                continue
            weight_map = (s.index or {}).get("weight_map", {})
            bad = [k for k, v in weight_map.items() if not isinstance(v, str) or not v]
            if bad:
                yield self.finding(f"weight_map entries must name a shard file; {bad[0]!r} maps to "
                                   f"{weight_map[bad[0]]!r}", path=where,
                                   location=Location(pointer=Location.json_pointer("weight_map", bad[0])))


@register
class ShardMissing(Check):
    """A shard named by the index file is not in the folder.

    ## What it does
    Checks that every file the index's `weight_map` names exists.

    ## Why is this bad?
    `from_pretrained` fails to open it; an interrupted download or a partial copy is the usual cause.

    ## Example
    `model-00003-of-00004.safetensors` named in model.safetensors.index.json but absent.

    ## How to fix
    Download or copy the missing shard again.
    """

    code = "CKP202"
    name = "shard-missing"
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights]):
        for s in ckp_shard_sets:
            for shard in s.missing_files:
                n = sum(1 for v in (s.index or {}).get("weight_map", {}).values() if v == shard)
                yield self.finding(f"{shard} is named by {index_name(s)} for {n} tensor(s) but is not in the folder",
                                   path=str(s.index_path), location=Location(pointer="/weight_map"))


@register
class ShardIsLfsPointer(Check):
    """A weights file is a Git-LFS pointer, not the weights.

    ## What it does
    Recognises the small text file Git-LFS leaves in place of a large file
    (`version https://git-lfs.github.com/spec/v1`).

    ## Why is this bad?
    The repository was cloned without `git lfs`: safetensors raises `HeaderTooLarge` /
    "Error while deserializing header", torch.load fails on a text file.

    ## Example
    `model-00001-of-00002.safetensors`, 134 bytes: `version https://git-lfs.github.com/spec/v1 ...`.

    ## How to fix
    Run `git lfs install && git lfs pull` in the clone, or download with `huggingface-cli download`.
    """

    code = "CKP203"
    name = "shard-is-lfs-pointer"
    artifacts = frozenset({"model"})

    def run(self, ckp_weights: ModelWeights, ckp_shard_sets: list[ModelWeights]):
        # One owner per cause: every Git-LFS pointer among the folder's own weight files is reported
        # here, once for the model; SEC103 / SEC005 report pointers everywhere else.
        from doctor.files import WEIGHT_SUFFIXES
        from doctor.io.safetensors_header import is_lfs_pointer

        loose = {str(p) for p in Path(ckp_weights.folder).glob("*")
                 if p.name.lower().endswith(WEIGHT_SUFFIXES) and p.is_file() and is_lfs_pointer(p)}
        pointers = sorted({f for s in [ckp_weights, *ckp_shard_sets] for f in s.lfs_pointers} | loose)
        files = sorted({f for s in [ckp_weights, *ckp_shard_sets] for f in s.files} | loose)
        if pointers:
            names = ", ".join(Path(f).name for f in pointers[:4]) + (", ..." if len(pointers) > 4 else "")
            yield self.finding(f"{len(pointers)} of the {len(files)} weight files are Git-LFS pointer files, not the "
                               f"weights ({names}): the model cannot load", path=pointers[0])


@register
class ShardPathEscapes(Check):
    """The index names a shard outside the model folder (`../`, an absolute path).

    ## What it does
    Checks every file name in the index's `weight_map` is a plain name inside the folder.

    ## Why is this bad?
    transformers joins the folder and the name, so `../x.safetensors` or `/abs/x.safetensors` reads a
    file outside the model: an untrusted checkpoint can make you load (for .bin: unpickle) any file.

    ## Example
    `"lm_head.weight": "../../other-model/model-00002-of-00002.safetensors"`.

    ## How to fix
    Put the shards in the model folder and name them by their file name only.
    """

    code = "CKP204"
    name = "shard-path-escapes"
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights]):
        for s in ckp_shard_sets:
            for shard in s.escaping:
                yield self.finding(f"{index_name(s)} names {shard!r}, outside the model folder",
                                   path=str(s.index_path), location=Location(pointer="/weight_map"))


@register
class ShardUnlisted(Check):
    """A shard file in the folder is not named by the index.

    ## What it does
    Lists `model-NNNNN-of-NNNNN.safetensors` (or `pytorch_model-...bin`) files the index does not name.

    ## Why is this bad?
    transformers never reads them: they are left over from a save with another shard count (the
    index then belongs to the newer save), or the index is stale and the tensors in them are missing.

    ## Example
    `model-00001-of-00003.safetensors` beside an index that names `model-0000N-of-00002.safetensors`.

    ## How to fix
    Delete the leftovers, or regenerate the index if those shards hold tensors the model needs.
    """

    code = "CKP205"
    name = "shard-unlisted"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})

    def run(self, ckp_shard_sets: list[ModelWeights], path: str):
        for s in ckp_shard_sets:
            listed = {v for v in (s.index or {}).get("weight_map", {}).values() if isinstance(v, str)}
            ext = ".safetensors" if s.format == "safetensors" else ".bin"
            extra = sorted(p.name for p in Path(path).iterdir()
                           if _SHARD_RE.match(p.name) and p.name.endswith(ext) and p.name not in listed)
            if extra and s.index is not None:
                yield self.finding(f"{', '.join(extra)} not named by {index_name(s)}: transformers ignores them",
                                   path=str(Path(path) / extra[0]))

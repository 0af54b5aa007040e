"""Discovery: what is at this path?

Each artifact has a path and a set of kinds; checks apply to artifacts by kind:

- ``dataset``         a LLaVA / messages JSON array or JSONL file, or a parquet / Arrow table
- ``adapter``         a PEFT adapter folder (``adapter_config.json``)
- ``llava-lora``      an original-LLaVA LoRA output (adapter + ``config.json`` with a ``llava_*`` type
                      and/or ``non_lora_trainables.bin``); also an ``adapter``
- ``model``           a transformers model folder (config.json + weights)
- ``llava-original``  a model folder in the original LLaVA codebase's layout (``llava_llama`` ...)
- ``xtuner``          an XTuner release (``llm_adapter/``, ``visual_encoder_adapter/``, ``projector/``)
- ``run``             a training output folder (``checkpoint-N/``, ``trainer_state.json``)
- ``weights``         a single weights file (.safetensors, .bin, .pt, .pth, .ckpt)
- ``pickle``          a pickle that holds training state or arbitrary objects, not model weights
                      (``optimizer.pt``, ``rng_state.pth``, DeepSpeed ``*_optim_states.pt``, mmengine
                      ``iter_N.pth``, ``*.pkl``): only the security checks apply
- ``unrecognized``    a path given on the command line under which nothing above was found; it gets
                      a DOC002 error naming what was there (never a silent pass)
- ``environment``     the installed libraries (one per run, always present)
- ``sanity``          a model to load and run (only with ``--sanity``)

Names first, content second: a folder with ``config.json`` is a model candidate even when that
file does not parse (the checkpoint checks then report why); every pickle-bearing file found
while walking is an artifact of its own unless it lies inside one; a file given on the command
line whose extension says nothing is identified by its first bytes (``sniff``). Discovery reads
file names, a few small JSON files and the first bytes of explicitly given files; it never
opens weights.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.errors import ArtifactError
from doctor.files import (
    ADAPTER_CONFIG,
    CHECKPOINT_RE,
    CONFIG_NAMES,
    DISTCP_SUFFIX,
    FSDP_DIR_RE,
    GLOBAL_STEP_RE,
    INDEX_SUFFIX,
    LFS_POINTER_PREFIX,
    MODEL_CONFIG,
    NON_LORA_TRAINABLES,
    ORIGINAL_LLAVA_TYPES,
    SAFETENSORS_SUFFIX,
    TRAINER_STATE,
    WEIGHT_SUFFIXES,
    XTUNER_PARTS,
    checkpoint_step,
    is_pickle_name,
    is_training_state,
)

# re-exported: callers import these names from here
__all__ = ["Artifact", "ORIGINAL_LLAVA_TYPES", "WEIGHT_SUFFIXES", "CONFIG_NAMES", "checkpoint_step", "classify",
           "discover", "environment_artifact", "read_json_small", "sniff"]
MAX_WALK_DEPTH = 6
_SKIP_DIRS = frozenset({"__pycache__", "node_modules"})
_SHOWN = 8  # names listed in a nothing-recognized finding


@dataclass
class Artifact:
    path: str
    kinds: frozenset[str]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The most specific kind, for display."""
        for k in ("llava-lora", "llava-original", "xtuner", "run", "adapter", "model", "dataset", "weights",
                  "pickle", "unrecognized"):
            if k in self.kinds:
                return k
        return next(iter(sorted(self.kinds)))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "kinds": sorted(self.kinds)}


def read_json_small(path: Path, limit: int = 8 << 20) -> Any:
    """Read a small JSON file, or None when absent, too large or invalid (checks report why)."""
    try:
        if path.stat().st_size > limit:
            return None
        with path.open("rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return None


def discover(paths: list[str]) -> list[Artifact]:
    """Classify each path; walk folders that are not artifacts themselves. A path under which
    nothing is recognized becomes an ``unrecognized`` artifact (DOC002), never nothing."""
    found: list[Artifact] = []
    seen: set[str] = set()
    for raw in paths:
        if _is_url(raw):
            for art in _discover_url(raw):
                if art.path not in seen:
                    seen.add(art.path)
                    found.append(art)
            continue
        p = Path(raw)
        if not p.exists() and not p.is_symlink():
            raise ArtifactError(f"{raw}: no such file or folder")
        walk = _Seen(p)
        arts = list(_discover_one(p, explicit=True, depth=0, walk=walk))
        if not arts:
            arts = [walk.artifact()]
        for art in arts:
            if art.path not in seen:
                seen.add(art.path)
                found.append(art)
    return found


def _is_url(raw: str) -> bool:
    return "://" in raw


URL_DATASET_SUFFIXES = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}


URL_FOLDER_DEPTH = 4  # how deep a folder URL is listed (hf://datasets/org/name/data/train-*.parquet)


def _discover_url(url: str) -> list[Artifact]:
    """A dataset file given as an fsspec URL (``s3://bucket/train.jsonl``, ``hf://datasets/...``,
    ``gs://``, ``memory://``, ``file://``): a dataset by its suffix, else by its first bytes
    (``sniff``); anything else is DOC002 naming what it is. A folder URL is listed (a few levels
    down, as a local folder is walked): each dataset file in it (shards of a Hugging Face dataset)
    is one artifact, and a folder with none is DOC002. An object that does not exist or a
    protocol whose fsspec package is missing: an ``ArtifactError`` (exit 2) naming the URL and
    the package to install; never a traceback."""
    from doctor.io.jsonstream import URL_HINT

    try:
        import fsspec

        fs, key = fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise ArtifactError(f"{url}: cannot read this URL: {e} ({URL_HINT})") from None
    except Exception as e:  # noqa: BLE001 - an unknown protocol ("Protocol not known"), bad options
        raise ArtifactError(f"{url}: cannot read this URL: {type(e).__name__}: {e} ({URL_HINT})") from None
    try:
        info = fs.info(key)
    except FileNotFoundError:
        raise ArtifactError(f"{url}: no such object") from None
    except Exception as e:  # noqa: BLE001 - no credentials, no network: each backend its own error
        raise ArtifactError(f"{url}: cannot read this URL: {type(e).__name__}: {e}") from None
    if info.get("type") == "directory":
        return _discover_url_folder(url, fs, key)
    return [_url_file(url, fs, key, info)]


def _discover_url_folder(url: str, fs: Any, key: str) -> list[Artifact]:
    try:
        listed = sorted(fs.find(key, maxdepth=URL_FOLDER_DEPTH))
    except Exception as e:  # noqa: BLE001 - each backend its own error
        raise ArtifactError(f"{url}: cannot list this folder URL: {type(e).__name__}: {e}") from None
    base = url.rstrip("/")
    arts = []
    names = []
    for child in listed:
        rel = child[len(key.rstrip("/")):].lstrip("/") if child.startswith(key.rstrip("/")) else child.rsplit("/", 1)[-1]
        names.append(rel)
        suffix = next((sfx for sfx in URL_DATASET_SUFFIXES if rel.lower().endswith(sfx)), None)
        if suffix is not None and not any(part.startswith(".") for part in rel.split("/")):
            arts.append(Artifact(f"{base}/{rel}", frozenset({"dataset"}), {"format": URL_DATASET_SUFFIXES[suffix],
                                                                           "url": True}))
    if arts:
        return arts
    what = f"{len(names)} object(s), none a dataset file" if names else "an empty folder"
    message = (f"{url} is {what} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): given as a URL, "
               "only dataset files (.json, .jsonl, .parquet, .arrow) are checked")
    return [Artifact(url, frozenset({"unrecognized"}), {"message": message, "files": len(names), "folders": 0,
                                                        "names": names[:20], "what": what})]


def _url_file(url: str, fs: Any, key: str, info: dict[str, Any]) -> Artifact:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    low = name.lower()
    for suffix, fmt in URL_DATASET_SUFFIXES.items():
        if low.endswith(suffix):
            return Artifact(url, frozenset({"dataset"}), {"format": fmt, "url": True})
    try:
        with fs.open(key, "rb") as f:
            head = f.read(4096)
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(f"{url}: cannot read this URL: {type(e).__name__}: {e}") from None
    kind, what = _sniff_bytes(head, int(info.get("size") or len(head)))
    if kind in ("json", "jsonl"):
        return Artifact(url, frozenset({"dataset"}), {"format": kind, "url": True})
    message = (f"{name} is {what} ({int(info.get('size') or 0):,} bytes): given as a URL, only a dataset file "
               "(.json, .jsonl, .parquet, .arrow, or JSON content) is checked")
    return Artifact(url, frozenset({"unrecognized"}), {"message": message, "files": 1, "folders": 0,
                                                       "names": [name], "what": what})


def classify(path: Path, explicit: bool = False) -> Artifact | None:
    """The artifact at exactly this path, or None."""
    if path.is_file():
        return _classify_file(path, explicit)
    if path.is_dir():
        return _classify_dir(path)
    return None


class _Seen:
    """What a walk saw that it did not recognize, for the nothing-recognized finding."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[str] = []  # the first few, for the message
        self.count = 0
        self.folders = 0
        self.kinds: Counter[str] = Counter()
        self.cut: list[str] = []  # folders below the walk's depth limit
        self.what: str | None = None  # an explicit file: what its bytes say it is

    def file(self, path: Path) -> None:
        self.count += 1
        if len(self.files) < _SHOWN:
            self.files.append(self._rel(path))
        self.kinds[_kind_of_name(path.name)] += 1

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root)) if path != self.root else path.name
        except ValueError:
            return str(path)

    def artifact(self) -> Artifact:
        root = self.root
        if self.what is not None:
            size = _size(root)
            message = f"{root.name} is {self.what} ({size:,} bytes): not a dataset, model, adapter, run or weights file"
        elif not self.count and not self.folders:
            message = "the folder is empty"
        else:
            counts = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items(), key=lambda kv: (-kv[1], kv[0])))
            shown = ", ".join(self.files) + (f", ... ({self.count - len(self.files)} more)"
                                             if self.count > len(self.files) else "")
            message = (f"nothing vlm-doctor checks was found in {self.count} file(s)"
                       + (f" and {self.folders} folder(s)" if self.folders else "")
                       + (f" ({counts})" if counts else "") + (f": {shown}" if shown else ""))
            if self.cut:
                message += f"; folders deeper than {MAX_WALK_DEPTH} levels were not walked ({', '.join(self.cut[:3])})"
        return Artifact(str(root), frozenset({"unrecognized"}),
                        {"message": message, "files": self.count, "folders": self.folders,
                         "names": self.files, "what": self.what})


def _discover_one(path: Path, explicit: bool, depth: int, walk: _Seen) -> Iterator[Artifact]:
    if explicit and path.is_file() and (path.name in CONFIG_NAMES or path.name.endswith(INDEX_SUFFIX)):
        # `vlm-doctor check out/adapter_config.json` (pre-commit passes file names): the
        # artifact is the folder that holds it.
        parent = _classify_dir(path.parent)
        if parent is not None:
            yield parent
            return
    is_file = path.is_file()
    art = _classify_file(path, explicit) if is_file else _classify_dir(path) if path.is_dir() else None
    if art is not None:
        yield art
        if art.meta.get("config_parsed") is not False:
            return
        # a model candidate only by the name of a config.json that does not parse: it may be some
        # other tool's folder, so what lies inside is still looked at
    if art is None and explicit and not path.exists():
        walk.what = "a link to a missing file"  # a dangling link (a Hub cache blob gone missing)
        return
    if art is None and is_file:
        if explicit:
            walk.what = sniff(path)[1]
        else:
            walk.file(path)
        return
    if is_file or not path.is_dir():
        if explicit and not is_file and art is None:
            walk.what = "neither a regular file nor a folder (a device, socket or pipe)"
        return
    if depth:
        walk.folders += 1
    if depth >= MAX_WALK_DEPTH:
        walk.cut.append(walk._rel(path))
        return
    try:
        children = sorted(path.iterdir())
    except OSError as e:
        raise ArtifactError(f"{path}: cannot list folder: {e.strerror}") from None
    for child in children:
        if child.name.startswith(".") or child.name in _SKIP_DIRS:
            continue
        if child.is_symlink() and child.is_dir():
            continue  # never follow folder links while walking
        yield from _discover_one(child, explicit=False, depth=depth + 1, walk=walk)


def _classify_file(path: Path, explicit: bool) -> Artifact | None:
    name = path.name
    low = name.lower()
    if low.endswith(".jsonl"):
        return Artifact(str(path), frozenset({"dataset"}), {"format": "jsonl"})
    if low.endswith((".parquet", ".arrow")):  # Hugging Face datasets: shards, save_to_disk files
        return Artifact(str(path), frozenset({"dataset"}), {"format": low.rsplit(".", 1)[1]})
    if low.endswith(".json"):
        if name in CONFIG_NAMES or name.endswith(INDEX_SUFFIX):
            return None
        head = _peek(path)
        if head.startswith("[") or explicit:
            return Artifact(str(path), frozenset({"dataset"}), {"format": "json"})
        if head.startswith("{") and ('"conversations"' in head or '"messages"' in head):
            return Artifact(str(path), frozenset({"dataset"}), {"format": "json"})
        return None
    if low.endswith(SAFETENSORS_SUFFIX):
        return Artifact(str(path), frozenset({"weights"}))
    if is_pickle_name(low):
        # every file torch.load / pickle.load / mmengine would open is scanned, wherever it lies
        if is_training_state(path) or low.endswith((".pkl", ".pickle")):
            return Artifact(str(path), frozenset({"pickle"}), {"role": "training-state"})
        return Artifact(str(path), frozenset({"weights"}))
    if not explicit:
        return None
    # A name that says nothing: the first bytes decide (a text file is never "weights").
    kind, _ = sniff(path)
    if kind in ("zip", "pickle", "safetensors"):
        return Artifact(str(path), frozenset({"weights"}), {"unknown_extension": True, "content": kind})
    if kind in ("json", "jsonl"):
        return Artifact(str(path), frozenset({"dataset"}), {"format": kind})
    return None


_IMAGES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"), (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
)


def sniff(path: Path) -> tuple[str, str]:
    """What a file is by its first bytes: (kind, description). Kinds: zip, pickle, safetensors,
    json, jsonl, image, lfs-pointer, html, text, empty, binary, unreadable."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as e:
        return "unreadable", f"a file that cannot be read ({e.strerror or e})"
    return _sniff_bytes(head, size)


def _sniff_bytes(head: bytes, size: int) -> tuple[str, str]:
    """``sniff`` of a file's first bytes (at most 4 KiB) and its size."""
    if not head:
        return "empty", "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "zip", "a zip archive (torch.save's format)"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle", f"a pickle (protocol {head[1]})"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= size - 8 and head[8:9] == b"{":
            return "safetensors", "a safetensors file"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image", "a WEBP image"
    for magic, what in _IMAGES:
        if head.startswith(magic):
            return "image", what
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(LFS_POINTER_PREFIX):
        return "lfs-pointer", "a Git-LFS pointer (the real file was never downloaded)"
    if text[:1] == b"[":
        return "json", "a JSON array"
    if text[:1] == b"{":
        lines = [line for line in head.splitlines()[:3] if line.strip()]
        jsonl = len(lines) > 1 and all(line.lstrip()[:1] == b"{" for line in lines[1:])
        return ("jsonl", "JSON lines") if jsonl else ("json", "a JSON object")
    if text.lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "html", "an HTML/XML page"
    try:
        head.decode("utf-8")
        is_text = b"\x00" not in head
    except UnicodeDecodeError as e:
        is_text = e.start > len(head) - 4 and b"\x00" not in head
    if is_text:
        return "text", "a text file"
    return "binary", "an unrecognised binary file (not zip, pickle, safetensors, JSON or an image)"


def _kind_of_name(name: str) -> str:
    low = name.lower()
    suffix = low.rsplit(".", 1)[-1] if "." in low else ""
    if suffix in ("png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"):
        return "images"
    if name in CONFIG_NAMES or low.endswith(INDEX_SUFFIX):
        return "config files without a model"
    if suffix in ("txt", "md", "rst", "log", "yaml", "yml", "toml", "cfg", "py", "sh", "csv", "tsv"):
        return "text files"
    if suffix == "json":
        return "JSON files that are not datasets"
    return "other files"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _peek(path: Path, n: int = 4096) -> str:
    try:
        with path.open("rb") as f:
            return f.read(n).decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    except OSError:
        return ""


def _classify_dir(path: Path) -> Artifact | None:
    try:
        names = {c.name for c in path.iterdir()}
    except OSError:
        return None
    kinds: set[str] = set()
    meta: dict[str, Any] = {}

    if any((path / n).is_dir() for n in XTUNER_PARTS if n != "visual_encoder_adapter"):
        return Artifact(str(path), frozenset({"xtuner"}))

    checkpoints = sorted(
        (int(m.group(1)), n) for n in names if (m := CHECKPOINT_RE.match(n)) and (path / n).is_dir()
    )
    # DeepSpeed (global_stepN/ beside `latest` / zero_to_fp32.py) and FSDP SHARDED_STATE_DICT
    # (pytorch_model_fsdp_N/ of *.distcp) saves: training state that needs a conversion step.
    sharded = any((GLOBAL_STEP_RE.match(n) or FSDP_DIR_RE.match(n)) and (path / n).is_dir() for n in names) \
        or any(n.endswith(DISTCP_SUFFIX) for n in names)
    if checkpoints or sharded or TRAINER_STATE in names and not _has_weights(names):
        kinds.add("run")
        meta["checkpoints"] = [n for _, n in checkpoints]

    has_config = MODEL_CONFIG in names
    config = read_json_small(path / MODEL_CONFIG) if has_config else None
    parsed = isinstance(config, dict)
    if not parsed:
        config = None
    raw_type = config.get("model_type") if config else None
    model_type = raw_type if isinstance(raw_type, str) else None  # junk types are CKP's to report
    meta["model_type"] = model_type
    architectures = config.get("architectures") if config else None
    if not isinstance(architectures, list):
        architectures = []
    is_original = model_type in ORIGINAL_LLAVA_TYPES or (
        model_type == "llava" and any("LlavaLlama" in str(a) or "LlavaMistral" in str(a) for a in architectures)
    ) or (config is not None and "mm_projector_type" in config)

    if ADAPTER_CONFIG in names:
        kinds.add("adapter")
        if is_original or NON_LORA_TRAINABLES in names:
            kinds.add("llava-lora")
    elif has_config and (_has_weights(names) or is_original):
        kinds.add("model")
        if is_original:
            kinds.add("llava-original")
    elif has_config and "run" not in kinds:
        # Names first: a config.json that does not parse (or is not an object) still makes a model
        # candidate, so CKP001 reports it with line and column instead of the folder vanishing. A
        # config without weights (an incomplete download or an unfinished merge) is still a model
        # folder: the checkpoint checks say what is missing.
        if not parsed or "model_type" in config or "architectures" in config:  # type: ignore[operator]
            kinds.add("model")
            meta["config_parsed"] = parsed

    if not kinds:
        return None
    return Artifact(str(path), frozenset(kinds), meta)


def _has_weights(names: set[str]) -> bool:
    return any(n.endswith(WEIGHT_SUFFIXES) or n.endswith(INDEX_SUFFIX) for n in names)


def environment_artifact() -> Artifact:
    return Artifact("<environment>", frozenset({"environment"}))

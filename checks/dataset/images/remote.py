"""Images under an object-storage root: ``--image-folder s3://bucket/images`` (or ``gs://``,
``hf://``, ``file://``... whatever fsspec protocol is installed). Each image is read whole through
fsspec and checked from its bytes (``blob.check_bytes``), with the same codes as a file: missing
(DAT201), a folder (DAT202), empty (DAT203), unreadable (DAT204: no permission, the protocol's
package not installed, the bucket unreachable — a finding, never a crash), not an image, the
extension lying, truncated or corrupt, a decompression bomb. Picklable, so ``--engine ray`` ships it
to its workers, which read the storage themselves."""

from __future__ import annotations

import posixpath
from typing import Any

from doctor.checks.dataset.images.blob import check_bytes, sampled
from doctor.checks.dataset.images.probe import (
    _CLEAN,
    _SAME_AS,
    ERROR,
    ESCAPE,
    EXT_FORMATS,
    EXTENSION,
    FOLDER,
    MISSING,
    TOO_SMALL,
    UNREADABLE,
    WARNING,
)


def is_url(root: str | None) -> bool:
    return bool(root) and "://" in str(root)


def dataset_folder(path: str) -> str:
    """The folder relative image paths start from when --image-folder is not given: the dataset
    file's folder, or for a dataset given as a URL, the URL's folder (``s3://b/d/train.json`` ->
    ``s3://b/d``)."""
    if is_url(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    from pathlib import Path

    return str(Path(path).resolve().parent)


class RemoteProber:
    """``Prober``'s interface (``batch``, ``probe``) over an fsspec URL root."""

    def __init__(self, root: str, level: str, decode_percent: float, max_pixels: int | None) -> None:
        self.root = root.rstrip("/")
        self.level = level
        self.decode_percent = decode_percent
        self.max_pixels = max_pixels
        self._fs: Any = None
        self._base = ""
        self._error: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None}  # each worker opens its own connection

    def batch(self, refs: list[str]) -> list[tuple[int, int, str | None, int, tuple]]:
        return [self.probe(ref) for ref in refs]

    def probe(self, ref: str) -> tuple[int, int, str | None, int, tuple]:
        """(width, height, format, bytes, problems); problems are (code, severity, detail)."""
        if self._fs is None and self._error is None:
            self._connect()
        if self._error is not None:
            return 0, 0, None, 0, ((UNREADABLE, ERROR, self._error),)
        problems: list[tuple[str, str, str]] = []
        key = posixpath.normpath(posixpath.join(self._base, ref.lstrip("/") if ref.startswith("/") else ref))
        url = f"{self.root}/{ref}"
        if ref.startswith("/"):
            problems.append((ESCAPE, WARNING, f"an absolute path: read as {url}, under the image folder URL"))
        elif not (key + "/").startswith(self._base.rstrip("/") + "/"):
            return 0, 0, None, 0, ((ESCAPE, ERROR, f"'..' leads out of the image folder {self.root}"),)
        try:
            data = self._fs.cat_file(key)
        except (FileNotFoundError, IsADirectoryError):
            if self._is_dir(key):  # object stores answer "not found" for a prefix
                return 0, 0, None, 0, (*problems, (FOLDER, ERROR, f"{url} is a folder"))
            return 0, 0, None, 0, (*problems, (MISSING, ERROR, f"no such object: {url}"))
        except Exception as e:  # noqa: BLE001 - every backend raises its own errors: each is a finding
            if self._is_dir(key):
                return 0, 0, None, 0, (*problems, (FOLDER, ERROR, f"{url} is a folder"))
            return 0, 0, None, 0, (*problems, (UNREADABLE, ERROR, f"cannot read {url}: {type(e).__name__}: {e}"))
        decode = self.level == "decode" and sampled(data, self.decode_percent)
        w, h, fmt, nbytes, found = check_bytes(data, self.level, decode, self.max_pixels)
        said = EXT_FORMATS.get(posixpath.splitext(ref)[1].lower())
        if said and fmt and _SAME_AS.get(fmt, fmt) != said and not found:
            found.append((EXTENSION, WARNING, f"named {posixpath.splitext(ref)[1]} but it is a {fmt} file"))
        if h in (1, 3) and w:
            found.append((TOO_SMALL, WARNING, f"{w}x{h} pixels: an RGB array of height {h} makes transformers' "
                                              "image processors guess channels-first"))
        return w, h, fmt, nbytes, (*problems, *found) or _CLEAN

    def _connect(self) -> None:
        try:
            import fsspec

            self._fs, self._base = fsspec.core.url_to_fs(self.root)
        except ImportError as e:
            self._error = (f"cannot open the image folder {self.root}: {e} (install fsspec and the package "
                           "for this protocol, e.g. s3fs, gcsfs, huggingface_hub)")
        except Exception as e:  # noqa: BLE001 - an unknown protocol, bad credentials, ...
            self._error = f"cannot open the image folder {self.root}: {type(e).__name__}: {e}"

    def _is_dir(self, key: str) -> bool:
        try:
            return bool(self._fs.isdir(key))
        except Exception:  # noqa: BLE001 - no answer is no folder
            return False

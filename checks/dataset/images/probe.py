"""Check every image a dataset references, once per distinct path, in parallel.

Levels (``--images``): ``exists`` stats the file; ``header`` also reads its first bytes (format,
size, decompression bomb, lying extension; a file that looks cut is decoded, that one alone, so
its verdict is certain); ``decode`` also decodes a
sample (``--decode-sample``) the way LLaVA does (``Image.open(...).convert("RGB")``), which is
the only way to see a truncated JPEG for sure (``verify()`` is a no-op for JPEG).

Paths resolve like LLaVA's ``os.path.join(image_folder, image)``: an absolute path discards the
folder, ``..`` and symlinks can leave it; each is reported (DAT209) and still checked.
"""

from __future__ import annotations

import os
import stat
import warnings
import zlib
from typing import Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.images.header import HEAD, HeaderError, read_size, sniff

EXT_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".png": "PNG", ".gif": "GIF",
               ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
_SAME_AS = {"MPO": "JPEG"}  # Pillow's name for multi-picture JPEGs from cameras
_CLEAN: tuple = ()
ERROR, WARNING = "error", "warning"

# Problem codes a probe reports.
MISSING, FOLDER, EMPTY, UNREADABLE, NOT_IMAGE = DAT.IMAGE_MISSING, DAT.IMAGE_IS_FOLDER, DAT.IMAGE_EMPTY, DAT.IMAGE_UNREADABLE, DAT.NOT_AN_IMAGE
EXTENSION, CORRUPT, BOMB, ESCAPE, TOO_SMALL = DAT.IMAGE_EXTENSION_MISMATCH, DAT.IMAGE_CORRUPT, DAT.DECOMPRESSION_BOMB, DAT.IMAGE_PATH_ESCAPES_ROOT, DAT.IMAGE_TOO_SMALL


class Prober:
    """Probe image references against one image root; picklable for worker processes."""

    def __init__(self, root: str, level: str, decode_percent: float, max_pixels: int | None) -> None:
        self.root = os.path.abspath(root)
        self.prefix = self.root.rstrip(os.sep) + os.sep
        real = os.path.realpath(self.root)
        self.real_prefix = real.rstrip(os.sep) + os.sep
        self.level = level
        self.decode_percent = decode_percent
        self.max_pixels = max_pixels
        self._dirs: dict[str, str] = {}

    def batch(self, refs: list[str]) -> list[tuple[int, int, str | None, int, tuple]]:
        return [self.probe(ref) for ref in refs]

    def probe(self, ref: str) -> tuple[int, int, str | None, int, tuple]:
        """(width, height, format, bytes, problems); problems are (code, severity, detail)."""
        problems: list[tuple[str, str, str]] = []
        if os.path.isabs(ref):
            full = os.path.normpath(ref)
            inside = full.startswith(self.prefix)
            problems.append((ESCAPE, WARNING,
                             "an absolute path: os.path.join(image_folder, path) discards the image folder and reads "
                             f"{full} as it is{'' if inside else f', outside {self.root}'}; it works only where that "
                             "file exists (the dataset breaks when moved)"))
        else:
            full = os.path.normpath(os.path.join(self.root, ref))
            if not full.startswith(self.prefix):
                problems.append((ESCAPE, ERROR, f"'..' leads out of the image folder to {full}"))
        try:
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                if not problems:
                    target = os.path.realpath(full)
                    if not target.startswith(self.real_prefix):
                        problems.append((ESCAPE, ERROR, f"a symlink to {target}, outside the image folder"))
                st = os.stat(full)
            elif not problems:
                self._check_folder_links(full, problems)
        except FileNotFoundError:
            return 0, 0, None, 0, (*problems, (MISSING, ERROR, f"no such file: {full}"))
        except NotADirectoryError:
            return 0, 0, None, 0, (*problems, (MISSING, ERROR, f"a parent of {full} is a file, not a folder"))
        except OSError as e:
            return 0, 0, None, 0, (*problems, (UNREADABLE, ERROR, f"cannot stat {full}: {e.strerror}"))
        except ValueError:  # a NUL byte or an unencodable character in the path
            return 0, 0, None, 0, (*problems, (UNREADABLE, ERROR, f"the path {ref!r} cannot be opened at all"))
        if stat.S_ISDIR(st.st_mode):
            return 0, 0, None, 0, (*problems, (FOLDER, ERROR, f"{full} is a folder"))
        if not stat.S_ISREG(st.st_mode):
            return 0, 0, None, 0, (*problems, (UNREADABLE, ERROR, f"{full} is not a regular file"))
        if st.st_size == 0:
            return 0, 0, None, 0, (*problems, (EMPTY, ERROR, f"{full} is empty (0 bytes)"))
        if self.level == "exists":
            return 0, 0, None, st.st_size, tuple(problems) or _CLEAN
        return self._read(ref, full, st.st_size, problems)

    def _check_folder_links(self, full: str, problems: list[tuple[str, str, str]]) -> None:
        folder = os.path.dirname(full)
        real = self._dirs.get(folder)
        if real is None:
            real = self._dirs[folder] = os.path.realpath(folder) + os.sep
        if not real.startswith(self.real_prefix):
            problems.append((ESCAPE, WARNING, f"its folder is a symlink to {real.rstrip(os.sep)}, outside the image "
                                              "folder (deliberate for a mounted dataset? then ignore this)"))

    def _read(self, ref: str, full: str, size: int, problems: list[tuple[str, str, str]]) -> tuple:
        try:
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as e:
            return 0, 0, None, size, (*problems, (UNREADABLE, ERROR, f"cannot open {full}: {e.strerror}"))
        try:
            head = os.read(fd, HEAD)
            fmt = sniff(head)
            note = None
            if fmt is None:
                w, h, fmt, verdict = self._pillow(full)
            else:
                try:
                    w, h, note = read_size(fd, head, fmt, size)
                    verdict = None
                except HeaderError:
                    w, h, fmt, verdict = self._pillow(full)
        except OSError as e:
            return 0, 0, None, size, (*problems, (UNREADABLE, ERROR, f"cannot read {full}: {e.strerror}"))
        finally:
            os.close(fd)
        if verdict is not None:
            problems.append(verdict)
            return w, h, fmt, size, tuple(problems)
        self._judge(ref, full, w, h, fmt, note, problems)
        return w, h, fmt, size, tuple(problems) or _CLEAN

    def _judge(self, ref: str, full: str, w: int, h: int, fmt: str | None, note: str | None,
               problems: list[tuple[str, str, str]]) -> None:
        ext = os.path.splitext(ref)[1].lower()
        said = EXT_FORMATS.get(ext)
        if said and fmt and _SAME_AS.get(fmt, fmt) != said:
            problems.append((EXTENSION, WARNING, f"named {ext} but it is a {fmt} file"))
        bomb = False
        if self.max_pixels and w * h > self.max_pixels:
            bomb = True
            over = w * h > 2 * self.max_pixels
            problems.append((BOMB, ERROR if over else WARNING,
                             f"{w}x{h} = {w * h:,} pixels, over {'twice ' if over else ''}Pillow's MAX_IMAGE_PIXELS "
                             f"({self.max_pixels:,}): Image.open "
                             + ("raises DecompressionBombError" if over else "warns (DecompressionBombWarning)")))
        if h in (1, 3) and w:
            problems.append((TOO_SMALL, WARNING, f"{w}x{h} pixels: an RGB array of height {h} makes transformers' "
                                                 "image processors guess channels-first (infer_channel_dimension_format)"))
        if bomb:
            return
        if note or (self.level == "decode" and self._sampled(ref)):
            # A suspicious header (no end marker, a size the header disagrees with) is settled by
            # decoding this one image: the verdict is Pillow's, never a guess.
            failure = self._decode(full)
            if failure:
                problems.append((CORRUPT, ERROR, failure + (f" ({note})" if note else "")))

    def _sampled(self, ref: str) -> bool:
        if self.decode_percent >= 100:
            return True
        return zlib.crc32(ref.encode("utf-8", "surrogatepass")) % 10000 < self.decode_percent * 100

    def _pillow(self, full: str) -> tuple[int, int, str | None, tuple[str, str, str] | None]:
        """Ask Pillow; (width, height, format, verdict) with a verdict for what it refuses."""
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(full) as im:
                    return im.size[0], im.size[1], im.format, None
        except UnidentifiedImageError:
            return 0, 0, None, (NOT_IMAGE, ERROR, f"Pillow cannot identify {full} as an image")
        except Image.DecompressionBombError as e:
            return 0, 0, None, (BOMB, ERROR, f"Image.open raises DecompressionBombError: {e}")
        except Exception as e:  # noqa: BLE001 - Pillow raises SyntaxError, ValueError, struct.error...
            return 0, 0, None, (CORRUPT, ERROR, f"Image.open fails: {type(e).__name__}: {e}")

    def _decode(self, full: str) -> str | None:
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(full) as im:
                    im.convert("RGB")
        except Exception as e:  # noqa: BLE001 - any decoding failure is the finding
            return f"decoding fails as in LLaVA's Image.open(...).convert('RGB'): {type(e).__name__}: {e}"
        return None


def pillow_max_pixels() -> int | None:
    from PIL import Image

    value: Any = Image.MAX_IMAGE_PIXELS
    return int(value) if value else None

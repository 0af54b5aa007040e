"""Real image files, healthy and broken, for dataset tests.

Needs only Pillow (no numpy, no torch). Every builder writes one file, creates its parent
folders, and returns the path it wrote. Pixel content is seeded, so the same arguments give
the same bytes.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path
from typing import Literal

from PIL import Image

ImageKind = Literal["noise", "gradient", "blank"]

# Pillow's save() names for the suffixes a dataset is likely to use.
_FORMAT_BY_SUFFIX = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
    ".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF",
}
BLANK_COLOR = (128, 128, 128)


def make_image(
    path: str | Path,
    size: tuple[int, int] = (48, 48),
    fmt: str | None = None,
    seed: int = 0,
    kind: ImageKind = "noise",
    mode: str = "RGB",
) -> Path:
    """Write a real, decodable image of ``size`` = (width, height) pixels.

    ``fmt`` is a Pillow format name ("PNG", "JPEG", "WEBP", ...); by default it follows the
    suffix of ``path`` (PNG when the suffix is unknown). ``kind``: "noise" (seeded random
    pixels), "gradient" (smooth ramps, seed shifts them) or "blank" (one flat mid-grey,
    ``BLANK_COLOR``: the "blank image" of a real-vs-blank sanity probe). ``mode`` is the
    Pillow mode of the stored image ("RGB", "L", "RGBA", "P", ...); JPEG cannot store alpha,
    so ask for "RGB" or "L" there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or _FORMAT_BY_SUFFIX.get(path.suffix.lower(), "PNG")
    image = pil_image(size, seed, kind)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def pil_image(size: tuple[int, int] = (48, 48), seed: int = 0, kind: ImageKind = "noise") -> Image.Image:
    """An in-memory RGB image of ``size`` = (width, height), as ``make_image`` would write it."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    if kind == "blank":
        return Image.new("RGB", size, BLANK_COLOR)
    if kind == "noise":
        return Image.frombytes("RGB", size, random.Random(seed).randbytes(width * height * 3))
    if kind == "gradient":
        shift = seed * 37
        data = bytearray()
        for y in range(height):
            for x in range(width):
                data += bytes(((x * 255 // max(width - 1, 1) + shift) % 256,
                               (y * 255 // max(height - 1, 1) + shift) % 256,
                               ((x + y) * 127 // max(width + height - 2, 1) + shift) % 256))
        return Image.frombytes("RGB", size, bytes(data))
    raise ValueError(f"unknown image kind {kind!r}; use 'noise', 'gradient' or 'blank'")


def make_truncated_jpeg(path: str | Path, size: tuple[int, int] = (48, 48), seed: int = 0,
                        keep: float = 0.5) -> Path:
    """Write a JPEG cut after ``keep`` of its bytes.

    Pillow opens it and reports its size, ``verify()`` passes (a no-op for JPEG), and only
    ``load()`` fails with ``OSError: image file is truncated``: the case a header-only check
    misses.
    """
    path = Path(path)
    make_image(path, size=size, fmt="JPEG", seed=seed, kind="noise")
    data = path.read_bytes()
    path.write_bytes(data[: max(int(len(data) * keep), 700)])  # keep the headers whole
    return path


def make_decompression_bomb_png(path: str | Path, w: int = 20000, h: int = 20000) -> Path:
    """Write a tiny PNG whose header declares ``w`` x ``h`` pixels.

    The chunks are built by hand (signature, IHDR, one IDAT holding a few compressed rows,
    IEND, each with its CRC), so the file is a few hundred bytes. At the default 20000 x 20000
    (4e8 pixels, over twice Pillow's ``MAX_IMAGE_PIXELS``) ``Image.open`` raises
    ``DecompressionBombError``; between 1x and 2x the limit it only warns. The pixel data is
    incomplete on purpose: nothing should ever decode it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    rows = (b"\x00" + b"\x00" * (3 * w)) * 4  # filter byte + a few black rows
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows, 9))
    path.write_bytes(png + _chunk(b"IEND", b""))
    return path


def make_lying_extension(path: str | Path, real_fmt: str = "PNG", size: tuple[int, int] = (48, 48),
                         seed: int = 0) -> Path:
    """Write an image in ``real_fmt`` under a name whose suffix says something else.

    The default puts PNG bytes behind ``path`` (give it a ".jpg" name). The image itself is
    valid; only the extension lies.
    """
    path = Path(path)
    if _FORMAT_BY_SUFFIX.get(path.suffix.lower()) == real_fmt.upper():
        raise ValueError(f"{path.name}: the suffix already matches {real_fmt}; pick another suffix")
    return make_image(path, size=size, fmt=real_fmt, seed=seed)


def make_not_an_image(path: str | Path, text: str = "this is not an image\n") -> Path:
    """Write plain text under an image name (e.g. "photo.png"): Pillow cannot identify it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def make_cut_image(path: str | Path, fmt: str = "PNG", size: tuple[int, int] = (64, 64), seed: int = 0,
                   keep: float = 0.5, progressive: bool = False) -> Path:
    """Write an image in ``fmt`` (JPEG, PNG, WEBP) cut after ``keep`` of its bytes: what an
    interrupted download leaves. The header stays whole, so ``Image.open`` still reports the
    size and only decoding fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = _encode(size, seed, fmt, progressive=progressive)
    path.write_bytes(buf[: max(int(len(buf) * keep), 200)])
    return path


def make_image_with_trailer(path: str | Path, fmt: str = "JPEG", size: tuple[int, int] = (64, 64), seed: int = 0,
                            trailer: int = 8192, progressive: bool = False) -> Path:
    """Write a VALID image followed by ``trailer`` bytes of junk (what some cameras and editors
    append after a JPEG's end-of-image marker): the end marker is no longer in the last bytes, yet
    Pillow decodes the image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    junk = random.Random(seed).randbytes(trailer).replace(b"\xff\xd9", b"\x00\x00").replace(b"IEND", b"iend")
    path.write_bytes(_encode(size, seed, fmt, progressive=progressive) + junk)
    return path


def make_png_without_iend(path: str | Path, size: tuple[int, int] = (64, 64), seed: int = 0) -> Path:
    """Write a PNG whose pixel data is complete but whose IEND chunk is missing (a short PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = _encode(size, seed, "PNG")
    assert buf.endswith(_chunk(b"IEND", b""))
    path.write_bytes(buf[: -len(_chunk(b"IEND", b""))])
    return path


def make_corrupt_png(path: str | Path, size: tuple[int, int] = (64, 64), seed: int = 0) -> Path:
    """Write a PNG whose compressed pixel data is damaged (bytes overwritten in the middle) and
    cut before its end: the header parses, decoding fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = bytearray(_encode(size, seed, "PNG"))
    mid = len(buf) // 2
    buf[mid:mid + 64] = b"\x00" * 64
    path.write_bytes(bytes(buf[: len(buf) * 3 // 4]))
    return path


def _encode(size: tuple[int, int], seed: int, fmt: str, progressive: bool = False) -> bytes:
    import io

    out = io.BytesIO()
    kw = {"progressive": True} if progressive else {}
    pil_image(size, seed=seed, kind="noise").save(out, fmt, **kw)
    return out.getvalue()

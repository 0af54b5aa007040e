"""The image checks on bytes in memory: an image embedded in a parquet / Arrow row (datasets'
``{"bytes", "path"}`` struct) or read whole from object storage. The same verdicts as the file
checks (``probe.py``): the format from the first bytes, the size from Pillow's header read, a full
decode (as ``Image.open(...).convert("RGB")`` does in the data loader) when the bytes end where no
complete image of their format ends, or for every image at ``--images decode``."""

from __future__ import annotations

import io
import warnings
import zlib

from doctor.checks.dataset.images.header import sniff
from doctor.checks.dataset.images.probe import BOMB, CORRUPT, EMPTY, ERROR, NOT_IMAGE

Result = tuple[int, int, "str | None", int, list[tuple[str, str, str]]]


def check_bytes(data: bytes, level: str, decode: bool, max_pixels: int | None) -> Result:
    """(width, height, format, bytes, [(code, severity, detail)]) for one image's bytes."""
    if not data:
        return 0, 0, None, 0, [(EMPTY, ERROR, "the image is 0 bytes")]
    if level == "exists":
        return 0, 0, None, len(data), []
    fmt = sniff(bytes(data[:4096]))
    w, h, failure, pil_fmt = _open(data)
    if failure is not None:
        code = NOT_IMAGE if fmt is None and "cannot identify" in failure else CORRUPT
        return 0, 0, None, len(data), [(code, ERROR, failure)]
    fmt = pil_fmt or fmt
    if max_pixels and w * h > 2 * max_pixels:
        return w, h, fmt, len(data), [(BOMB, ERROR, f"{w}x{h} = {w * h:,} pixels, over twice Pillow's "
                                       "MAX_IMAGE_PIXELS: Image.open raises DecompressionBombError")]
    if decode or looks_cut(fmt, data):
        failure = _decode(data)
        if failure:
            return w, h, fmt, len(data), [(CORRUPT, ERROR, failure)]
    return w, h, fmt, len(data), []


def sampled(data: bytes, percent: float) -> bool:
    """Whether ``--decode-sample PERCENT`` decodes this image: a hash of its bytes' length and
    ends, so every run and every worker picks the same images."""
    if percent >= 100:
        return True
    return zlib.crc32(bytes(data[:64]) + bytes(data[-64:]) + len(data).to_bytes(8, "little")) % 10000 < percent * 100


def looks_cut(fmt: str | None, data: bytes) -> bool:
    """Bytes that end where no complete image of their format ends: worth a full decode."""
    tail = bytes(data[-12:])
    if fmt == "JPEG":
        return b"\xff\xd9" not in bytes(data[-4096:])
    if fmt == "PNG":
        return b"IEND" not in tail
    if fmt == "GIF":
        return not tail.endswith(b"\x3b")
    return False


def _open(data: bytes) -> tuple[int, int, str | None, str | None]:
    """(width, height, failure, format) from Pillow's header read (it stops after the header)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.size[0], im.size[1], None, im.format
    except UnidentifiedImageError:
        return 0, 0, "Pillow cannot identify the bytes as an image (Image.open raises UnidentifiedImageError)", None
    except Image.DecompressionBombError as e:
        return 0, 0, f"Image.open raises DecompressionBombError: {e}", None
    except Exception as e:  # noqa: BLE001 - Pillow raises SyntaxError, ValueError, struct.error...
        return 0, 0, f"Image.open fails: {type(e).__name__}: {e}", None


def _decode(data: bytes) -> str | None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - any decoding failure is the finding
        return f"decoding fails as in Image.open(...).convert('RGB'): {type(e).__name__}: {e}"
    return None

"""Image format and size from the first bytes of a file, without Pillow.

Pillow's ``Image.open`` reads the same fields (it stops after the header), but costs ~10x more
per file because it probes plugins and builds an ImageFile. These readers cover the formats of
real VLM datasets (JPEG, PNG, GIF, BMP, WEBP); anything else, and any header these readers
cannot make sense of, goes to Pillow, so the verdict is always Pillow's.
"""

from __future__ import annotations

import os
import struct

HEAD = 4096
TAIL = 4096
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8})


class HeaderError(Exception):
    """The header is malformed (Pillow gets the final word)."""


def sniff(head: bytes) -> str | None:
    """Pillow's format name for the magic bytes at the start of a file, or None."""
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def read_size(fd: int, head: bytes, fmt: str, file_size: int) -> tuple[int, int, str | None]:
    """(width, height, truncation note or None) for a file whose ``head`` sniffed as ``fmt``.

    The note is a header-level guess ("no JPEG end-of-image marker ..."), except for WEBP where
    the RIFF size makes it exact. Raises HeaderError when the header does not parse."""
    try:
        if fmt == "PNG":
            if head[12:16] != b"IHDR":
                raise HeaderError("PNG without an IHDR chunk first")
            w, h = struct.unpack(">II", head[16:24])
            return w, h, _tail_note(fd, head, file_size, b"IEND", "PNG end chunk (IEND)")
        if fmt == "JPEG":
            w, h = _jpeg_size(fd, head, file_size)
            return w, h, _tail_note(fd, head, file_size, b"\xff\xd9", "JPEG end-of-image marker (FFD9)")
        if fmt == "GIF":
            w, h = struct.unpack("<HH", head[6:10])
            return w, h, None
        if fmt == "BMP":
            (dib,) = struct.unpack("<I", head[14:18])
            if dib == 12:
                w, h = struct.unpack("<HH", head[18:22])
            else:
                w, h = struct.unpack("<ii", head[18:26])
            return abs(w), abs(h), None
        if fmt == "WEBP":
            return _webp_size(head, file_size)
    except struct.error:
        raise HeaderError(f"{fmt} header cut short ({len(head)} bytes)") from None
    raise HeaderError(f"no reader for {fmt}")


def _jpeg_size(fd: int, head: bytes, file_size: int) -> tuple[int, int]:
    data, base = head, 0  # data holds file bytes [base, base + len(data))
    pos = 2
    while pos + 4 <= file_size:
        if pos + 9 > base + len(data):
            os.lseek(fd, pos, os.SEEK_SET)
            data, base = os.read(fd, HEAD), pos
            if len(data) < 4:
                break
        k = pos - base
        if data[k] != 0xFF:
            raise HeaderError(f"JPEG marker expected at byte {pos}")
        marker = data[k + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF:
            if k + 9 > len(data):
                raise HeaderError("JPEG start-of-frame cut short")
            h, w = struct.unpack(">HH", data[k + 5:k + 9])
            return w, h
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            raise HeaderError("JPEG image data before any start-of-frame marker")
        (length,) = struct.unpack(">H", data[k + 2:k + 4])
        if length < 2:
            raise HeaderError(f"JPEG segment of length {length} at byte {pos}")
        pos += 2 + length
    raise HeaderError("JPEG ends before its start-of-frame marker")


def _webp_size(head: bytes, file_size: int) -> tuple[int, int, str | None]:
    (riff,) = struct.unpack("<I", head[4:8])
    note = None
    if riff + 8 > file_size:
        note = f"the RIFF header declares {riff + 8:,} bytes, the file has {file_size:,}"
    chunk = head[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF, note
    if chunk == b"VP8L":
        b0, b1, b2, b3 = head[21:25]
        return 1 + (((b1 & 0x3F) << 8) | b0), 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6)), note
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little"), note
    raise HeaderError(f"WEBP with an unknown first chunk {chunk!r}")


def _tail_note(fd: int, head: bytes, file_size: int, marker: bytes, what: str) -> str | None:
    """A note when ``marker`` is not in the last bytes (trailing junk after it is allowed)."""
    if file_size <= len(head):
        tail = head[-TAIL:]
    else:
        os.lseek(fd, max(0, file_size - TAIL), os.SEEK_SET)
        tail = os.read(fd, TAIL)
    if marker in tail:
        return None
    return f"no {what} in the last {min(TAIL, file_size):,} bytes: the file looks cut short"

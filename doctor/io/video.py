"""A video's frame count, duration and frame size from its container header, without decoding.

What PyAV reports for the first video stream (``stream.frames``, ``stream.duration *
stream.time_base``, ``stream.width`` / ``stream.height``) is what LLaMA-Factory's mm_plugin reads
to sample a video's frames and count its tokens; this module reads the same numbers from the
boxes / chunks FFmpeg's demuxers read them from:

- ISO BMFF (MP4, MOV, M4V, 3GP): the ``moov`` box wherever it sits (faststart or at the end; the
  reader seeks from box header to box header and never reads ``mdat``), the first ``trak`` whose
  ``hdlr`` handler is ``vide``: ``mdhd`` timescale and duration (FFmpeg's ``mov_read_mdhd``, then
  the smaller of that and the ``stts`` sum, as ``mov_read_stts`` does, and of the edit list's
  length, as ``mov_fix_index`` does: ``elst`` segment durations, movie timescale of ``mvhd``
  rescaled to the track's, empty edits included), the sample count of
  ``stsz`` / ``stz2`` (``stts``'s when neither), and the width / height of the first visual
  sample entry of ``stsd``. A fragmented file (``mvex`` in ``moov``) keeps its samples in
  ``moof`` boxes: FFmpeg reports 0 frames for it, the duration from the fragments.
- AVI (RIFF ``AVI ``): the first ``strl`` whose ``strh`` type is ``vids``: ``dwLength`` frames
  of ``dwScale / dwRate`` seconds, width and |height| from ``strf``'s BITMAPINFOHEADER.

Anything else (Matroska / WebM, MPEG-TS, FLV, ...) and the fragmented case go to PyAV when it is
importable (``av.open`` reads the header; nothing is decoded); without PyAV they are reported as
not measured. Reads are bounded: box and chunk headers, and the ``moov`` / ``hdrl`` payloads
(at most ``MAX_HEADER`` bytes).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

MAX_HEADER = 64 << 20  # a moov of hours of video at high frame rates stays far below this
_ISO_TOP = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp",
                      b"sidx", b"moof", b"mfra", b"meta", b"pdin", b"prfl", b"junk"})
_IMAGE_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
                (b"BM", "BMP"))


@dataclass(frozen=True)
class VideoInfo:
    """The first video stream as PyAV reports it."""

    frames: int  # stream.frames: 0 when the container does not say (LLaMA-Factory: "infinite")
    duration: Fraction | None  # stream.duration * stream.time_base, in seconds; None when unknown
    width: int
    height: int
    container: str  # "mp4", "mov", "avi", or PyAV's format name
    measured_by: str = "header"  # "header" (this module) or "pyav"
    fps: Fraction | None = None  # stream.average_rate, when known

    @property
    def seconds(self) -> float | None:
        return None if self.duration is None else float(self.duration)


class VideoError(Exception):
    """The file cannot be measured. ``kind``:

    - ``"not-a-video"``: no container PyAV opens (``av.open`` raises InvalidDataError);
    - ``"truncated"``: a container cut short before its header (``av.open`` raises);
    - ``"no-video-stream"``: a container without a video stream (LLaMA-Factory's ``next(...)``
      raises StopIteration);
    - ``"image"``: an image file (PyAV opens it as a one-frame video with its image demuxer);
    - ``"unmeasured"``: a container this module does not read and PyAV is not installed.
    """

    def __init__(self, kind: str, message: str, container: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.container = container


def probe_video(path: str | os.PathLike[str], use_pyav: bool = True) -> VideoInfo:
    """The first video stream of ``path``: from the header when this module reads the container,
    else from PyAV (when ``use_pyav`` and importable). Raises ``VideoError``; OSError passes."""
    try:
        return read_video_header(path)
    except VideoError as e:
        if e.kind != "unmeasured" or not use_pyav or not pyav_available():
            raise
        return pyav_info(path)


def read_video_header(path: str | os.PathLike[str]) -> VideoInfo:
    """The header reader alone (see the module docstring); raises ``VideoError``."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        if not head:
            raise VideoError("not-a-video", "the file is empty")
        if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
            return _avi(f, size)
        if head[4:8] in _ISO_TOP and len(head) >= 8:
            return _iso(f, size)
        if head[:4] == b"\x1a\x45\xdf\xa3":
            raise VideoError("unmeasured", "a Matroska / WebM container", "matroska,webm")
        for magic, name in _IMAGE_MAGIC:
            if head.startswith(magic):
                raise VideoError("image", f"a {name} image, not a video", name)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            raise VideoError("image", "a WEBP image, not a video", "WEBP")
        if head[:1] == b"G" and size >= 189 and _ts(f):
            raise VideoError("unmeasured", "an MPEG transport stream", "mpegts")
        if head[:3] == b"FLV":
            raise VideoError("unmeasured", "an FLV container", "flv")
        if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
            raise VideoError("unmeasured", "an MPEG program stream", "mpeg")
        if head[:4] == b"OggS":
            raise VideoError("unmeasured", "an Ogg container", "ogg")
        if head[:4] == b"\x30\x26\xb2\x75":
            raise VideoError("unmeasured", "an ASF / WMV container", "asf")
        if _texty(head):
            raise VideoError("not-a-video", f"text, not a video (starts with {head[:12]!r})")
        raise VideoError("unmeasured", f"a format this reader does not know (starts with {head[:8].hex()})")


def pyav_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def pyav_info(path: str | os.PathLike[str]) -> VideoInfo:
    """What PyAV's ``av.open`` reports (header only; nothing is decoded)."""
    import av

    try:
        container = av.open(str(path), "r")
    except av.FFmpegError as e:
        raise VideoError("not-a-video", f"PyAV cannot open it ({e.__class__.__name__}: "
                                        f"{getattr(e, 'strerror', None) or e})") from None
    try:
        name = container.format.name
        stream = next((s for s in container.streams if s.type == "video"), None)
        if stream is None:
            raise VideoError("no-video-stream", "the container holds no video stream ("
                             + (", ".join(sorted({s.type for s in container.streams})) or "no streams") + ")", name)
        duration = None if stream.duration is None else Fraction(stream.duration) * stream.time_base
        rate = stream.average_rate
        return VideoInfo(int(stream.frames), duration, int(stream.width), int(stream.height), name, "pyav",
                         Fraction(rate) if rate else None)
    finally:
        container.close()


# ---- ISO BMFF ------------------------------------------------------------------------------

def _boxes(f: BinaryIO, start: int, end: int):
    """(type, payload offset, payload end) of the boxes in [start, end), by seeking."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        hdr = f.read(8)
        if len(hdr) < 8:
            return
        size, kind = struct.unpack(">I4s", hdr)
        body = pos + 8
        if size == 1:
            ext = f.read(8)
            if len(ext) < 8:
                return
            size = struct.unpack(">Q", ext)[0]
            body = pos + 16
        elif size == 0:
            size = end - pos
        if size < body - pos:
            return
        yield kind, body, pos + size
        pos += size


def _sub(buf: bytes, start: int, end: int):
    """(type, payload start, payload end) of the boxes inside an in-memory payload."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        body = pos + 8
        if size == 1 and pos + 16 <= end:
            size = struct.unpack_from(">Q", buf, pos + 8)[0]
            body = pos + 16
        elif size == 0:
            size = end - pos
        if size < body - pos or pos + size > end:
            return
        yield kind, body, pos + size
        pos += size


def _iso(f: BinaryIO, size: int) -> VideoInfo:
    brand = b""
    moov: tuple[int, int] | None = None
    past_end = False
    for kind, body, end in _boxes(f, 0, size):
        if kind == b"ftyp":
            f.seek(body)
            brand = f.read(4)
        elif kind == b"moov":
            moov = (body, end)
            break
        if end > size:
            past_end = True
    container = "mov" if brand == b"qt  " else "mp4"
    if moov is None:
        if past_end:
            raise VideoError("truncated", "the file ends inside a box before any moov box (a cut download or copy)",
                             container)
        raise VideoError("truncated", "no moov box: the header with the tracks is missing (an interrupted "
                         "recording, or a file cut short)", container)
    body, end = moov
    if end > size:
        raise VideoError("truncated", "the moov box runs past the end of the file", container)
    if end - body > MAX_HEADER:
        raise VideoError("unmeasured", f"a moov box of {end - body:,} bytes", container)
    f.seek(body)
    buf = f.read(end - body)
    fragmented = any(k == b"mvex" for k, _, _ in _sub(buf, 0, len(buf)))
    movie_scale = 0
    mvhd = _child(buf, 0, len(buf), b"mvhd")
    if mvhd is not None and mvhd[1] - mvhd[0] >= 24:
        movie_scale = struct.unpack_from(">I", buf, mvhd[0] + (20 if buf[mvhd[0]] == 1 else 12))[0]
    for kind, tb, te in _sub(buf, 0, len(buf)):
        if kind != b"trak":
            continue
        track = _trak(buf, tb, te)
        if track is None:
            continue
        timescale, duration, samples, stts_count, stts_sum, width, height, edits = track
        if fragmented:
            raise VideoError("unmeasured", "a fragmented MP4 (its samples are in moof boxes)", container)
        frames = samples if samples is not None else stts_count
        if stts_sum:
            duration = min(duration, stts_sum) if duration else stts_sum
        if edits and frames and movie_scale:  # av_rescale: rounded to nearest, halves away from 0
            length = sum((e * timescale + movie_scale // 2) // movie_scale for e in edits)
            duration = min(duration, length)
        seconds = Fraction(duration, timescale) if timescale else None
        fps = Fraction(frames, 1) / seconds if seconds and frames else None
        return VideoInfo(frames, seconds, width, height, container, "header", fps)
    raise VideoError("no-video-stream", "no video track (no trak with a 'vide' handler)", container)


def _trak(buf: bytes, start: int, end: int) -> tuple[int, int, int | None, int, int, int, int, list[int]] | None:
    mdia = _child(buf, start, end, b"mdia")
    if mdia is None:
        return None
    hdlr = _child(buf, *mdia, b"hdlr")
    if hdlr is None or buf[hdlr[0] + 8:hdlr[0] + 12] != b"vide":
        return None
    mdhd = _child(buf, *mdia, b"mdhd")
    timescale = duration = 0
    if mdhd is not None:
        b = mdhd[0]
        if buf[b] == 1:
            timescale, duration = struct.unpack_from(">IQ", buf, b + 20)
        else:
            timescale, duration = struct.unpack_from(">II", buf, b + 12)
        if duration in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
            duration = 0
    stbl = None
    minf = _child(buf, *mdia, b"minf")
    if minf is not None:
        stbl = _child(buf, *minf, b"stbl")
    samples: int | None = None
    stts_count = stts_sum = width = height = 0
    if stbl is not None:
        for kind, b, e in _sub(buf, *stbl):
            if kind in (b"stsz", b"stz2") and e - b >= 12:
                samples = struct.unpack_from(">I", buf, b + 8)[0]
            elif kind == b"stts" and e - b >= 8:
                n = struct.unpack_from(">I", buf, b + 4)[0]
                n = min(n, (e - b - 8) // 8)
                for k in range(n):
                    count, delta = struct.unpack_from(">II", buf, b + 8 + 8 * k)
                    stts_count += count
                    stts_sum += count * delta
            elif kind == b"stsd" and e - b >= 8 + 8 + 28:
                entry = b + 8  # version/flags, entry_count, then the first sample entry
                width, height = struct.unpack_from(">HH", buf, entry + 8 + 24)
    edits: list[int] = []  # segment durations of the edit list, in the movie's timescale
    edts = _child(buf, start, end, b"edts")
    elst = _child(buf, *edts, b"elst") if edts is not None else None
    if elst is not None and elst[1] - elst[0] >= 8:
        b, e = elst
        wide = buf[b] == 1
        n = struct.unpack_from(">I", buf, b + 4)[0]
        size = 20 if wide else 12
        for k in range(min(n, (e - b - 8) // size)):
            edits.append(struct.unpack_from(">Q" if wide else ">I", buf, b + 8 + k * size)[0])
    return timescale, duration, samples, stts_count, stts_sum, width, height, edits


def _child(buf: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, b, e in _sub(buf, start, end):
        if k == kind:
            return b, e
    return None


# ---- AVI -----------------------------------------------------------------------------------

def _avi(f: BinaryIO, size: int) -> VideoInfo:
    f.seek(12)
    hdrl: bytes | None = None
    pos = 12
    while pos + 12 <= size:
        f.seek(pos)
        kind, length = struct.unpack("<4sI", f.read(8))
        if kind == b"LIST":
            sub = f.read(4)
            if sub == b"hdrl":
                if length > MAX_HEADER:
                    raise VideoError("unmeasured", f"an AVI header of {length:,} bytes", "avi")
                if pos + 8 + length > size:
                    raise VideoError("truncated", "the file ends inside the AVI header", "avi")
                hdrl = f.read(length - 4)
                break
        pos += 8 + length + (length & 1)
    if hdrl is None:
        raise VideoError("truncated", "no AVI header list (hdrl)", "avi")
    for kind, b, e in _riff(hdrl, 0, len(hdrl)):
        if kind != b"LIST" or hdrl[b:b + 4] != b"strl":
            continue
        strh = strf = None
        for k, cb, ce in _riff(hdrl, b + 4, e):
            if k == b"strh":
                strh = (cb, ce)
            elif k == b"strf":
                strf = (cb, ce)
        if strh is None or hdrl[strh[0]:strh[0] + 4] != b"vids":
            continue
        scale, rate, _start, length = struct.unpack_from("<IIII", hdrl, strh[0] + 20)
        width = height = 0
        if strf is not None and strf[1] - strf[0] >= 12:
            width, height = struct.unpack_from("<ii", hdrl, strf[0] + 4)
        seconds = Fraction(length * scale, rate) if rate and scale else None
        fps = Fraction(rate, scale) if rate and scale else None
        return VideoInfo(length, seconds, abs(width), abs(height), "avi", "header", fps)
    raise VideoError("no-video-stream", "no video stream (no strh of type 'vids')", "avi")


def _riff(buf: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        kind, length = struct.unpack_from("<4sI", buf, pos)
        if pos + 8 + length > end:
            return
        yield kind, pos + 8, pos + 8 + length
        pos += 8 + length + (length & 1)


def _ts(f: BinaryIO) -> bool:
    f.seek(0)
    head = f.read(189)
    return len(head) == 189 and head[0] == 0x47 and head[188] == 0x47


def _texty(head: bytes) -> bool:
    return all(32 <= c < 127 or c in (9, 10, 13) for c in head) or head.lstrip().startswith((b"<", b"{", b"["))

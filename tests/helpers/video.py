"""Real videos for the video tests, encoded with PyAV (tiny: a few frames of a few dozen pixels),
and the broken files a dataset meets (a truncated download, an audio-only file, a renamed JPEG,
an HTML error page, an empty file)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Clip:
    """How to encode one clip: codec, container (by extension), size, frame count, rate."""

    name: str
    codec: str = "libx264"
    width: int = 64
    height: int = 48
    frames: int = 7
    fps: Any = 5
    faststart: bool = False
    fragmented: bool = False


# The variety the reader must agree with PyAV on: both codecs, .mp4 and .mov, faststart and
# moov-at-end, odd frame counts, integer and NTSC rates, portrait / landscape / tiny / thin sizes.
CLIPS = (
    Clip("h264.mp4"),
    Clip("h264-faststart.mp4", faststart=True),
    Clip("h264-ntsc-portrait.mp4", width=48, height=96, frames=31, fps=Fraction(30000, 1001)),
    Clip("h264-long.mp4", width=96, height=64, frames=121, fps=25),  # B-frames, an edit list
    Clip("h264.mov", frames=9, fps=3),
    Clip("h264-faststart.mov", faststart=True, frames=1, fps=1),
    Clip("mpeg4.mp4", codec="mpeg4", frames=13, fps=Fraction(24000, 1001)),
    Clip("mpeg4-tiny.mp4", codec="mpeg4", width=16, height=16, frames=5, fps=2),
    Clip("mpeg4-thin.mov", codec="mpeg4", width=800, height=16, frames=3, fps=1),
    Clip("mpeg4-tall.mp4", codec="mpeg4", width=16, height=640, frames=4, fps=10, faststart=True),
    Clip("mpeg4-huge.mov", codec="mpeg4", width=1280, height=720, frames=2, fps=30),
    Clip("mpeg4.avi", codec="mpeg4", frames=11, fps=7),
    Clip("mpeg4-ntsc.avi", codec="mpeg4", width=32, height=64, frames=20, fps=Fraction(30000, 1001)),
)
WEBM = Clip("vp8.webm", codec="libvpx", frames=5)
FRAGMENTED = Clip("fragmented.mp4", fragmented=True)


def encode(folder: Path, clip: Clip) -> Path:
    """Write ``clip`` under ``folder`` with PyAV; its path."""
    import av
    import numpy as np

    path = folder / clip.name
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if clip.faststart else \
        {"movflags": "frag_keyframe+empty_moov"} if clip.fragmented else {}
    container = av.open(str(path), "w", options=options)
    stream = container.add_stream(clip.codec, rate=clip.fps)
    stream.width, stream.height = clip.width, clip.height
    stream.pix_fmt = "yuv420p"
    for k in range(clip.frames):
        pixels = np.full((clip.height, clip.width, 3), (k * 37) % 256, np.uint8)
        pixels[:, : max(1, clip.width // 4)] = 255 - (k * 37) % 256
        for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def codec_available(codec: str) -> bool:
    import av

    return codec in av.codecs_available


def audio_only(path: Path) -> Path:
    """An MP4 with one AAC track and no video."""
    import av
    import numpy as np

    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=8000)
    for _ in range(4):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def truncated(source: Path, path: Path, keep: int = 600) -> Path:
    """The first ``keep`` bytes of a moov-at-end file: a download cut before its header."""
    path.write_bytes(source.read_bytes()[:keep])
    return path


def renamed_jpeg(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    from PIL import Image

    with path.open("wb") as f:
        Image.new("RGB", size, "red").save(f, format="JPEG")
    return path


def html_page(path: Path) -> Path:
    path.write_bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    return path


def broken_videos(folder: Path, good: Path) -> dict[str, Path]:
    """Every broken kind, by the code it must get."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "folder.mp4").mkdir(exist_ok=True)
    return {
        "DAT212": folder / "missing.mp4",
        "DAT213": folder / "folder.mp4",
        "DAT214": folder / "empty.mp4",
        "DAT215": truncated(good, folder / "truncated.mp4"),
        "DAT215-html": html_page(folder / "html.mp4"),
        "DAT216": audio_only(folder / "audio.mp4"),
        "DAT215-image": renamed_jpeg(folder / "photo.mp4"),
    }


def sharegpt(videos: list[Any], question: str = "What happens in the clip?", answer: str = "A cat jumps.",
             placeholders: int | None = None, **extra: Any) -> dict[str, Any]:
    """A LLaMA-Factory sharegpt record: ``placeholders`` <video> (default one per video) first."""
    n = len(videos) if placeholders is None else placeholders
    return {"conversations": [{"from": "human", "value": "<video>" * n + question},
                              {"from": "gpt", "value": answer}], "videos": videos, **extra}


def typed(video: str | None, question: str = "What happens?", answer: str = "It rains.") -> dict[str, Any]:
    """A messages record with a typed video part (its own ``path``, or none: filled from ``videos``)."""
    part = {"type": "video", "path": video} if video else {"type": "video"}
    return {"messages": [{"role": "user", "content": [part, {"type": "text", "text": question}]},
                         {"role": "assistant", "content": answer}]}


def write_json(path: Path, records: list[dict[str, Any]]) -> Path:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))
    return path

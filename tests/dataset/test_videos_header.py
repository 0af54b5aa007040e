"""doctor.io.video: the header reader reports what PyAV reports (frames, duration, width, height)
on real videos encoded with PyAV, fails where ``av.open`` fails, never decodes or reads ``mdat``,
and turns any damaged input into a ``VideoError``, never a traceback."""

from __future__ import annotations

import pytest

pytest.importorskip("av")

from doctor.io import video as video_io
from doctor.io.video import VideoError, probe_video, pyav_info, read_video_header

from tests.helpers.video import (
    CLIPS,
    FRAGMENTED,
    WEBM,
    audio_only,
    codec_available,
    encode,
    html_page,
    renamed_jpeg,
    truncated,
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {clip.name: encode(root, clip) for clip in CLIPS}


def as_pyav(info):
    return info.frames, info.duration, info.width, info.height


@pytest.mark.parametrize("name", [c.name for c in CLIPS])
def test_the_header_equals_pyav(clips, name):
    mine = read_video_header(clips[name])
    assert mine.measured_by == "header"
    assert as_pyav(mine) == as_pyav(pyav_info(clips[name]))
    clip = next(c for c in CLIPS if c.name == name)
    assert (mine.width, mine.height) == (clip.width, clip.height)  # and both are what was encoded
    assert mine.frames == clip.frames


def test_containers_the_reader_does_not_read_go_to_pyav(tmp_path, monkeypatch):
    made = [encode(tmp_path, FRAGMENTED)]
    if codec_available(WEBM.codec):
        made.append(encode(tmp_path, WEBM))
    for path in made:
        with pytest.raises(VideoError) as e:
            read_video_header(path)
        assert e.value.kind == "unmeasured"
        info = probe_video(path)
        assert info.measured_by == "pyav" and as_pyav(info) == as_pyav(pyav_info(path))
        assert info.frames == 0  # neither says how many frames: LLaMA-Factory's "infinite" case
        monkeypatch.setattr(video_io, "pyav_available", lambda: False)
        with pytest.raises(VideoError) as e:  # without PyAV: not measured, said so
            probe_video(path, use_pyav=video_io.pyav_available())
        assert e.value.kind == "unmeasured" and e.value.container
        monkeypatch.undo()


def test_files_av_open_refuses_are_refused(clips, tmp_path):
    cut = truncated(clips["h264.mp4"], tmp_path / "cut.mp4")  # moov at the end: cut before it
    html = html_page(tmp_path / "page.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (cut, html, empty):
        with pytest.raises(VideoError) as mine:
            read_video_header(path)
        assert mine.value.kind in ("truncated", "not-a-video")
        with pytest.raises(VideoError) as theirs:
            pyav_info(path)
        assert theirs.value.kind == "not-a-video"
    # The clean twin: the same file, whole, and a faststart file cut in its mdat (moov first) opens.
    assert read_video_header(clips["h264.mp4"]).frames == 7
    faststart = clips["h264-faststart.mp4"]
    half = truncated(faststart, tmp_path / "half.mp4", keep=faststart.stat().st_size - 50)
    assert as_pyav(read_video_header(half)) == as_pyav(pyav_info(half))


def test_audio_only_and_images(tmp_path):
    audio = audio_only(tmp_path / "audio.mp4")
    with pytest.raises(VideoError) as mine:
        read_video_header(audio)
    with pytest.raises(VideoError) as theirs:
        pyav_info(audio)
    assert mine.value.kind == theirs.value.kind == "no-video-stream"
    photo = renamed_jpeg(tmp_path / "photo.mp4", (40, 30))
    with pytest.raises(VideoError) as mine:
        read_video_header(photo)
    assert mine.value.kind == "image"
    opened = pyav_info(photo)  # PyAV opens an image as a one-frame "video": why it is only a warning
    assert (opened.width, opened.height, opened.frames) == (40, 30, 0)


def test_the_reader_never_reads_the_media_data(tmp_path, monkeypatch):
    from tests.helpers.video import Clip

    path = encode(tmp_path, Clip("big.mp4", codec="mpeg4", width=320, height=240, frames=60, fps=25))
    read = [0]
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            read[0] += len(data)
            return data

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(video_io, "open", lambda p, mode="rb": Counting(real_open(p, mode)), raising=False)
    info = read_video_header(path)
    assert info.frames == 60
    assert read[0] * 10 < path.stat().st_size, (read[0], path.stat().st_size)


def test_damaged_files_give_a_video_error_never_a_traceback(clips, tmp_path):
    import random

    rng = random.Random(0)
    for name in ("h264.mp4", "h264-faststart.mov", "mpeg4.avi"):
        data = clips[name].read_bytes()
        cases = [data[:k] for k in sorted({rng.randrange(len(data)) for _ in range(40)} | {8, 12, 16, 32})]
        for _ in range(60):
            b = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(min(len(b), 4096)) if rng.random() < 0.8 else rng.randrange(len(b))] = rng.randrange(256)
            cases.append(bytes(b))
        for k, blob in enumerate(cases):
            path = tmp_path / f"{k}-{name}"
            path.write_bytes(blob)
            try:
                info = read_video_header(path)
            except VideoError:
                continue
            assert info.frames >= 0 and info.width >= 0 and info.height >= 0

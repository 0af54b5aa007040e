"""Video tokens: vlm-doctor's count from container headers equals LLaMA-Factory's own count
(``Qwen2VLPlugin._get_qwen_video_grid_metadata``, run unchanged in a child process when
llamafactory is installed), and, always, the count derived here from PyAV's numbers,
LLaMA-Factory's sampling written out and transformers' own ``smart_resize``."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("av")

from doctor.checks.dataset.tokens import video_tokens_of
from doctor.checks.dataset.vision import vision_spec

from doctor.families.resize import VideoSampling
from doctor.io.video import probe_video, pyav_info
from doctor.testing.qwen import make_qwen_model

from tests.helpers import video_oracle
from tests.helpers.video import CLIPS, Clip, encode

pytestmark = pytest.mark.filterwarnings("ignore")

SAMPLINGS = [
    VideoSampling(),  # LLaMA-Factory's defaults
    VideoSampling(fps=0.5, maxlen=3, max_pixels=32 * 32, min_pixels=8 * 8),
    VideoSampling(fps=7.5, maxlen=200, max_pixels=1280 * 720, min_pixels=64 * 64),
]
EXTRA = [Clip("long-ntsc.mp4", codec="mpeg4", width=40, height=30, frames=97, fps=30),
         Clip("one.mov", codec="mpeg4", width=30, height=40, frames=1, fps=1)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_tokens")
    clips = [encode(root / "clips", clip) for clip in CLIPS + tuple(EXTRA)]
    models = {
        "default": make_qwen_model(root / "q25", family="qwen2_5_vl"),
        "small": make_qwen_model(root / "q2", family="qwen2_vl", min_pixels=28 * 28 * 2, max_pixels=28 * 28 * 12),
        "merge1": make_qwen_model(root / "m1", family="qwen2_vl", spatial_merge_size=1, patch_size=16,
                                  min_pixels=16 * 16 * 2, max_pixels=16 * 16 * 60),
    }
    return {"clips": clips, "models": models}


def video_settings(model) -> dict:
    """The video processor transformers builds from the folder: no video_preprocessor_config.json,
    so it reads preprocessor_config.json (``min_pixels`` / ``max_pixels`` win over ``size``)."""
    saved = json.loads((model.path / "preprocessor_config.json").read_text())
    return {"patch_size": saved["patch_size"], "merge_size": saved["merge_size"],
            "temporal_patch_size": saved["temporal_patch_size"], "min_pixels": saved["min_pixels"],
            "max_pixels": saved["max_pixels"]}


def derived_tokens(path, settings: dict, s: VideoSampling) -> int:
    """The count from PyAV's numbers, LLaMA-Factory's steps written out here, and transformers'
    smart_resize: an oracle that shares no code with vlm-doctor's."""
    import av
    import numpy as np
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    with av.open(str(path)) as container:
        stream = next(st for st in container.streams if st.type == "video")
        total = stream.frames
        if total == 0:
            n = len(np.linspace(0, s.maxlen - 1, s.maxlen))
        else:
            n = min(total, s.maxlen, max(1, math.floor(float(stream.duration * stream.time_base) * s.fps)))
            n = len(np.linspace(0, total - 1, n).astype(np.int32))
        width, height = stream.width, stream.height
    n += n % 2
    if width * height > s.max_pixels:
        r = math.sqrt(s.max_pixels / (width * height))
        width, height = int(width * r), int(height * r)
    if width * height < s.min_pixels:
        r = math.sqrt(s.min_pixels / (width * height))
        width, height = int(width * r), int(height * r)
    width, height = max(width, 28), max(height, 28)
    if width / height > 200:
        width = height * 180
    if height / width > 200:
        height = width * 180
    p, m = settings["patch_size"], settings["merge_size"]
    h, w = smart_resize(height, width, factor=p * m, min_pixels=settings["min_pixels"],
                        max_pixels=settings["max_pixels"])
    return math.ceil(n / settings["temporal_patch_size"]) * (h // p) * (w // p) // (m * m) + 2


@pytest.mark.parametrize("model", ["default", "small", "merge1"])
def test_video_tokens_equal_the_derivation_from_pyav(world, model):
    info = world["models"][model]
    spec = vision_spec(str(info.path))
    settings = video_settings(info)
    for s in SAMPLINGS:
        for path in world["clips"]:
            mine = video_tokens_of(probe_video(path), spec, s)
            assert mine == derived_tokens(path, settings, s), (model, path.name, s)


@pytest.mark.skipif(not video_oracle.available(), reason="llamafactory is not installed (pip install --no-deps llamafactory)")
@pytest.mark.parametrize("model", ["default", "small", "merge1"])
def test_video_tokens_equal_llamafactorys_own_count(world, model):
    info = world["models"][model]
    spec = vision_spec(str(info.path))
    settings = video_settings(info)
    for s in SAMPLINGS:
        grids = video_oracle.llamafactory_grids(
            [str(p) for p in world["clips"]],
            {**settings, "video_fps": s.fps, "video_maxlen": s.maxlen, "video_max_pixels": s.max_pixels,
             "video_min_pixels": s.min_pixels})
        assert grids is not None
        m = settings["merge_size"]
        theirs = [t * h * w // (m * m) + 2 for t, h, w in grids]  # + <|vision_start|>, <|vision_end|>
        mine = [video_tokens_of(probe_video(p), spec, s) for p in world["clips"]]
        assert mine == theirs, (model, s)


def test_the_video_processor_settings_win_when_saved(tmp_path):
    """video_preprocessor_config.json (transformers 4.5x) or processor_config.json's video_processor
    section set the video geometry; without either, preprocessor_config.json's."""
    info = make_qwen_model(tmp_path / "q", family="qwen2_vl", min_pixels=28 * 28 * 2, max_pixels=28 * 28 * 12)
    before = spec = vision_spec(str(info.path))
    assert (spec.video.min_pixels, spec.video.max_pixels) == (28 * 28 * 2, 28 * 28 * 12)
    (info.path / "video_preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 100}, "temporal_patch_size": 2,
         "patch_size": 14, "merge_size": 2}))
    spec = vision_spec(str(info.path))
    assert (spec.video.min_pixels, spec.video.max_pixels) == (28 * 28 * 4, 28 * 28 * 100)
    assert (spec.dynamic.min_pixels, spec.dynamic.max_pixels) == (28 * 28 * 2, 28 * 28 * 12)  # images unchanged
    big = pyav_info(encode(tmp_path, Clip("big.mp4", codec="mpeg4", width=640, height=480, frames=4, fps=2)))
    wide = VideoSampling(max_pixels=640 * 480)
    assert video_tokens_of(big, spec, wide) > video_tokens_of(big, before, wide)


def test_no_video_tokens_for_families_without_video_input(tmp_path):
    pytest.importorskip("torch")
    from doctor.testing import make_llava_model

    clip = pyav_info(encode(tmp_path, Clip("c.mp4", codec="mpeg4")))
    for family in ("llava", "llava_next", "mllama"):
        spec = vision_spec(str(make_llava_model(tmp_path / family, family=family).path))
        assert video_tokens_of(clip, spec, VideoSampling()) is None
    assert video_tokens_of(clip, vision_spec(None), VideoSampling()) is None  # no --model: unknown

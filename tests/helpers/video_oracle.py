"""LLaMA-Factory's own video token counting, run in a child process (``python -m
tests.helpers.video_oracle SETTINGS_JSON VIDEO...`` prints the ``video_grid_thw`` rows as JSON).

``Qwen2VLPlugin()._get_qwen_video_grid_metadata(videos, processor)`` is called unchanged on a
stand-in processor carrying the video processor's settings (``patch_size``, ``merge_size``,
``temporal_patch_size``, ``size``) and LLaMA-Factory's sampling attributes (``video_fps``,
``video_maxlen``, ``video_max_pixels``, ``video_min_pixels``), as LLaMA-Factory sets them on
the processor (``model/loader.py``). Three things this machine lacks are worked around, in the
child only, so the test process's own imports stay untouched:

- ``llamafactory.data/__init__`` imports ``datasets``: the ``llamafactory.data`` package is
  entered without running it (``mm_plugin`` itself needs nothing from it);
- ``mm_plugin`` imports ``torchaudio`` at the top (for audio only): an empty module stands in;
- ``_get_qwen_video_resize`` imports ``smart_resize`` from ``image_processing_qwen2_vl``, which
  imports torchvision in transformers 5: the identical function of the PIL image processor
  module (``image_processing_pil_qwen2_vl.smart_resize``) is used instead.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any


def available() -> bool:
    return importlib.util.find_spec("llamafactory") is not None and importlib.util.find_spec("av") is not None


def llamafactory_grids(videos: list[str], settings: dict[str, Any]) -> list[list[int]] | None:
    """``video_grid_thw`` of LLaMA-Factory for ``videos`` (None when it declines to count
    without decoding); raises on a crash of the child."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "tests.helpers.video_oracle", json.dumps(settings), *videos],
                         capture_output=True, text=True, env=env, cwd=str(root), timeout=300)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _main(argv: list[str]) -> None:
    settings = json.loads(argv[0])
    if importlib.util.find_spec("torchaudio") is None:
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub
    import llamafactory

    package = types.ModuleType("llamafactory.data")
    package.__path__ = [os.path.join(os.path.dirname(llamafactory.__file__), "data")]
    sys.modules["llamafactory.data"] = package
    mm_plugin = importlib.import_module("llamafactory.data.mm_plugin")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    class Plugin(mm_plugin.Qwen2VLPlugin):
        def _get_qwen_video_resize(self, num_frames, height, width, patch_size, temporal_patch_size, merge_size,
                                   min_pixels, max_pixels):
            return smart_resize(height=height, width=width, factor=patch_size * merge_size,
                                min_pixels=min_pixels, max_pixels=max_pixels)

    ns = types.SimpleNamespace
    video = ns(patch_size=settings["patch_size"], merge_size=settings["merge_size"],
               temporal_patch_size=settings["temporal_patch_size"],
               size={"shortest_edge": settings["min_pixels"], "longest_edge": settings["max_pixels"]})
    processor = ns(image_processor=ns(merge_size=settings["merge_size"]), video_processor=video,
                   **{k: settings[k] for k in ("video_fps", "video_maxlen", "video_max_pixels", "video_min_pixels")
                      if k in settings})
    plugin = Plugin(image_token="<|image_pad|>", video_token="<|video_pad|>", audio_token=None)
    result = plugin._get_qwen_video_grid_metadata(argv[1:], processor)
    print(json.dumps(None if result is None else result["video_grid_thw"].tolist()))


if __name__ == "__main__":
    _main(sys.argv[1:])

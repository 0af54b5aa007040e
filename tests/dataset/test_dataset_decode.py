"""DAT207 at ``--images header``: a suspicious header is settled by decoding that one image the
way LLaVA does (``Image.open(...).convert("RGB")``): an error when Pillow fails, nothing when it
succeeds. Each broken image has a clean twin of the same kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import doctor
from doctor.testing.images import (
    make_corrupt_png,
    make_cut_image,
    make_image,
    make_image_with_trailer,
    make_png_without_iend,
    make_truncated_jpeg,
)


def dataset(root: Path, images: list[str]) -> Path:
    records = [{"id": f"r{i}", "image": img, "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}
        for i, img in enumerate(images)]
    path = root / "d.json"
    path.write_text(json.dumps(records))
    return path


def dat207(root: Path, name: str) -> list:
    report = doctor.check(str(dataset(root, [name])), select=["DAT2"], images="header", image_folder=str(root))
    return [f for f in report.findings if f.code == "DAT207"]


def llava_decodes(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.convert("RGB")
    except OSError:
        return False
    return True


BROKEN = {
    "cut.jpg": lambda p: make_truncated_jpeg(p, size=(64, 64)),
    "cut_progressive.jpg": lambda p: make_cut_image(p, "JPEG", progressive=True),
    "cut.png": lambda p: make_cut_image(p, "PNG"),
    "corrupt.png": make_corrupt_png,
    "cut.webp": lambda p: make_cut_image(p, "WEBP"),
}
CLEAN = {
    "whole.jpg": lambda p: make_image(p, size=(64, 64), fmt="JPEG"),
    "trailer.jpg": make_image_with_trailer,  # junk after the end-of-image marker: Pillow does not mind
    "trailer_progressive.jpg": lambda p: make_image_with_trailer(p, progressive=True),
    "no_iend.png": make_png_without_iend,  # no IEND chunk, pixel data complete
    "whole.png": lambda p: make_image(p, size=(64, 64), fmt="PNG"),
    "whole.webp": lambda p: make_image(p, size=(64, 64), fmt="WEBP"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_suspicious_and_broken_is_a_certain_error(tmp_path, name):
    path = BROKEN[name](tmp_path / name)
    assert not llava_decodes(path)  # the ground truth: LLaVA's loader fails on it
    (finding,) = dat207(tmp_path, name)
    assert finding.severity.value == "error"
    assert "convert('RGB')" in finding.message and "guess" not in finding.message


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_suspicious_but_decodable_is_clean(tmp_path, name):
    path = CLEAN[name](tmp_path / name)
    assert llava_decodes(path)
    assert dat207(tmp_path, name) == []


def test_only_suspicious_images_are_decoded(tmp_path, monkeypatch):
    from doctor.checks.dataset.images.probe import Prober

    decoded: list[str] = []
    real = Prober._decode

    def spy(self, full):
        decoded.append(Path(full).name)
        return real(self, full)

    monkeypatch.setattr(Prober, "_decode", spy)
    make_image(tmp_path / "ok.jpg", size=(32, 32), fmt="JPEG")
    make_image_with_trailer(tmp_path / "trailer.jpg")
    prober = Prober(str(tmp_path), "header", 0.0, None)
    assert prober.probe("ok.jpg")[4] == ()
    assert prober.probe("trailer.jpg")[4] == ()
    assert decoded == ["trailer.jpg"]

"""DAT2xx: the image files, checked against what Pillow (LLaVA's loader) really does."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import pytest
from PIL import Image

from doctor.checks.dataset.images import run as _dataset_imagerun
from doctor.checks.dataset.images.probe import Prober, pillow_max_pixels

import doctor
from doctor.testing import (
    make_decompression_bomb_png,
    make_image,
    make_lying_extension,
    make_not_an_image,
    make_truncated_jpeg,
    pil_image,
)


def dataset(root: Path, images: list, name: str = "d.json") -> Path:
    records = [{"id": f"r{i}", "image": img, "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}
        for i, img in enumerate(images)]
    path = root / name
    path.write_text(json.dumps(records, indent=1))
    return path


def check(path: Path, **options):
    return doctor.check(str(path), select=["DAT2", "DAT902"], **options)


def by_code(report) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in report.findings:
        out.setdefault(f.code, []).append(f)
    return out


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    made = {}
    for name, fmt, size, kw in [
        ("a.png", "PNG", (37, 21), {}), ("p.png", "PNG", (20, 30), {"mode": "P"}),
        ("a.jpg", "JPEG", (41, 17), {}), ("g.jpg", "JPEG", (16, 40), {"mode": "L"}),
        ("a.gif", "GIF", (25, 26), {}), ("a.bmp", "BMP", (19, 23), {}), ("a.webp", "WEBP", (33, 44), {}),
        ("a.tif", "TIFF", (12, 13), {}),
    ]:
        made[name] = (make_image(root / name, size=size, fmt=fmt, **kw), size)
    progressive = root / "prog.jpg"
    pil_image((50, 30)).save(progressive, "JPEG", progressive=True)
    made["prog.jpg"] = (progressive, (50, 30))
    exif = root / "exif.jpg"  # a 60 KB APP1 segment before the frame header
    pil_image((23, 29)).save(exif, "JPEG", exif=b"Exif\x00\x00" + b"\x00" * 60000)
    made["exif.jpg"] = (exif, (23, 29))
    lossless = root / "ll.webp"
    pil_image((31, 9)).save(lossless, "WEBP", lossless=True)
    made["ll.webp"] = (lossless, (31, 9))
    return root, made


def test_header_sizes_equal_pillows(formats):
    root, made = formats
    prober = Prober(str(root), "header", 100, pillow_max_pixels())
    for name, (path, size) in made.items():
        w, h, fmt, nbytes, problems = prober.probe(name)
        with Image.open(path) as im:
            assert (w, h) == im.size == size and fmt == im.format, name
        assert problems == () and nbytes == path.stat().st_size, (name, problems)


def test_clean_images_pass_and_are_summarised(formats):
    root, made = formats
    path = dataset(root, list(made))
    report = check(path, images="decode")
    codes = by_code(report)
    assert set(codes) == {"DAT902"}
    summary = codes["DAT902"][0].message
    assert f"{len(made)} distinct images checked (decode)" in summary and "portrait" in summary


def test_missing_folder_empty_unreadable(tmp_path):
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
    path = dataset(tmp_path, ["nope.png", "dir.png", "empty.png", "loop.png"])
    codes = by_code(check(path, images="exists", image_folder=str(tmp_path)))
    assert [f.location.pointer for f in codes["DAT201"]] == ["/0/image"]
    assert [f.location.pointer for f in codes["DAT202"]] == ["/1/image"]
    assert [f.location.pointer for f in codes["DAT203"]] == ["/2/image"]
    assert [f.location.pointer for f in codes["DAT204"]] == ["/3/image"]
    for p in ("nope.png", "dir.png", "empty.png", "loop.png"):  # what LLaVA's Image.open does
        with pytest.raises(OSError):
            Image.open(tmp_path / p)


def test_not_an_image_and_lying_extension(tmp_path):
    make_not_an_image(tmp_path / "text.png")
    (tmp_path / "lfs.jpg").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    make_lying_extension(tmp_path / "png.jpg", real_fmt="PNG")
    path = dataset(tmp_path, ["text.png", "lfs.jpg", "png.jpg"])
    codes = by_code(check(path, image_folder=str(tmp_path)))
    assert {f.location.record for f in codes["DAT205"]} == {0, 1}
    (lie,) = codes["DAT206"]
    assert lie.severity.value == "warning" and "PNG" in lie.message
    with Image.open(tmp_path / "png.jpg") as im:  # Pillow itself does not mind
        im.convert("RGB")
    assert not by_code(check(path, images="exists", image_folder=str(tmp_path)))  # exists: no header read


def test_truncated_jpeg_guessed_from_header_and_proved_by_decoding(tmp_path):
    make_truncated_jpeg(tmp_path / "cut.jpg", size=(64, 64))
    with Image.open(tmp_path / "cut.jpg") as im:
        assert im.size == (64, 64)
        with pytest.raises(OSError, match="truncated"):
            im.load()
    path = dataset(tmp_path, ["cut.jpg"])
    # The header level sees no end marker and decodes this one image: a certain verdict.
    (header,) = by_code(check(path, image_folder=str(tmp_path)))["DAT207"]
    assert header.severity.value == "error" and "truncated" in header.message
    (proof,) = by_code(check(path, images="decode", image_folder=str(tmp_path)))["DAT207"]
    assert proof.severity.value == "error" and "truncated" in proof.message
    (sampled_out,) = by_code(check(path, images="decode", decode_sample=0.01, image_folder=str(tmp_path)))["DAT207"]
    assert sampled_out.severity.value == "error"


def test_decompression_bombs_decided_from_the_header(tmp_path):
    make_decompression_bomb_png(tmp_path / "bomb.png")  # 20000 x 20000: over twice the limit
    make_decompression_bomb_png(tmp_path / "big.png", w=10000, h=10000)  # between 1x and 2x
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "bomb.png")
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(tmp_path / "big.png").close()
    path = dataset(tmp_path, ["bomb.png", "big.png"])
    findings = by_code(check(path, images="decode", image_folder=str(tmp_path)))["DAT208"]
    assert [(f.location.record, f.severity.value) for f in findings] == [(0, "error"), (1, "warning")]
    assert "DAT207" not in by_code(check(path, images="decode", image_folder=str(tmp_path)))  # never decoded


def test_paths_that_leave_the_image_folder(tmp_path):
    root, outside = tmp_path / "images", tmp_path / "elsewhere"
    make_image(root / "in.png")
    make_image(outside / "out.png")
    make_image(outside / "sub" / "x.png")
    os.symlink(outside / "out.png", root / "link.png")
    os.symlink(outside / "sub", root / "mounted")
    path = dataset(tmp_path, ["../elsewhere/out.png", str(outside / "out.png"), str(root / "in.png"),
                              "link.png", "mounted/x.png", "in.png"])
    findings = by_code(check(path, image_folder=str(root)))["DAT209"]
    got = {f.location.record: f.severity.value for f in findings}
    # `..` and a file symlink out of the folder: errors; absolute paths (inside or outside) are a
    # portability warning, since LLaVA's join reads them as they are; a mounted folder: warning.
    assert got == {0: "error", 1: "warning", 2: "warning", 3: "error", 4: "warning"}
    assert os.path.join(str(root), str(outside / "out.png")) == str(outside / "out.png")  # LLaVA's join
    assert "DAT201" not in by_code(check(path, image_folder=str(root)))  # every file exists


def test_absolute_path_to_a_missing_file_is_missing_not_escaping(tmp_path):
    root = tmp_path / "images"
    make_image(root / "in.png")
    path = dataset(tmp_path, [str(tmp_path / "gone" / "x.png"), "in.png"])
    codes = by_code(check(path, image_folder=str(root)))
    assert [(f.location.record, f.severity.value) for f in codes["DAT209"]] == [(0, "warning")]
    assert [f.location.record for f in codes["DAT201"]] == [0]  # the missing file is the error


def test_wrong_default_folder_reported_once_with_the_right_one(tmp_path):
    path = tmp_path / "data.json"
    from doctor.testing import make_llava_dataset

    path = make_llava_dataset(tmp_path, n=5)
    codes = by_code(check(path))
    assert "DAT201" not in codes
    (f,) = codes["DAT210"]
    assert "5 of 5 images are missing" in f.message and f.hint == f"Pass --image-folder {tmp_path / 'images'}: the images are there."
    codes = by_code(check(path, image_folder=str(tmp_path / "nowhere")))
    assert "does not exist" in codes["DAT210"][0].message


def test_tiny_height_is_flagged(tmp_path):
    make_image(tmp_path / "strip.png", size=(40, 3))
    make_image(tmp_path / "ok.png", size=(40, 4))
    (f,) = by_code(check(dataset(tmp_path, ["strip.png", "ok.png"]), image_folder=str(tmp_path)))["DAT211"]
    assert f.location.record == 0
    from transformers.image_utils import ChannelDimension, infer_channel_dimension_format

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import numpy as np

        assert infer_channel_dimension_format(np.zeros((3, 40, 3))) is ChannelDimension.FIRST  # read wrongly


def test_parallel_probe_equals_serial(tmp_path, monkeypatch):
    names = []
    for i in range(40):
        names.append(f"img/{i}.png")
        make_image(tmp_path / "img" / f"{i}.png", size=(8 + i, 8))
    names += ["img/missing.png", "img/"]
    path = dataset(tmp_path, names)
    serial = [(f.code, f.message) for f in check(path, image_folder=str(tmp_path), jobs=1).findings]
    monkeypatch.setattr(_dataset_imagerun, "SERIAL_BELOW", 0)
    monkeypatch.setattr(_dataset_imagerun, "BATCH", 3)
    parallel = [(f.code, f.message) for f in check(path, image_folder=str(tmp_path), jobs=4).findings]
    assert parallel == serial and {c for c, _ in serial} >= {"DAT201", "DAT202", "DAT902"}


def test_bad_images_go_to_the_rejected_file(tmp_path):
    make_image(tmp_path / "ok.png")
    make_not_an_image(tmp_path / "bad.png")
    path = dataset(tmp_path, ["ok.png", "bad.png", "gone.png", "ok.png"])
    report = doctor.check(str(path), select=["DAT"], image_folder=str(tmp_path), fix=True, unsafe_fixes=True)
    (outcome,) = report.fixes
    kept = json.loads(Path(outcome.written[0]).read_text())
    assert [r["id"] for r in kept] == ["r0", "r3"]
    rejected = [json.loads(x) for x in (tmp_path / "d.rejected.jsonl").read_text().splitlines()]
    assert [(r["index"], r["reasons"][0][:6]) for r in rejected] == [(1, "DAT205"), (2, "DAT201")]


def test_header_reader_survives_garbage(tmp_path):
    prober = Prober(str(tmp_path), "header", 100, pillow_max_pixels())
    for name, data in [("a.jpg", b"\xff\xd8\xff\xe0\x00"), ("b.png", b"\x89PNG\r\n\x1a\n\x00"),
                       ("c.jpg", b"\xff\xd8\xff\xe0\x00\x01" + b"\x00" * 10), ("d.webp", b"RIFF\x00\x00\x00\x00WEBPVP8Z"),
                       ("e.bmp", b"BM" + b"\x00" * 10), ("f.gif", b"GIF89a\x01")]:
        (tmp_path / name).write_bytes(data)
        w, h, fmt, size, problems = prober.probe(name)
        assert problems and problems[-1][0] in ("DAT205", "DAT207"), (name, problems)
    buf = io.BytesIO()
    pil_image((5, 5)).save(buf, "PNG")
    (tmp_path / "ok.png").write_bytes(buf.getvalue())
    assert prober.probe("ok.png")[4] == ()

"""The dataset pass with videos: LLaMA-Factory sharegpt and messages records with videos, their
placeholders, their files, the model's video support, and records made long by their videos;
every bad case beside its clean twin, through the CLI with exit codes and a schema-valid JSON
report, and ``--engine ray`` giving the same report."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("av")

import doctor
from doctor.cli import main
from doctor.report import schema_path
from doctor.testing.qwen import make_qwen_model

from tests.helpers.video import Clip, broken_videos, encode, sharegpt, typed, write_json

pytestmark = pytest.mark.filterwarnings("ignore")

GOOD = (Clip("clips/a.mp4", frames=9, fps=5), Clip("clips/b.mov", codec="mpeg4", width=48, height=96, frames=30,
                                                     fps=10, faststart=True),
        Clip("clips/c.avi", codec="mpeg4", frames=11, fps=7))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_data")
    for clip in GOOD:
        encode(root, clip)
    broken = broken_videos(root / "bad", root / "clips" / "a.mp4")
    return {"root": root, "broken": broken, "qwen": make_qwen_model(root / "qwen", family="qwen2_vl")}


def codes(report) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in report.findings:
        if f.path != "<environment>" and not f.code.startswith("ENV"):
            out.setdefault(f.code, []).append(f)
    return out


def clean_records() -> list[dict]:
    return [sharegpt(["clips/a.mp4"]), sharegpt(["clips/b.mov", "clips/c.avi"]),
            sharegpt(["clips/c.avi"], images=["pic.png"], question="<image>Compare with the video."),
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]


@pytest.fixture(scope="module")
def clean(world):
    from doctor.testing import make_image

    make_image(world["root"] / "pic.png", (40, 30))
    return write_json(world["root"] / "clean.json", clean_records())


def test_a_clean_dataset_with_videos_is_clean(world, clean):
    report = doctor.check(str(clean), model=str(world["qwen"].path), tokenizer=str(world["qwen"].path))
    found = codes(report)
    assert {c for c, fs in found.items() if any(f.severity.name != "INFO" for f in fs)} == set(), found
    summary = " ".join(f.message for f in found["DAT903"])
    assert "video tokens:" in summary and "in 4 video(s)" in summary and "not counted" not in summary
    numbers = found["DAT901"][0].message
    assert "3 with images" not in numbers and "1 with images, 1 text-only" in numbers  # video records are not text
    assert "3 records with videos, 4 video references to 3 distinct files" in numbers


def test_placeholder_counts(world):
    shared = [sharegpt(["clips/a.mp4"], placeholders=0), sharegpt(["clips/a.mp4"], placeholders=2),
              sharegpt([], placeholders=1), sharegpt(["clips/a.mp4"]), sharegpt(["clips/a.mp4", "clips/c.avi"])]
    messages = [typed("clips/a.mp4"), typed(None) | {"videos": ["clips/b.mov"]}, typed(None),
                {"messages": [{"role": "user", "content": "<video>What?"}, {"role": "assistant", "content": "Rain."}]},
                {"messages": [{"role": "user", "content": "<video>What?"}, {"role": "assistant", "content": "Rain."}],
                 "videos": ["clips/a.mp4"]},
                {"messages": [{"role": "user", "content": "What?"}, {"role": "assistant", "content": "Rain."}],
                 "videos": "clips/a.mp4"}]
    for recs, want in ((shared, [0, 1, 2]), (messages, [2, 3, 5])):  # the others are the clean twins
        data = write_json(world["root"] / f"p{len(recs)}.jsonl", recs)
        found = codes(doctor.check(str(data), select=["DAT1", "DAT2"]))
        assert sorted(f.location.record for f in found.get("DAT115", [])) == want, \
            [f.message for f in found.get("DAT115", [])]
        assert all("LLaMA-Factory raises" in f.message for f in found["DAT115"])
        assert set(found) == {"DAT115"}, found


def test_broken_video_files(world, tmp_path):
    recs = [sharegpt([str(p)]) for p in world["broken"].values()] + [sharegpt(["clips/a.mp4"])]
    data = write_json(world["root"] / "broken.jsonl", recs)
    found = codes(doctor.check(str(data), select=["DAT2"]))
    for key in world["broken"]:
        code = key.split("-")[0]
        assert code in found, (key, found)
    assert [f.severity.name for f in found["DAT215"]].count("WARNING") == 1  # the renamed JPEG only
    assert "photo.mp4" in next(f.message for f in found["DAT215"] if f.severity.name == "WARNING")
    for fs in found.values():
        for f in fs:
            assert "a.mp4'" not in f.message  # the clean twin stays clean
            assert f.location is not None and f.location.pointer.startswith("/")


def test_videos_for_a_model_without_video_input(world, clean, tmp_path):
    pytest.importorskip("torch")
    from doctor.testing import make_llava_model

    llava = make_llava_model(tmp_path / "llava", family="llava")
    found = codes(doctor.check(str(clean), model=str(llava.path), select=["DAT116", "DAT903"]))
    assert len(found["DAT116"]) == 1  # one finding for the dataset
    assert "3 record(s) have videos" in found["DAT116"][0].message
    assert "This model does not support video input" in found["DAT116"][0].message
    assert "not counted" in found["DAT903"][0].message
    twin = codes(doctor.check(str(clean), model=str(world["qwen"].path), select=["DAT116"]))
    assert "DAT116" not in twin


def test_records_made_long_by_their_videos(world, tmp_path):
    long = encode(tmp_path, Clip("clips/long.mp4", codec="mpeg4", width=320, height=240, frames=120, fps=30))
    data = write_json(tmp_path / "long.json", [sharegpt(["clips/long.mp4"]),
                                               sharegpt(["clips/long.mp4"], question="Say. " * 5 + "<image>x",
                                                        images=["p.png"])])
    from doctor.testing import make_image

    make_image(tmp_path / "p.png", (40, 30))
    qwen = str(world["qwen"].path)
    found = codes(doctor.check(str(data), model=qwen, tokenizer=qwen, max_length=40, select=["DAT3"]))
    cut = found["DAT303"]
    assert any("the video tokens at" in f.message and "Video features and video tokens" in f.message for f in cut)
    assert all("video tokens" in f.message for f in cut)
    # The clean twin: the trainer samples fewer frames (--video-maxlen 2): the same records fit.
    long_at_default = codes(doctor.check(str(data), model=qwen, tokenizer=qwen, max_length=200, select=["DAT3"]))
    assert {"DAT301", "DAT302", "DAT303"} & set(long_at_default)
    short = codes(doctor.check(str(data), model=qwen, tokenizer=qwen, max_length=200, video_maxlen=2,
                               select=["DAT3"]))
    assert not {"DAT301", "DAT302", "DAT303"} & set(short)
    assert long.exists()


def test_videos_not_measured_are_said_once(world, tmp_path, monkeypatch):
    from doctor.io import video as video_io

    paths = []
    for k in range(7):
        p = tmp_path / "clips" / f"{k}.mkv"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 60)  # an EBML header: Matroska
        paths.append(p)
    data = write_json(tmp_path / "mkv.json", [sharegpt([f"clips/{k}.mkv"]) for k in range(7)])
    monkeypatch.setattr(video_io, "pyav_available", lambda: False)
    qwen = str(world["qwen"].path)
    found = codes(doctor.check(str(data), model=qwen, tokenizer=qwen, select=["DAT217", "DAT903"]))
    assert len(found["DAT217"]) == 1
    f = found["DAT217"][0]
    assert "7 video(s) were not measured" in f.message and "matroska" in f.message and "and 2 more" in f.message
    assert "pip install av" in (f.hint or "")
    assert "7 video(s) not counted" in found["DAT903"][0].message


def test_the_cli_exit_codes_and_json_report(world, clean, tmp_path):
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(schema_path().read_text()))
    qwen = str(world["qwen"].path)
    bad = write_json(world["root"] / "bad.json", clean_records() + [sharegpt(["clips/nope.mp4"]),
                                                                    sharegpt(["clips/a.mp4"], placeholders=0)])
    for data, want in ((clean, 0), (bad, 1)):
        out = tmp_path / f"{data.stem}.report.json"
        rc = main(["check", str(data), "--model", qwen, "--tokenizer", qwen, "--video-fps", "1", "--video-maxlen",
                   "64", "--output-format", "json", "--output-file", str(out), "--no-progress"])
        doc = json.loads(out.read_text())
        assert rc == want, [f["code"] for f in doc["findings"]]
        errors = list(validator.iter_errors(doc))
        assert not errors, errors[0].message
        summary = next(f["message"] for f in doc["findings"] if f["code"] == "DAT903")
        assert "min(frames, 64, max(1, floor(seconds x 1)))" in summary and "256-65,536 px" in summary
    found = {f["code"] for f in doc["findings"]}
    assert {"DAT212", "DAT115"} <= found
    assert main(["check", str(clean), "--video-fps", "0", "--no-progress"]) == 2  # a usage error


def test_help_shows_the_video_options(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = capsys.readouterr().out
    for option in ("--video-fps", "--video-maxlen", "--video-max-pixels", "--video-min-pixels"):
        assert option in out


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_ray_gives_the_single_process_report(world, tmp_path, monkeypatch, suffix):
    """In parts (JSON Lines byte ranges, JSON array byte ranges), the video references fold back
    into the report one process gives."""
    pytest.importorskip("ray")
    from doctor.checks.dataset import distributed

    from tests.helpers.reports import comparable

    monkeypatch.setattr(distributed, "MIN_PART_BYTES", 16 << 10)
    monkeypatch.setattr(distributed, "PART_BYTES", 32 << 10)
    cuts = []
    original = distributed.cut_array
    monkeypatch.setattr(distributed, "cut_array", lambda *a: cuts.append(original(*a)) or cuts[-1])
    recs = clean_records() * 200 + [sharegpt(["clips/nope.mp4"]), sharegpt(["clips/a.mp4"], placeholders=2),
                                    sharegpt([str(world["broken"]["DAT216"])])]
    data = write_json(world["root"] / f"ray{suffix}", recs)
    assert data.stat().st_size > 4 * (16 << 10)
    qwen = str(world["qwen"].path)
    local = doctor.check(str(data), model=qwen, tokenizer=qwen)
    distributed_report = doctor.check(str(data), model=qwen, tokenizer=qwen, engine="ray", jobs=2)
    if suffix == ".json":
        assert cuts and cuts[0] is not None and len(cuts[0]) >= 2  # the array really was read in parts
    assert comparable(distributed_report) == comparable(local)
    assert {"DAT212", "DAT115", "DAT216"} <= {f.code for f in local.findings}


def test_typed_video_parts_are_counted_in_order(world, clean):  # clean: writes pic.png
    qwen = str(world["qwen"].path)
    url = typed(None)
    url["messages"][0]["content"][0] = {"type": "video", "url": "https://example.com/v.mp4"}
    recs = [typed("clips/a.mp4"), typed(None) | {"videos": ["clips/c.avi"]}, url]
    data = write_json(world["root"] / "typed.jsonl", recs)
    found = codes(doctor.check(str(data), model=qwen, tokenizer=qwen, select=["DAT1", "DAT2", "DAT9"]))
    assert not {"DAT115", "DAT212", "DAT215"} & set(found)
    summary = found["DAT903"][0].message
    assert "in 2 video(s)" in summary and "1 video(s) not counted" in summary  # the URL is not measured
    # A LLaVA record (no "videos" column) with "<video>" in its text: plain text to LLaVA, no finding.
    llava = write_json(world["root"] / "llava.json", [
        {"conversations": [{"from": "human", "value": "<image>What is a <video> tag?"},
                           {"from": "gpt", "value": "HTML."}], "image": "pic.png"}])
    found = codes(doctor.check(str(llava), select=["DAT1", "DAT2"]))
    assert not found, found


def test_alpaca_records_with_videos(world):
    recs = [{"instruction": "<video>Describe.", "output": "Rain.", "videos": ["clips/a.mp4"]},
            {"instruction": "Describe.", "output": "Rain.", "videos": ["clips/a.mp4"]},
            {"instruction": "Describe.", "output": "Rain.", "videos": ["clips/missing.mp4"],
             "history": [["<video>Before?", "Sun."]]}]
    data = write_json(world["root"] / "alpaca.jsonl", recs)
    found = codes(doctor.check(str(data), select=["DAT1", "DAT2"]))
    assert [f.location.record for f in found["DAT115"]] == [1]  # 0 and 2 match (history counts too)
    assert found["DAT115"][0].location.pointer == "/1/instruction"
    assert [f.location.record for f in found["DAT212"]] == [2]


def test_a_video_given_as_its_frames(world, clean):
    from doctor.checks.dataset.tokens import video_tokens_of
    from doctor.checks.dataset.vision import vision_spec

    from doctor.families.resize import VideoSampling
    from doctor.io.video import VideoInfo

    frames = ["pic.png", "pic.png", "pic.png"]  # already sampled: LLaMA-Factory takes them as they are
    data = write_json(world["root"] / "frames.json", [sharegpt([frames]), sharegpt([["pic.png", "gone.png"]])])
    qwen = str(world["qwen"].path)
    found = codes(doctor.check(str(data), model=qwen, tokenizer=qwen, select=["DAT1", "DAT2", "DAT903"]))
    assert "DAT115" not in found
    assert [f.location.pointer for f in found["DAT201"]] == ["/1/videos/0/1"]  # each frame is an image
    one = video_tokens_of(VideoInfo(3, None, 40, 30, "frames"), vision_spec(qwen), VideoSampling(), sampled=3)
    assert one == video_tokens_of(VideoInfo(4, None, 40, 30, "frames"), vision_spec(qwen), VideoSampling(), 4)
    two = video_tokens_of(VideoInfo(2, None, 40, 30, "frames"), vision_spec(qwen), VideoSampling(), sampled=2)
    assert two < one  # 3 frames are padded to 4: two temporal groups; 2 frames: one
    assert f"video tokens: {one + two:,} in 2 video(s)" in found["DAT903"][0].message

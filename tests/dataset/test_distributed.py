"""--engine ray: the dataset pass on a local Ray instance (2 workers) gives the report the single
process gives, and a worker killed mid-run loses and duplicates nothing."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("ray")
pytest.importorskip("pyarrow")

import doctor
from doctor.testing import make_llava_dataset
from doctor.testing.tables import TABLE_PROBLEMS, make_rows, write_parquet

# The numbers in the summaries that measure this run, not the data.
TIMING = re.compile(r"read in [\d.]+ s \([\d,]+ records/s\)")


def comparable(report) -> list[dict]:
    out = []
    for f in report.to_dict("test")["findings"]:
        f = dict(f)
        f["message"] = TIMING.sub("read in <t>", f["message"])
        out.append(f)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    problems = ["missing-image", "truncated-image", "not-an-image", "bad-role", "duplicate-id",
                "double-image-token", "path-escape"]
    jsonl = make_llava_dataset(root / "llava", n=2000, fmt="jsonl", problems=problems)
    rows, _ = make_rows(600, TABLE_PROBLEMS)
    parquet = write_parquet(root / "t" / "train.parquet", rows, row_group_size=64)
    return {"jsonl": jsonl, "parquet": parquet, "root": root}


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
@pytest.mark.parametrize("level", ["header", "decode"])
def test_ray_report_equals_the_single_process_report(data, kind, level):
    options = {"images": level, "image_folder": str(data["jsonl"].parent / "images")} if kind == "jsonl" \
        else {"images": level}
    local = doctor.check(str(data[kind]), **options)
    distributed = doctor.check(str(data[kind]), engine="ray", jobs=2, **options)
    assert comparable(distributed) == comparable(local)
    codes = {f.code for f in local.findings}
    assert {"DAT201", "DAT205", "DAT207"} & codes  # the planted image problems are among them


def test_a_killed_worker_loses_and_duplicates_nothing(data, tmp_path):
    marker = tmp_path / "killed"
    local = doctor.check(str(data["parquet"]), images="decode")
    distributed = doctor.check(str(data["parquet"]), images="decode", engine="ray", jobs=2,
                               ray_test_kill_once=str(marker))
    assert marker.exists()  # a worker really died mid-run
    assert comparable(distributed) == comparable(local)
    counts = [f["code"] for f in comparable(distributed)]
    assert len(counts) == len(comparable(local))


def test_an_unreachable_image_is_a_finding_not_a_crash(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "0", "image": "nowhere/x.png",
                                "conversations": [{"from": "human", "value": "<image>\nHi"},
                                                  {"from": "gpt", "value": "Hello"}]}) + "\n")
    report = doctor.check(str(path), engine="ray", jobs=2)
    assert comparable(report) == comparable(doctor.check(str(path)))
    # every image missing under the default root: the folder itself is named as wrong
    assert [f.code for f in report.findings if f.code.startswith("DAT2")] == ["DAT210"]
    assert "1 of 1 images are missing" in next(f.message for f in report.findings if f.code == "DAT210")


def test_cli_engine_ray(data, capsys):
    from doctor.cli import main

    code = main(["check", str(data["parquet"]), "--engine", "ray", "--jobs", "2", "--no-progress",
                 "--output-format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and any(f["code"] == "DAT207" for f in out["findings"])


def _jsonl_with_problems(path, n=3000):
    """A JSON Lines file whose problems fall in every part: unknown roles, a parse error, a value
    that is not an object, blank lines, ids repeated across parts, images shared across parts."""
    lines = []
    for i in range(n):
        rec = {"id": f"r{i % 2900}", "image": f"img/{i % 37}.png",
               "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                 {"from": "gpt", "value": f"Answer {i}."}]}
        if i % 401 == 7:
            rec["conversations"][0]["from"] = "user"
        if i % 733 == 5:
            rec["conversations"][1]["value"] = ""
        lines.append(json.dumps(rec))
        if i % 977 == 3:
            lines.append("")  # a blank line: no record
        if i % 1103 == 9:
            lines.append('{"id": "broken", "conversations": [')  # a line that does not parse
        if i % 1500 == 11:
            lines.append("[1, 2]")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_json_lines_parts_give_the_single_process_report(tmp_path, monkeypatch):
    from doctor.checks.dataset import distributed

    from doctor.testing import make_image

    for k in range(37):
        make_image(tmp_path / "img" / f"{k}.png", seed=k) if k % 9 else None  # some images missing
    data = _jsonl_with_problems(tmp_path / "train.jsonl")
    monkeypatch.setattr(distributed, "MIN_PART_BYTES", 16 << 10)
    monkeypatch.setattr(distributed, "PART_BYTES", 64 << 10)
    calls = []
    from doctor.checks.dataset import scan as scan_module

    original = scan_module.fold_parts

    def spy(path, fmt, parts, started):
        calls.append(len(parts))
        return original(path, fmt, parts, started)

    monkeypatch.setattr(scan_module, "fold_parts", spy)
    local = doctor.check(str(data))
    distributed_report = doctor.check(str(data), engine="ray", jobs=2)
    assert calls and calls[0] >= 4  # the file really was read in parts
    assert comparable(distributed_report) == comparable(local)
    codes = {f.code for f in local.findings}
    assert {"DAT001", "DAT010", "DAT015", "DAT101", "DAT104"} <= codes, codes


def test_json_lines_that_cannot_be_cut_exactly_are_read_by_one_process(tmp_path, monkeypatch):
    """A value spread over several lines in the middle: the parts would misplace it, so the
    driver reads the file itself, and the report is still the single-process one."""
    from doctor.checks.dataset import distributed

    data = _jsonl_with_problems(tmp_path / "train.jsonl", n=1500)
    text = data.read_text().splitlines()
    text[700] = json.dumps(json.loads(text[700]), indent=2)  # one pretty-printed record
    data.write_text("\n".join(text) + "\n")
    monkeypatch.setattr(distributed, "MIN_PART_BYTES", 16 << 10)
    monkeypatch.setattr(distributed, "PART_BYTES", 64 << 10)
    local = doctor.check(str(data))
    assert comparable(doctor.check(str(data), engine="ray", jobs=2)) == comparable(local)
    assert any(f.code == "DAT018" for f in local.findings)  # not one record per line


def test_an_unreachable_ray_address_is_a_usage_error(data, capsys):
    from doctor.cli import main

    code = main(["check", str(data["parquet"]), "--engine", "ray", "--ray-address", "127.0.0.1:1", "--no-progress"])
    assert code == 2 and "nothing answers there" in capsys.readouterr().err


def test_a_cut_inside_a_value_is_never_folded(tmp_path):
    """A valid record pretty-printed over several lines, cut in its middle: each side reads broken
    lines, one per line, which alone would pass the line count; the part ending in an error
    sends the file to one process."""
    from doctor.checks.dataset.scan import fold_parts, scan_part

    rec = {"id": "x", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    head = json.dumps(rec) + "\n"
    pretty = json.dumps(rec, indent=2) + "\n"
    data = tmp_path / "d.jsonl"
    data.write_bytes((head + pretty + head).encode())
    cut = len(head) + len(pretty) // 2
    cut = data.read_bytes().index(b"\n", cut) + 1
    text = data.read_bytes()
    first_lines = text[:cut].count(b"\n")
    parts = [scan_part(str(data), "llava", 0, cut, 0, 1, first_lines),
             scan_part(str(data), "llava", cut, len(text), first_lines, 1 + first_lines,
                       text[cut:].count(b"\n"))]
    assert parts[0].ends_in_error
    assert fold_parts(str(data), "llava", parts, 0.0) is None

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

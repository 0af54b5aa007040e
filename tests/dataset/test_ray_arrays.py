"""--engine ray on a JSON array (LLaVA's own format): its byte ranges are read on a local Ray
instance (2 workers), and the report equals the single-process report; a worker killed mid-run
loses and duplicates nothing."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray")

from doctor.checks.dataset import distributed

import doctor
from doctor.testing import make_image

from tests.helpers.reports import comparable


def _array_with_problems(root, n=2500, indent=None):
    """A LLaVA JSON array with problems in every part: unknown roles, empty answers, repeated
    ids, non-object elements, images missing / shared across parts, strings holding ``, {``."""
    for k in range(37):
        if k % 9:
            make_image(root / "img" / f"{k}.png", seed=k)
    records = []
    for i in range(n):
        rec = {"id": f"r{i % 2400}", "image": f"img/{i % 37}.png",
               "conversations": [{"from": "human", "value": "<image>\nWhat is [{it}], {x}?"},
                                 {"from": "gpt", "value": f"Answer \"{i}\", {{ok}} é 日本."}]}
        if i % 401 == 7:
            rec["conversations"][0]["from"] = "user"
        if i % 733 == 5:
            rec["conversations"][1]["value"] = ""
        records.append(rec)
        if i % 1500 == 11:
            records.append([1, {"a": 2}])
    path = root / "train.json"
    path.write_text(json.dumps(records, indent=indent, ensure_ascii=False))
    return path


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(distributed, "MIN_PART_BYTES", 16 << 10)
    monkeypatch.setattr(distributed, "PART_BYTES", 64 << 10)
    folds = []
    original = distributed.cut_array

    def spy(*args):
        plan = original(*args)
        folds.append(plan)
        return plan

    monkeypatch.setattr(distributed, "cut_array", spy)
    return folds


@pytest.mark.parametrize("indent", [None, 2])
def test_json_array_parts_give_the_single_process_report(tmp_path, small_parts, indent):
    data = _array_with_problems(tmp_path, indent=indent)
    local = doctor.check(str(data))
    distributed_report = doctor.check(str(data), engine="ray", jobs=2)
    assert small_parts and small_parts[0] is not None and len(small_parts[0]) >= 4  # really read in parts
    assert comparable(distributed_report) == comparable(local)
    codes = {f.code for f in local.findings}
    assert {"DAT010", "DAT015", "DAT101", "DAT201"} <= codes, codes


def test_a_broken_json_array_is_read_by_one_process(tmp_path, small_parts):
    data = _array_with_problems(tmp_path, n=1500, indent=1)
    text = data.read_text()
    at = text.index('"r700"')
    data.write_text(text[:at] + "," + text[at:])  # json.load fails in the middle
    local = doctor.check(str(data))
    assert comparable(doctor.check(str(data), engine="ray", jobs=2)) == comparable(local)
    assert small_parts == [None]  # the chain found the error: no fold
    assert any(f.code == "DAT001" for f in local.findings)


def test_a_killed_worker_loses_nothing_on_a_json_array(tmp_path, small_parts):
    data = _array_with_problems(tmp_path, n=2000)
    marker = tmp_path / "killed"
    local = doctor.check(str(data), images="decode")
    killed = doctor.check(str(data), images="decode", engine="ray", jobs=2, ray_test_kill_once=str(marker))
    assert marker.exists()  # a worker really died mid-run
    assert small_parts and small_parts[0] is not None
    assert comparable(killed) == comparable(local)

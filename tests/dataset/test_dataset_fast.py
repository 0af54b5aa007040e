"""The compiled path of the dataset scan (msgspec windows, typed LLaVA records) gives findings
IDENTICAL to the exact Python reader: same codes, messages, locations, severities, fixes, order,
and the same image references and numbers. Checked on the factory's fixtures (every planted
problem) and on a hypothesis-generated corpus of real-shaped and broken records, with windows
small enough that every file goes through typed windows, record-by-record windows and the
exact reader's tail."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doctor.checks.dataset import scan as scan_module
from doctor.checks.dataset.scan import scan_dataset

import doctor
from doctor.io import jsonstream
from doctor.testing import LLAVA_PROBLEMS, MESSAGES_PROBLEMS, make_llava_dataset, make_messages_dataset


@pytest.fixture(autouse=True)
def small_windows(monkeypatch):
    monkeypatch.setattr(jsonstream, "FAST_CHUNK", 300)


def findings(path: Path, fast: bool, monkeypatch) -> list[tuple]:
    monkeypatch.setattr(scan_module, "FAST", fast)
    report = doctor.check(str(path), select=["DAT0", "DAT1", "DAT2", "DAT901", "DAT902"], images="exists",
                          image_folder=str(path.parent / "images"))
    assert not report.internal_errors, report.internal_errors
    # DAT901 states the time the read took: the one thing allowed to differ
    return [(f.code, f.severity.value, re.sub(r"read in .*", "", f.message), f.path, f.location, f.fix)
            for f in report.findings]


def scan_state(path: Path, fast: bool) -> dict:
    s = scan_dataset(str(path), fast=fast)
    c = s.checker
    return {
        "samples": s.problems.samples, "counts": s.problems.counts, "fmt": s.fmt, "layout": s.layout,
        "records": s.records, "objects": s.objects, "complete": s.complete, "stopped_at": s.stopped_at,
        "trailing_comma": s.trailing_comma, "bytes": s.bytes, "first": s.first_value,
        "lines": [s.line_of(i) for i in range(s.records)], "offsets": [s.offset_of(i) for i in range(s.records)],
        "refs": c.refs, "ref_first": list(c.ref_first), "keys": [c.keys[k] for k in c.ref_key],
        "turns": c.turns, "chars": list(c.chars), "with_images": c.records_with_images,
        "multi": (c.multi_image, c.multi_image_first), "image_refs": c.image_refs,
    }


def same(path: Path, monkeypatch) -> None:
    assert scan_state(path, True) == scan_state(path, False)
    assert findings(path, True, monkeypatch) == findings(path, False, monkeypatch)


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_fixtures_with_every_planted_problem(tmp_path, monkeypatch, fmt):
    same(make_llava_dataset(tmp_path, n=40, fmt=fmt, problems=[p for p in LLAVA_PROBLEMS
                                                               if fmt == "json" or p != "trailing-comma"]),
         monkeypatch)
    same(make_messages_dataset(tmp_path / "m", n=20, fmt=fmt, problems=[p for p in MESSAGES_PROBLEMS]), monkeypatch)


def test_clean_fixture_uses_typed_windows(tmp_path, monkeypatch):
    path = make_llava_dataset(tmp_path, n=60)
    s = scan_dataset(str(path), fast=True)
    assert s.windows and sum(n for _, n, *_ in s.windows) > 30  # most records never became dicts
    same(path, monkeypatch)


def test_defect_in_the_last_record_is_found(tmp_path, monkeypatch):
    path = make_llava_dataset(tmp_path, n=60)
    records = json.loads(path.read_text())
    records[-1]["conversations"][1]["from"] = "assistant"
    path.write_text(json.dumps(records, indent=2))
    (f,) = [f for f in findings(path, True, monkeypatch) if f[0] == "DAT101"]
    assert f[4].record == len(records) - 1
    same(path, monkeypatch)


_TEXT = st.sampled_from(["What is it?", "A cat.", "", "  ", "<image>\nWhat?", "<image> <image>", "é ü 😀",
                         "x\ny", "<img>", "a<b", "The <image> here"])
_ROLE = st.sampled_from(["human", "gpt", "human", "gpt", "user", "assistant", "system", "observation",
                         "function_call", 3, None])
_TURN = st.one_of(
    st.fixed_dictionaries({"from": _ROLE, "value": _TEXT}),
    st.fixed_dictionaries({"from": _ROLE, "value": st.one_of(_TEXT, st.integers(), st.none())},
                          optional={"extra": st.integers()}),
    st.just({"from": "gpt"}), st.just("turn"),
)
_CLEAN = st.builds(
    lambda n, q, a, img, rid: {"id": rid, **({"image": img} if img else {}), "conversations": [
        {"from": "human" if k % 2 == 0 else "gpt",
         "value": (("<image>\n" if img and k == 0 else "") + (q if k % 2 == 0 else a))} for k in range(n)]},
    st.integers(2, 6), st.sampled_from(["What?", "Why é?"]), st.sampled_from(["Yes.", "No 😀."]),
    st.sampled_from([None, "a.png", "b.jpg", "sub/c.png"]), st.one_of(st.text(max_size=4), st.integers(0, 5)))
_BROKEN = st.fixed_dictionaries(
    {"conversations": st.one_of(st.lists(_TURN, max_size=5), st.none(), st.just("x"))},
    optional={"id": st.one_of(st.integers(0, 3), st.text(max_size=2), st.none(), st.floats(allow_nan=False)),
              "image": st.one_of(st.sampled_from(["a.png", "", "../x.png", "/abs/y.png"]), st.none(),
                                 st.lists(st.sampled_from(["a.png", "b.png", ""]), max_size=3)),
              "images": st.lists(st.sampled_from(["a.png", "b.png"]), max_size=2)})
_RECORD = st.one_of(_CLEAN, _CLEAN, _CLEAN, _BROKEN, st.just([1]), st.just("x"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_RECORD, min_size=1, max_size=25), indent=st.sampled_from([None, 1, 2, 4]),
       jsonl=st.booleans())
def test_generated_corpus(tmp_path, monkeypatch, records, indent, jsonl):
    path = tmp_path / ("d.jsonl" if jsonl else "d.json")
    if jsonl:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records, indent=indent, ensure_ascii=False), encoding="utf-8")
    assert scan_state(path, True) == scan_state(path, False)


def test_without_msgspec_the_exact_reader_gives_the_same_findings(tmp_path, monkeypatch):
    path = make_llava_dataset(tmp_path, n=30, problems=["bad-role", "empty-value", "duplicate-id"])
    with_compiled = findings(path, True, monkeypatch)
    monkeypatch.setattr(jsonstream, "_MSGSPEC", None)  # what an install without the "fast" extra sees
    assert not jsonstream.compiled_available()
    assert scan_dataset(str(path), fast=True).windows == []
    assert findings(path, True, monkeypatch) == with_compiled


def test_record_checker_takes_rows_as_dicts(tmp_path):
    """The per-record entry point another reader (parquet, arrow rows) feeds: dicts, no text positions."""
    from doctor.checks.dataset.common import Problems
    from doctor.checks.dataset.records import RecordChecker, detect_format

    path = make_llava_dataset(tmp_path, n=10, problems=["bad-role", "no-image-token", "empty-value"])
    rows = json.loads(path.read_text())
    checker = RecordChecker(Problems())
    for i, row in enumerate(rows):
        checker.check(detect_format(row), row, i)
    scanned = scan_dataset(str(path))
    assert checker.problems.counts == scanned.problems.counts
    assert ([(p.message, p.pointer, p.index) for ps in checker.problems.samples.values() for p in ps]
            == [(p.message, p.pointer, p.index) for ps in scanned.problems.samples.values() for p in ps])
    assert checker.refs == scanned.refs

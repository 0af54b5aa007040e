"""Hugging Face datasets on disk (parquet shards, Arrow files, save_to_disk folders) with the
images embedded as {bytes, path} structs: the record rules on every row, the images from their
bytes, locations as (file, row group, row), memory bounded by a row group."""

from __future__ import annotations

import builtins
import json
import re
import sys

import pytest

pytest.importorskip("pyarrow")

import doctor
from doctor.testing.tables import (
    TABLE_PROBLEMS,
    image_bytes,
    make_rows,
    make_save_to_disk,
    messages_row,
    write_arrow,
    write_parquet,
)

EXPECTED = {  # planted problem -> the code that names it
    "empty-bytes": "DAT203",
    "truncated-jpeg": "DAT207",
    "not-an-image": "DAT205",
    "count-mismatch": "DAT111",
    "no-image-for-placeholder": "DAT112",
}


def dat(report):
    return [f for f in report.findings if f.code.startswith("DAT") and not f.code.startswith("DAT9")]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    rows, where = make_rows(120, TABLE_PROBLEMS)
    clean, _ = make_rows(120)
    return {
        "rows": rows, "where": where, "root": root,
        "parquet": write_parquet(root / "train.parquet", rows, row_group_size=32),
        "clean": write_parquet(root / "clean" / "train.parquet", clean, row_group_size=32),
    }


def test_each_planted_problem_is_found_at_its_row(planted):
    report = doctor.check(str(planted["parquet"]))
    found = {f.code: f for f in dat(report)}
    for problem, code in EXPECTED.items():
        assert code in found, (problem, sorted(found))
        f = found[code]
        row = planted["where"][problem]
        assert f.location.record == row, (problem, f.location)
        assert f.location.pointer.startswith(f"/{row}/"), (problem, f.location.pointer)
        assert f.path == str(planted["parquet"])
        assert f.location.line is None  # a table has rows, not lines
    assert len(dat(report)) == len(EXPECTED)  # one finding per cause, nothing else
    # images: the row group is named too (row_group_size=32)
    truncated = found["DAT207"]
    assert f"row group {planted['where']['truncated-jpeg'] // 32}" in truncated.message
    assert not report.ok


def test_clean_twin_is_clean(planted):
    report = doctor.check(str(planted["clean"]))
    assert dat(report) == []
    summary = next(f for f in report.findings if f.code == "DAT901")
    assert "120 records" in summary.message and "parquet" in summary.message
    images = next(f for f in report.findings if f.code == "DAT902")
    assert "120 distinct images" in images.message and "JPEG" in images.message and "PNG" in images.message


def test_arrow_stream_file_and_save_to_disk(tmp_path):
    rows, where = make_rows(40, ["truncated-jpeg", "count-mismatch"])
    for stream in (True, False):
        path = write_arrow(tmp_path / f"data-{stream}.arrow", rows, batch_size=8, stream=stream)
        codes = {(f.code, f.location.record) for f in dat(doctor.check(str(path)))}
        assert codes == {("DAT207", where["truncated-jpeg"]), ("DAT111", where["count-mismatch"])}, stream
    folder = make_save_to_disk(tmp_path / "saved", rows, shards=2)
    report = doctor.check(str(folder))
    shards = sorted({a.path for a in report.artifacts if a.kind == "dataset"})
    assert [s.rsplit("/", 1)[1] for s in shards] == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    # row numbers are per file: the second problem sits in the second shard
    by_code = {f.code: f for f in dat(report)}
    assert by_code["DAT207"].path.endswith("data-00000-of-00002.arrow")
    assert by_code["DAT111"].path.endswith("data-00001-of-00002.arrow")
    assert by_code["DAT111"].location.record == where["count-mismatch"] - 20


def test_decode_level_catches_what_headers_cannot(tmp_path):
    """A PNG whose compressed data is damaged but which ends with IEND: the header is fine and
    nothing looks cut, so only --images decode sees that Pillow cannot decode it."""
    data = bytearray(image_bytes((64, 64), "PNG", 3))
    start = data.index(b"IDAT") + 8
    for k in range(start, start + 40):
        data[k] ^= 0x5A
    rows = [messages_row([image_bytes(seed=i)]) for i in range(6)] + [messages_row([bytes(data)])]
    path = write_parquet(tmp_path / "t.parquet", rows)
    assert dat(doctor.check(str(path))) == []  # header level: a certain verdict needs the decode
    decoded = dat(doctor.check(str(path), images="decode"))
    assert [(f.code, f.location.record) for f in decoded] == [("DAT207", 6)]
    assert "broken data stream" in decoded[0].message
    clean = write_parquet(tmp_path / "c.parquet", rows[:6])
    assert dat(doctor.check(str(clean), images="decode")) == []


def test_images_as_paths_are_checked_as_files(tmp_path):
    """datasets.Image stores {bytes: None, path: ...} for images it did not embed."""
    from doctor.testing import make_image

    make_image(tmp_path / "img" / "a.png")
    row_ok = messages_row([image_bytes()])
    row_ok["images"] = [{"bytes": None, "path": "img/a.png"}]
    row_missing = messages_row([image_bytes()])
    row_missing["images"] = [{"bytes": None, "path": "img/gone.png"}]
    path = write_parquet(tmp_path / "t.parquet", [row_ok, row_missing])
    found = [(f.code, f.location.record) for f in dat(doctor.check(str(path)))]
    assert found == [("DAT201", 1)]


def test_a_table_without_a_conversation_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), tmp_path / "t.parquet")
    (f,) = dat(doctor.check(str(tmp_path / "t.parquet")))
    assert f.code == "DAT011" and "'text'" in f.message and "'label'" in f.message and f.severity == "error"


def test_llava_columns_in_a_table(tmp_path):
    rows = [{"id": str(i), "image": {"bytes": image_bytes(seed=i), "path": None},
             "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A."}]}
            for i in range(5)]
    rows[3]["conversations"][0]["from"] = "user"  # LLaVA's preprocess knows only human/gpt
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "llava.parquet")
    found = [(f.code, f.location.record) for f in dat(doctor.check(str(tmp_path / "llava.parquet")))]
    assert [r for _c, r in found] == [3], found


def test_without_pyarrow_the_checks_are_skipped_with_the_install_hint(planted, monkeypatch):
    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    report = doctor.check(str(planted["parquet"]))
    assert dat(report) == []
    skipped = [r for r in report.results if r.code == "DAT101" or r.code == "DAT901"]
    assert skipped and all("vlm-doctor[datasets]" in (r.reason or "") for r in skipped)


def test_fix_refuses_tables_and_leaves_them_untouched(planted, tmp_path):
    before = planted["parquet"].read_bytes()
    report = doctor.check(str(planted["parquet"]), fix=True, unsafe_fixes=True)
    assert planted["parquet"].read_bytes() == before
    assert not list(planted["parquet"].parent.glob("train.fixed*"))
    assert any("parquet or Arrow" in (o.error or "") for o in report.fixes)


def test_token_budget_reads_the_rows(tmp_path):
    from doctor.testing import make_tokenizer

    tokenizer = make_tokenizer(tmp_path / "tok", model_max_length=40)
    long = messages_row([image_bytes()], question="word " * 300)
    rows = [messages_row([image_bytes(seed=i)]) for i in range(4)] + [long]
    path = write_parquet(tmp_path / "t.parquet", rows)
    report = doctor.check(str(path), select=["DAT3"], tokenizer=str(tokenizer.path), max_length=700)
    over = [f for f in report.findings if f.code in ("DAT301", "DAT302", "DAT303")]
    assert [f.location.record for f in over] == [4], [(f.code, f.message) for f in report.findings]
    tokens = int(re.search(r"([\d,]+) tokens", over[0].message).group(1).replace(",", ""))
    assert tokens > 700 + 300  # the 300-word question and the image tokens, past the limit


def test_json_report_names_file_row_and_pointer(planted):
    data = json.loads(json.dumps(doctor.check(str(planted["parquet"])).to_dict("test")))
    (f,) = [f for f in data["findings"] if f["code"] == "DAT207"]
    row = planted["where"]["truncated-jpeg"]
    assert f["path"] == str(planted["parquet"]) and f["location"]["record"] == row
    assert f["location"]["pointer"] == f"/{row}/images/0"


def test_without_pyarrow_the_environment_says_the_tables_went_unchecked(planted, monkeypatch):
    """No silent pass: the skipped DAT checks are joined by an ENV009 warning naming the file."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name.split(".")[0] == "pyarrow" else real(name, *a, **k))
    (f,) = [f for f in doctor.check(str(planted["parquet"]), select=["ENV009"]).findings]
    assert f.severity.value == "warning" and str(planted["parquet"]) in f.message
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert doctor.check(str(planted["parquet"]), select=["ENV009"]).findings == []

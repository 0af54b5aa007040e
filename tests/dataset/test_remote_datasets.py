"""A dataset file given as an fsspec URL (``s3://bucket/train.jsonl`` and friends), tested with
fsspec's built-in ``memory://`` and ``file://``: JSON, JSON Lines and parquet, in one process and
under ``--engine ray`` (whose workers read their own ranges of the URL), give the local path's
report except for the file names; relative images resolve against the URL's folder; a missing
object or a missing protocol package is a clear exit-2 error, never a traceback; ``--fix`` on a
URL writes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

fsspec = pytest.importorskip("fsspec")

import doctor  # noqa: E402 - after the importorskip
from doctor.testing import make_image  # noqa: E402

from tests.helpers.reports import comparable  # noqa: E402

# The one wording that differs: a local prober says "file", an object-storage one "object".
WORDING = re.compile(r"no such (file|object)")


def same(report, local, url_folder: str, local_folder: str) -> list[dict]:
    out = []
    for f in comparable(report, replace=(url_folder, local_folder)):
        f["message"] = WORDING.sub("no such <entry>", f["message"])
        out.append(f)
    want = []
    for f in comparable(local):
        f["message"] = WORDING.sub("no such <entry>", f["message"])
        want.append(f)
    assert out == want
    return want


def _records(n: int) -> list:
    recs: list = []
    for i in range(n):
        rec = {"id": f"r{i % (n - 3)}", "image": f"img/{i % 11}.png",
               "conversations": [{"from": "human", "value": "<image>\nWhat, {is} it?"},
                                 {"from": "gpt", "value": f"Answer {i}, é."}]}
        if i % 97 == 5:
            rec["conversations"][0]["from"] = "user"
        recs.append(rec)
    recs.insert(40, [1, 2])
    return recs


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The same dataset as a JSON array, JSON Lines and parquet, with images beside it (some missing)."""
    from doctor.testing.tables import TABLE_PROBLEMS, make_rows, write_arrow, write_parquet

    root = tmp_path_factory.mktemp("remote")
    for k in range(11):
        if k % 4:
            make_image(root / "img" / f"{k}.png", seed=k)
    recs = _records(600)
    (root / "train.json").write_text(json.dumps(recs, indent=1, ensure_ascii=False))
    (root / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    rows, _ = make_rows(200, TABLE_PROBLEMS)
    write_parquet(root / "train.parquet", rows, row_group_size=32)
    write_arrow(root / "stream.arrow", rows, batch_size=32)  # save_to_disk's stream format
    write_arrow(root / "file.arrow", rows, batch_size=32, stream=False)
    return root


def to_memory(root: Path, prefix: str) -> str:
    fs = fsspec.filesystem("memory")
    for f in root.rglob("*"):
        if f.is_file():
            fs.pipe(f"/{prefix}/{f.relative_to(root)}", f.read_bytes())
    return f"memory://{prefix}"


@pytest.mark.parametrize("name", ["train.json", "train.jsonl", "train.parquet", "stream.arrow", "file.arrow"])
def test_a_memory_url_gives_the_local_report(local, name):
    folder = to_memory(local, f"one-{name}")
    report = doctor.check(f"{folder}/{name}")
    want = same(report, doctor.check(str(local / name)), folder, str(local))
    assert {"DAT101", "DAT901"} <= {f["code"] for f in want} or name.endswith((".parquet", ".arrow"))
    if name.endswith(".json") or name.endswith(".jsonl"):  # relative images were read from the URL's folder: some found, some not
        assert any(f["code"] == "DAT201" for f in want) and not any(f["code"] == "DAT210" for f in want)


@pytest.mark.parametrize("name", ["train.json", "train.jsonl", "train.parquet"])
def test_a_file_url_gives_the_local_report(local, name):
    url = (local / name).as_uri()
    report = doctor.check(url)
    same(report, doctor.check(str(local / name)), local.as_uri(), str(local))


def test_an_image_folder_given_beside_a_url_dataset_wins(local, tmp_path):
    folder = to_memory(local, "given")
    report = doctor.check(f"{folder}/train.jsonl", image_folder=str(tmp_path))  # an empty folder
    missing = [f for f in report.findings if f.code in ("DAT201", "DAT210")]
    assert missing and all(str(tmp_path) in f.message for f in missing)


def test_ray_workers_read_a_file_url(local, monkeypatch):
    """Under --engine ray the workers open the URL themselves (file:// through fsspec), in parts."""
    pytest.importorskip("ray")
    from doctor.checks.dataset import distributed, scan

    monkeypatch.setattr(distributed, "MIN_PART_BYTES", 8 << 10)
    monkeypatch.setattr(distributed, "PART_BYTES", 16 << 10)
    folds = []
    for name in ("fold_parts", "fold_array_parts"):
        original = getattr(scan, name)

        def spy(*args, _original=original, _name=name):
            result = _original(*args)
            folds.append((_name, result is not None))
            return result

        monkeypatch.setattr(scan, name, spy)
    for name in ("train.json", "train.jsonl", "train.parquet"):
        url = (local / name).as_uri()
        report = doctor.check(url, engine="ray", jobs=2)
        same(report, doctor.check(str(local / name)), local.as_uri(), str(local))
    assert ("fold_parts", True) in folds and ("fold_array_parts", True) in folds  # both read in parts


def test_a_memory_url_under_ray_is_read_by_the_driver(local):
    """memory:// lives in one process: Ray's workers cannot see it, so the driver reads it."""
    pytest.importorskip("ray")
    folder = to_memory(local, "ray-memory")
    report = doctor.check(f"{folder}/train.jsonl", engine="ray", jobs=2)
    same(report, doctor.check(str(local / "train.jsonl")), folder, str(local))


@pytest.mark.parametrize("url, said", [
    ("memory://nowhere/train.jsonl", "no such object"),
    ("s3://bucket/train.jsonl", "s3fs"),  # the protocol's package is not installed here
    ("nosuchprotocol://bucket/train.jsonl", "nosuchprotocol"),
])
def test_an_unreadable_url_is_a_usage_error(url, said, capsys):
    from doctor.cli import main

    if said == "s3fs":
        try:
            import s3fs  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("s3fs is installed here")
    code = main(["check", url, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and url in err and said in err and "Traceback" not in err


def test_a_url_folder_checks_every_dataset_file_in_it(local):
    """A folder URL (a Hugging Face dataset's shards) is listed as a local folder is walked: each
    dataset file is an artifact, with the local folder's report."""
    from doctor.artifacts import discover

    folder = to_memory(local, "folder")
    arts = discover([folder])
    assert [a.path.rsplit("/", 1)[-1] for a in arts] == ["file.arrow", "stream.arrow", "train.json", "train.jsonl",
                                                          "train.parquet"]
    assert {a.path.rsplit("/", 1)[-1] for a in arts} == {a.path.rsplit("/", 1)[-1] for a in discover([str(local)])}
    for art in arts:
        name = art.path.rsplit("/", 1)[-1]
        same(doctor.check(art.path), doctor.check(str(local / name)), folder, str(local))


def test_a_url_folder_without_datasets_is_doc002(capsys):
    from doctor.cli import main

    fs = fsspec.filesystem("memory")
    fs.pipe("/pictures/a/cat.png", b"\x89PNG\r\n\x1a\n" + bytes(32))
    report = doctor.check("memory://pictures")
    (found,) = [f for f in report.findings if f.code == "DOC002"]
    assert "none a dataset file" in found.message and "a/cat.png" in found.message
    assert main(["check", "memory://pictures", "--no-progress"]) == 1


def test_a_url_that_is_not_a_dataset_is_doc002(local):
    fs = fsspec.filesystem("memory")
    fs.pipe("/notes/readme", b"just some text\n")
    report = doctor.check("memory://notes/readme")
    found = [f for f in report.findings if f.code == "DOC002"]
    assert found and "a text file" in found[0].message
    fs.pipe("/notes/data", json.dumps(_records(20)).encode())  # no suffix, JSON inside: a dataset
    assert any(f.code == "DAT901" for f in doctor.check("memory://notes/data").findings)


def test_fix_on_a_url_writes_nothing(local, tmp_path):
    folder = to_memory(local, "fix")
    fs = fsspec.filesystem("memory")
    before = sorted(fs.find(folder.removeprefix("memory://")))
    report = doctor.check(f"{folder}/train.json", fix=True, unsafe_fixes=True)
    assert sorted(fs.find(folder.removeprefix("memory://"))) == before  # nothing written beside the URL
    assert report.fixes and all(o.error and "not repaired" in o.error for o in report.fixes)
    local_report = doctor.check(str(local / "train.json"))
    assert any(f.fix is not None for f in local_report.findings)  # the local twin has fixes to apply


def test_sarif_names_the_url_itself(local, capsys):
    from doctor.cli import main

    folder = to_memory(local, "sarif")
    main(["check", f"{folder}/train.json", "--no-progress", "--images", "none", "--output-format", "sarif"])
    sarif = json.loads(capsys.readouterr().out)
    uris = {loc["physicalLocation"]["artifactLocation"]["uri"]
            for result in sarif["runs"][0]["results"] for loc in result.get("locations", [])}
    assert f"{folder}/train.json" in uris


@pytest.mark.parametrize("name", ["train.json", "train.jsonl", "train.parquet"])
def test_workers_that_cannot_read_the_url_leave_it_to_the_driver(local, monkeypatch, name):
    """Ray's workers really cannot see this process's memory:// storage; told it is shareable,
    the driver ships the parts, each worker answers Unreadable, and the driver reads the file."""
    pytest.importorskip("ray")
    from doctor.checks.dataset import distributed

    monkeypatch.setattr(distributed, "_process_local", lambda path: False)
    monkeypatch.setattr(distributed, "MIN_PART_BYTES", 8 << 10)
    monkeypatch.setattr(distributed, "PART_BYTES", 16 << 10)
    unreadable = []
    original = distributed._any_unreadable

    def spy(results):
        found = original(results)
        unreadable.append(found)
        return found

    monkeypatch.setattr(distributed, "_any_unreadable", spy)
    folder = to_memory(local, f"unshared-{name}")
    report = doctor.check(f"{folder}/{name}", engine="ray", jobs=2, images="none")
    same(report, doctor.check(str(local / name), images="none"), folder, str(local))
    if name != "train.parquet":  # a table's unreadable row groups are read again one by one, no spy
        assert True in unreadable  # the workers did answer that they could not read it

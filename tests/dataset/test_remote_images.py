"""--image-folder as an fsspec URL (object storage): the same verdicts as for a local folder, each
image read whole through fsspec and checked from its bytes; an unreachable root or object is a
finding, never a crash; Ray workers read the storage themselves."""

from __future__ import annotations

import pytest

pytest.importorskip("fsspec")

import doctor
from doctor.testing import make_llava_dataset
from doctor.testing.tables import image_bytes

PROBLEMS = ["missing-image", "truncated-image", "not-an-image", "path-escape"]


def image_findings(report):
    return sorted((f.code, f.location.record if f.location else None)
                  for f in report.findings if f.code.startswith("DAT2"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    path = make_llava_dataset(root, n=12, fmt="jsonl", problems=PROBLEMS)
    return path, root / "images"


def test_a_file_url_root_gives_the_local_verdicts(data):
    path, images = data
    local = doctor.check(str(path), image_folder=str(images), images="header")
    remote = doctor.check(str(path), image_folder=f"file://{images}", images="header")
    assert image_findings(remote) == image_findings(local)
    assert {"DAT201", "DAT205", "DAT207", "DAT209"} <= {c for c, _ in image_findings(local)}
    decoded = doctor.check(str(path), image_folder=f"file://{images}", images="decode")
    assert image_findings(decoded) == image_findings(doctor.check(str(path), image_folder=str(images),
                                                                  images="decode"))


def test_objects_in_memory_storage(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/ds/ok.png", image_bytes((40, 30), "PNG", 1))
    fs.pipe("/bucket/ds/named.png", image_bytes((40, 30), "JPEG", 2))  # a JPEG called .png
    fs.pipe("/bucket/ds/empty.jpg", b"")
    fs.pipe("/bucket/ds/folder.png/inside.png", image_bytes())
    import json

    records = [{"id": str(i), "image": name, "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                               {"from": "gpt", "value": "This."}]}
               for i, name in enumerate(["ok.png", "named.png", "empty.jpg", "folder.png", "gone.png"])]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = doctor.check(str(path), image_folder="memory://bucket/ds")
    assert image_findings(report) == [("DAT201", 4), ("DAT202", 3), ("DAT203", 2), ("DAT206", 1)]
    summary = next(f for f in report.findings if f.code == "DAT902").message
    assert summary.startswith("5 distinct images checked") and "PNG 1, JPEG 1" in summary
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(records[0]) + "\n")
    assert image_findings(doctor.check(str(clean), image_folder="memory://bucket/ds")) == []


def test_an_unreachable_root_is_a_finding_per_image_not_a_crash(data):
    path, _ = data
    report = doctor.check(str(path), image_folder="nosuchprotocol://bucket/images")
    found = [f for f in report.findings if f.code.startswith("DAT2")]
    assert found and {f.code for f in found} == {"DAT204"}
    assert "nosuchprotocol://bucket/images" in found[0].message
    assert not report.internal_errors


def test_ray_workers_read_the_storage_themselves(data):
    pytest.importorskip("ray")
    path, images = data
    local = doctor.check(str(path), image_folder=f"file://{images}", images="decode")
    distributed = doctor.check(str(path), image_folder=f"file://{images}", images="decode", engine="ray", jobs=2)
    assert [(f.code, f.message) for f in distributed.findings if f.code.startswith("DAT2")] == \
        [(f.code, f.message) for f in local.findings if f.code.startswith("DAT2")]

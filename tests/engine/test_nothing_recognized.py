"""No silent pass: every path on the command line ends as an artifact or a finding. A path under
which nothing is recognized is a DOC002 error naming what was there (exit 1, as pytest exits
non-zero when it collects nothing); names decide first, the first bytes second."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from doctor.artifacts import discover, sniff
from doctor.cli import main


def check(tmp_path: Path, *paths: Path) -> tuple[int, list[dict[str, Any]]]:
    out = tmp_path / "report.json"
    rc = main(["check", *map(str, paths), "--no-progress", "--ignore", "ENV", "--output-format", "json",
               "-o", str(out)])
    return rc, json.loads(out.read_text())["findings"]


def test_empty_folder_exits_1_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "outputs"
    empty.mkdir()
    rc, findings = check(tmp_path, empty)
    assert rc == 1 and [(f["code"], f["path"]) for f in findings] == [("DOC002", str(empty))]
    assert "empty" in findings[0]["message"]
    (empty / "train.jsonl").write_text('{"id": "1", "conversations": []}\n')  # twin: something to check
    _, findings = check(tmp_path, empty)
    assert "DOC002" not in {f["code"] for f in findings}


def test_text_file_is_not_weights(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("the adapter is in ../out\n")
    rc, findings = check(tmp_path, notes)
    assert rc == 1 and [(f["code"], f["path"]) for f in findings] == [("DOC002", str(notes))]
    assert "text file" in findings[0]["message"]
    rows = tmp_path / "rows.txt"  # twin: JSON lines under another name are a dataset
    rows.write_text('{"id": "1", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\\nhi"},'
                    ' {"from": "gpt", "value": "hello"}]}\n{"id": "2", "conversations": []}\n')
    (art,) = discover([str(rows)])
    assert art.kind == "dataset" and art.meta["format"] == "jsonl"


def test_unparsable_config_keeps_its_folder(tmp_path: Path) -> None:
    model = tmp_path / "merged"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llava"}\n}junk')
    rc, findings = check(tmp_path, model)
    ckp001 = [f for f in findings if f["code"] == "CKP001"]
    assert rc == 1 and len(ckp001) == 1 and ckp001[0]["path"] == str(model / "config.json")
    assert ckp001[0]["location"]["line"] == 2 and ckp001[0]["location"]["column"] == 1
    (model / "config.json").write_text('{"model_type": "llava"}\n')  # twin
    (art,) = discover([str(model)])
    assert "model" in art.kinds
    _, findings = check(tmp_path, model)
    assert "CKP001" not in {f["code"] for f in findings}


@pytest.mark.parametrize("content", ["[1, 2", "not json at all", "[]", '"a string"'])
def test_any_config_that_is_not_an_object_is_still_a_model_candidate(tmp_path: Path, content: str) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(content)
    (art,) = discover([str(tmp_path / "m")])
    assert "model" in art.kinds


def test_a_tools_config_without_a_model_is_walked_past(tmp_path: Path) -> None:
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "config.json").write_text('{"verbose": true}')
    (art,) = discover([str(tmp_path / "tool")])
    assert art.kind == "unrecognized" and "config files without a model" in art.meta["message"]


def test_folder_of_unrecognized_files_names_them_and_counts(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(10):
        (images / f"{i:03d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    (images / "README.md").write_text("images for the run\n")
    rc, findings = check(tmp_path, images)
    assert rc == 1 and findings[0]["code"] == "DOC002"
    message = findings[0]["message"]
    assert "11 file(s)" in message and "10 images" in message and "1 text files" in message
    assert "000.png" in message and "(3 more)" in message


def test_image_given_alone_is_reported(tmp_path: Path) -> None:
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0" + bytes(30))
    rc, findings = check(tmp_path, image)
    assert rc == 1 and findings[0]["code"] == "DOC002" and "JPEG image" in findings[0]["message"]


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(4)


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")


@pytest.mark.parametrize(("make", "kind"), [
    (lambda p: p.write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94."), "pickle"),
    (lambda p: p.write_bytes(_safetensors()), "safetensors"),
    (_zip, "zip"),
    (lambda p: p.write_text('[{"id": "1"}]'), "json"),
    (lambda p: p.write_bytes(b"GIF89a" + bytes(10)), "image"),
    (lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 3\n"), "lfs-pointer"),
    (lambda p: p.write_text("<!DOCTYPE html><html></html>"), "html"),
    (lambda p: p.write_bytes(bytes(range(256))), "binary"),
    (lambda p: p.write_bytes(b""), "empty"),
])
def test_sniff_decides_by_magic_bytes(tmp_path: Path, make: Any, kind: str) -> None:
    path = tmp_path / "blob.dat"
    make(path)
    assert sniff(path)[0] == kind
    (art,) = discover([str(path)])
    expected = {"pickle": "weights", "safetensors": "weights", "zip": "weights", "json": "dataset"}.get(kind, "unrecognized")
    assert art.kind == expected


def test_every_loose_pickle_under_a_folder_is_an_artifact(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.json").write_text('[{"id": "1"}]')
    deep = tmp_path / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    for name in ("stray.pt", "cache.pkl", "optimizer.pt", "weights.bin"):
        (deep / name).write_bytes(b"\x80\x02}q\x00.")
    found = {Path(a.path).name: a.kind for a in discover([str(tmp_path)])}
    assert found == {"train.json": "dataset", "stray.pt": "weights", "cache.pkl": "pickle",
                     "optimizer.pt": "pickle", "weights.bin": "weights"}


def test_a_config_file_given_alone_means_its_model_folder(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llava"}')
    (model / "tokenizer_config.json").write_text("{}")
    (art,) = discover([str(model / "tokenizer_config.json")])
    assert art.path == str(model) and "model" in art.kinds
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "tokenizer_config.json").write_text("{}")
    (art,) = discover([str(tmp_path / "lonely" / "tokenizer_config.json")])
    assert art.kind == "unrecognized"



def test_a_folder_kept_only_by_a_broken_config_is_still_walked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.json").write_text("{broken")
    (data / "train.json").write_text('[{"id": "1"}]')
    found = {Path(a.path).name: a.kind for a in discover([str(data)])}
    assert found == {"data": "model", "train.json": "dataset"}
    (data / "config.json").write_text('{"model_type": "llava"}')  # twin: a real model folder is not walked
    assert {Path(a.path).name for a in discover([str(data)])} == {"data"}


def test_a_dangling_link_is_named_as_such(tmp_path: Path) -> None:
    import os

    os.symlink(tmp_path / "gone.bin", tmp_path / "model.link")
    (art,) = discover([str(tmp_path / "model.link")])
    assert art.kind == "unrecognized" and "link to a missing file" in art.meta["message"]
    (tmp_path / "gone.bin").write_bytes(b"\x80\x02}q\x00.")  # twin: the target exists
    (art,) = discover([str(tmp_path / "model.link")])
    assert art.kind == "weights"


def test_a_pipe_is_named_as_such(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "fifo")
    (art,) = discover([str(tmp_path / "fifo")])
    assert art.kind == "unrecognized" and "pipe" in art.meta["message"]

"""CKP201-CKP209: sharded checkpoints (safetensors and .bin) against their index files, on
factory-built sharded llava, llava_next and mllama models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from doctor.testing import make_llava_model
from doctor.testing import weights as _weights

from tests.helpers.checkpoint import FAMILIES, assert_fails, assert_passes, clone, run_ckp

SHARD_CODES = ("CKP201", "CKP202", "CKP203", "CKP204", "CKP205", "CKP206", "CKP207", "CKP208", "CKP209")
INDEX = "model.safetensors.index.json"
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 123456\n"


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sharded")
    models = {fam: make_llava_model(root / fam, family=fam, shard_size="60KB") for fam in FAMILIES}
    models["bin"] = make_llava_model(root / "bin", family="llava", shard_size="60KB", weights="bin")
    return models


def _index(model: Path, name: str = INDEX) -> dict[str, Any]:
    return json.loads((model / name).read_text())


def _write_index(model: Path, data: dict[str, Any], name: str = INDEX) -> None:
    (model / name).write_text(json.dumps(data, indent=2))


def _load(model: Path) -> Any:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(model, output_loading_info=True)


@pytest.mark.parametrize("kind", (*FAMILIES, "bin"))
def test_clean_shards_pass(sharded: dict[str, Any], kind: str) -> None:
    info = sharded[kind]
    assert len(info.weight_files) > 2
    report = run_ckp(info.path)
    for code in (*SHARD_CODES, "CKP104", "CKP105"):
        assert_passes(report, code)


@pytest.mark.parametrize("family", FAMILIES)
def test_index_invalid(sharded: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(sharded[family].path, tmp_path / "m")
    (model / INDEX).write_text('{"metadata": {}, "weight_map": {"a": "b",}}')
    assert_fails(run_ckp(model), "CKP201", "unusable")
    _write_index(model, {"metadata": {"total_size": 1}})
    assert_fails(run_ckp(model), "CKP201", "weight_map")
    data = _index(sharded[family].path)
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = 7
    _write_index(model, data)
    [f] = assert_fails(run_ckp(model), "CKP201", "maps to 7")
    assert f.location is not None and f.location.pointer == "/weight_map/" + first.replace("/", "~1")


@pytest.mark.parametrize("kind", (*FAMILIES, "bin"))
def test_missing_shard(sharded: dict[str, Any], tmp_path: Path, kind: str) -> None:
    model = clone(sharded[kind].path, tmp_path / "m")
    victim = sharded[kind].weight_files[1]
    (model / victim).unlink()
    report = run_ckp(model)
    assert_fails(report, "CKP202", victim)
    assert all(r.status.value == "skip" for r in report.results if r.code in ("CKP104", "CKP105", "CKP106"))
    with pytest.raises((OSError, FileNotFoundError)):
        _load(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_lfs_pointer_shard(sharded: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(sharded[family].path, tmp_path / "m")
    victim = sharded[family].weight_files[0]
    (model / victim).write_bytes(LFS_POINTER)
    report = run_ckp(model)
    assert_fails(report, "CKP203", victim, "Git-LFS")
    assert "CKP104" not in {f.code for f in report.findings}  # unknown tensors are not "missing"
    with pytest.raises(Exception):  # noqa: B017 - safetensors raises its own error type
        _load(model)


def test_lfs_pointer_single_file(tmp_path: Path) -> None:
    info = make_llava_model(tmp_path / "m", family="llava")
    (info.path / "model.safetensors").write_bytes(LFS_POINTER)
    assert_fails(run_ckp(info.path), "CKP203", "model.safetensors")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target", ("../elsewhere/model-00001-of-00009.safetensors", "/tmp/x.safetensors"))
def test_shard_path_leaves_the_folder(sharded: dict[str, Any], tmp_path: Path, family: str, target: str) -> None:
    model = clone(sharded[family].path, tmp_path / "m")
    data = _index(model)
    name = next(iter(data["weight_map"]))
    data["weight_map"][name] = target
    _write_index(model, data)
    assert_fails(run_ckp(model), "CKP204", repr(target))


@pytest.mark.parametrize("family", FAMILIES)
def test_hub_cache_symlinks_are_fine(sharded: dict[str, Any], tmp_path: Path, family: str) -> None:
    """The hub cache links every shard to ../../blobs/<sha>: not an escape."""
    snapshot = clone(sharded[family].path, tmp_path / "snapshots" / "abc")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for name in sharded[family].weight_files:
        (snapshot / name).rename(blobs / name)
        (snapshot / name).symlink_to(Path("../../blobs") / name)
    report = run_ckp(snapshot)
    for code in SHARD_CODES:
        assert_passes(report, code)


@pytest.mark.parametrize("family", FAMILIES)
def test_unlisted_leftover_shard(sharded: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(sharded[family].path, tmp_path / "m")
    extra = "model-00001-of-00099.safetensors"
    (model / extra).write_bytes((model / sharded[family].weight_files[0]).read_bytes())
    [f] = assert_fails(run_ckp(model), "CKP205", extra)
    assert f.severity.value == "warning"


@pytest.mark.parametrize("family", FAMILIES)
def test_index_places_tensor_in_wrong_shard(sharded: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(sharded[family].path, tmp_path / "m")
    data = _index(model)
    counts: dict[str, int] = {}
    for shard in data["weight_map"].values():
        counts[shard] = counts.get(shard, 0) + 1
    home = next(s for s in sharded[family].weight_files if counts[s] > 1)  # stays named by the index
    other = next(s for s in sharded[family].weight_files if s != home)
    name = next(k for k, v in data["weight_map"].items() if v == home)
    data["weight_map"][name] = other
    _write_index(model, data)
    [f] = assert_fails(run_ckp(model), "CKP206", name, f"stored in {home}")
    assert f.severity.value == "warning"
    _, info = _load(model)  # transformers reads whole shards: still complete
    assert not info["missing_keys"]


@pytest.mark.parametrize("family", FAMILIES)
def test_index_lists_a_tensor_no_shard_holds(sharded: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(sharded[family].path, tmp_path / "m")
    data = _index(model)
    data["weight_map"]["multi_modal_projector.ghost.weight"] = sharded[family].weight_files[0]
    _write_index(model, data)
    [f] = assert_fails(run_ckp(model), "CKP206", "no shard the index names holds it")
    assert f.severity.value == "error"


@pytest.mark.parametrize("family", FAMILIES)
def test_tensor_in_two_shards(sharded: dict[str, Any], tmp_path: Path, family: str) -> None:
    from safetensors.torch import load_file, save_file

    model = clone(sharded[family].path, tmp_path / "m")
    files = sharded[family].weight_files
    first = load_file(str(model / files[0]))
    name = sorted(first)[0]
    last = load_file(str(model / files[-1]))
    last[name] = first[name].clone()
    save_file(last, str(model / files[-1]), metadata={"format": "pt"})
    assert_fails(run_ckp(model), "CKP207", name, files[0], files[-1])


@pytest.mark.parametrize("kind", (*FAMILIES, "bin"))
def test_total_size_mismatch(sharded: dict[str, Any], tmp_path: Path, kind: str) -> None:
    model = clone(sharded[kind].path, tmp_path / "m")
    index_name = INDEX if kind != "bin" else "pytorch_model.bin.index.json"
    data = _index(model, index_name)
    real = data["metadata"]["total_size"]
    data["metadata"]["total_size"] = real * 2
    _write_index(model, data, index_name)
    assert_fails(run_ckp(model), "CKP208", f"{real * 2:,}", f"{real:,}")


@pytest.mark.parametrize("family", FAMILIES)
def test_tensor_missing_from_index_still_loads(sharded: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(sharded[family].path, tmp_path / "m")
    data = _index(model)
    name = sorted(data["weight_map"])[-1]
    del data["weight_map"][name]
    _write_index(model, data)
    assert_fails(run_ckp(model), "CKP209", name)
    _, info = _load(model)
    assert not info["missing_keys"]


def test_bin_index_entries_are_checked_too(sharded: dict[str, Any], tmp_path: Path) -> None:
    model = clone(sharded["bin"].path, tmp_path / "m")
    name = "pytorch_model.bin.index.json"
    data = _index(model, name)
    key = next(iter(data["weight_map"]))
    data["weight_map"][key] = "../pytorch_model-00001-of-00002.bin"
    _write_index(model, data, name)
    assert_fails(run_ckp(model), "CKP204", "pytorch_model.bin.index.json")
    assert _weights.weight_files(model)[0].endswith(".bin")


@pytest.mark.parametrize("content,code", [
    ('{"weight_map": {"a": null, "b": ["x"]}, "metadata": {"total_size": "abc"}}', "CKP201"),
    ('{"weight_map": [1, 2]}', "CKP201"),
    ('{"weight_map": {"a": "model.safetensors.index.json", "b": "."}}', "CKP202"),
    ("version https://git-lfs.github.com/spec/v1\n", "CKP201"),
])
def test_junk_index_gives_findings_never_a_crash(sharded: dict[str, Any], tmp_path: Path, content: str, code: str) -> None:
    model = clone(sharded["llava"].path, tmp_path / "m")
    (model / INDEX).write_text(content)
    assert_fails(run_ckp(model, deep=True), code)

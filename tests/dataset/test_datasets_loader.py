"""What ``datasets.load_dataset("json", ...)`` (the loader of LLaMA-Factory and TRL) really does
with the files DAT007 and DAT016 report, run here with the installed ``datasets``, beside what
vlm-doctor says about the same file (the severities follow the loaders: docs/severity.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import doctor
from doctor.testing import make_llava_dataset

datasets = pytest.importorskip("datasets")
pytestmark = pytest.mark.filterwarnings("ignore")


def load(path: Path, tmp_path: Path):
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))


def findings(path: Path) -> list:
    """vlm-doctor on the file, its images resolved as LLaVA's --image_folder (the images/ beside it)."""
    return doctor.check(str(path), select=["DAT"], image_folder=str(path.parent / "images")).findings


def codes(path: Path) -> dict[str, str]:
    return {f.code: f.severity.value for f in findings(path)}


def records(tmp_path: Path, n: int = 6) -> tuple[list[dict], Path]:
    """LLaVA records whose images exist, and the folder they are relative to."""
    src = make_llava_dataset(tmp_path / "src", n=n)
    return json.loads(src.read_text()), src.parent


@pytest.mark.parametrize("indent", [None, 2])
def test_array_in_jsonl_loads_with_datasets_so_dat007_is_a_warning(tmp_path, indent):
    recs, folder = records(tmp_path)
    path = folder / "train.jsonl"
    path.write_text(json.dumps(recs, indent=indent))
    ds = load(path, tmp_path)
    assert len(ds) == len(recs) and ds[0]["id"] == recs[0]["id"]  # datasets reads it, whole
    lines = path.read_text().splitlines()
    if indent is None:  # a line reader gets one value, a list, not records
        assert [type(json.loads(line)) for line in lines] == [list]
    else:  # ... or fails on the first line
        with pytest.raises(json.JSONDecodeError):
            [json.loads(line) for line in lines if line.strip()]
    assert codes(path).get("DAT007") == "warning"
    assert "error" not in codes(path).values()


def test_one_record_per_line_is_the_clean_twin(tmp_path):
    recs, folder = records(tmp_path)
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert len(load(path, tmp_path)) == len(recs)
    assert "DAT007" not in codes(path) and "DAT016" not in codes(path)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_mixed_id_types_as_the_installed_datasets_treats_them(tmp_path, suffix):
    recs, folder = records(tmp_path)
    for i, r in enumerate(recs):
        r["id"] = i if i % 2 else f"{i:06d}"
    path = folder / f"train{suffix}"
    path.write_text(json.dumps(recs) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in recs))
    major = int(datasets.__version__.split(".")[0])
    if major < 5:  # LLaMA-Factory's pin (datasets<=4.0.0): the file does not load
        with pytest.raises(datasets.exceptions.DatasetGenerationError):
            load(path, tmp_path)
    else:  # datasets 5: one Json column, and the string ids come back as numbers ("000000" -> 0)
        ds = load(path, tmp_path)
        assert ds[0]["id"] == 0 and [ds[i]["id"] for i in range(len(ds))] != [r["id"] for r in recs]
    (f,) = [f for f in findings(path) if f.code == "DAT016"]
    assert f.severity.value == "warning" and "datasets before 5.0" in f.message and f.location.pointer == "/1/id"

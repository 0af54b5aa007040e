"""FSDP sharded checkpoints (torch.distributed.checkpoint) are scanned: the ``.metadata`` pickle and
every item archive of the ``*.distcp`` shards.

The folders are written by torch's own ``dcp.save`` with the structures accelerate's
``save_fsdp_model`` / ``save_fsdp_optimizer`` pass it (``{"model": state_dict}`` into
``pytorch_model_fsdp_0/``, ``{"optimizer": optim_state}`` into ``optimizer_0/``, inside a Trainer
``checkpoint-N/``). The payload tests first show that torch's own ``dcp.load`` runs the payload
(so the error is deserved), then that vlm-doctor reports it without running it.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

from doctor.cli import main  # noqa: E402
from doctor.io.pickle import dcp as dcp_reader  # noqa: E402
from doctor.io.pickle_scan import scan  # noqa: E402


class Payload:
    """Unpickling it creates the folder ``marker``: proof that a loader ran it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (self.marker,))


def fsdp_checkpoint(folder: Path, extra: dict[str, Any] | None = None, big: bool = False) -> Path:
    """A Trainer ``checkpoint-N/`` as an FSDP SHARDED_STATE_DICT run leaves it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    if big:  # a tensor whose bytes hold the end-of-central-directory marker
        with torch.no_grad():
            model[0].weight.view(-1)[:4] = torch.frombuffer(bytearray(b"PK\x05\x06" * 4), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    optim_state = opt.state_dict()
    optim_state["param_groups"][0].update(extra or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no process group": dcp.save runs single-process
        dcp.save({"model": model.state_dict()}, checkpoint_id=folder / "pytorch_model_fsdp_0")
        dcp.save({"optimizer": optim_state}, checkpoint_id=folder / "optimizer_0")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 10, "log_history": []}))
    return folder


def load_optimizer(folder: Path, keys: dict[str, Any]) -> None:
    """What resuming does with the optimizer folder (torch's reader and default planner)."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    state = opt.state_dict()
    state["param_groups"][0].update(keys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load({"optimizer": state}, checkpoint_id=folder / "optimizer_0")


def check(path: Path, tmp_path: Path) -> tuple[int, list[dict[str, Any]]]:
    out = tmp_path / "report.json"
    rc = main(["check", str(path), "--no-progress", "--select", "SEC", "--output-format", "json", "-o", str(out)])
    return rc, json.loads(out.read_text())["findings"]


def items_in_metadata(folder: Path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = dcp.FileSystemReader(str(folder)).read_metadata()
    return len(meta.storage_data)


def test_clean_fsdp_checkpoint_every_item_scanned(tmp_path: Path) -> None:
    folder = fsdp_checkpoint(tmp_path / "checkpoint-10")
    rc, findings = check(folder, tmp_path)
    assert rc == 0 and findings == []
    for sub in ("pytorch_model_fsdp_0", "optimizer_0"):
        shard = scan(folder / sub / "__0_0.distcp")
        assert shard.format == "dcp" and shard.ok and shard.issues == []
        assert shard.pickles == items_in_metadata(folder / sub)  # one data.pkl per item torch wrote
        meta = scan(folder / sub / ".metadata")
        assert meta.role == "dcp-metadata" and meta.ok and meta.issues == []
    load_optimizer(folder, {})  # the clean twin loads with torch's reader


def test_payload_in_a_non_tensor_item_is_sec001(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = fsdp_checkpoint(tmp_path / "checkpoint-10", {"note": Payload(marker)})
    load_optimizer(folder, {"note": None})
    assert marker.is_dir(), "torch.distributed.checkpoint did not run the item's pickle: the fixture is wrong"
    os.rmdir(marker)
    rc, findings = check(folder, tmp_path)
    (bad,) = findings
    assert rc == 1 and bad["code"] == "SEC001" and bad["severity"] == "error"
    assert bad["path"].endswith("optimizer_0/__0_0.distcp") and "makedirs" in bad["message"]
    assert "item at byte" in bad["message"] and "data.pkl" in bad["message"]
    assert "torch.distributed.checkpoint" in bad["hint"] and "FSDP" in bad["why"]
    assert not marker.exists()  # scanning never unpickles


def test_payload_metadata_is_sec001_and_shards_still_scanned(tmp_path: Path) -> None:
    folder = fsdp_checkpoint(tmp_path / "checkpoint-10")
    items = items_in_metadata(folder / "optimizer_0")
    marker = tmp_path / "ran"
    with (folder / "optimizer_0" / ".metadata").open("wb") as f:
        pickle.dump(Payload(marker), f)
    with pytest.raises(BaseException):  # noqa: B017 - CheckpointException, after the payload ran
        load_optimizer(folder, {})
    assert marker.is_dir()
    os.rmdir(marker)
    rc, findings = check(folder, tmp_path)
    (bad,) = findings
    assert rc == 1 and bad["code"] == "SEC001" and bad["path"].endswith("optimizer_0/.metadata")
    assert not marker.exists()
    shard = scan(folder / "optimizer_0" / "__0_0.distcp")  # metadata gone: the archives are found directly
    assert shard.pickles == items and "zip records" in shard.detail


def test_without_metadata_items_found_by_their_records(tmp_path: Path) -> None:
    folder = fsdp_checkpoint(tmp_path / "checkpoint-10", {"note": Payload(tmp_path / "ran")}, big=True)
    items = items_in_metadata(folder / "optimizer_0")
    model_items = items_in_metadata(folder / "pytorch_model_fsdp_0")
    (folder / "optimizer_0" / ".metadata").unlink()
    (folder / "pytorch_model_fsdp_0" / ".metadata").unlink()
    shard = scan(folder / "optimizer_0" / "__0_0.distcp")
    assert shard.pickles == items and not shard.ok
    assert [i.kind for i in shard.issues] == ["disallowed-global"]
    # a tensor holding the marker bytes is data, not an archive end: every real item still found
    assert scan(folder / "pytorch_model_fsdp_0" / "__0_0.distcp").pickles == model_items
    spans = dcp_reader.archive_spans(folder / "pytorch_model_fsdp_0" / "__0_0.distcp")
    assert spans[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:], strict=False))


def test_truncated_shard_is_sec004(tmp_path: Path) -> None:
    folder = fsdp_checkpoint(tmp_path / "checkpoint-10")
    shard = folder / "pytorch_model_fsdp_0" / "__0_0.distcp"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    rc, findings = check(folder, tmp_path)
    assert rc == 1 and [f["code"] for f in findings] == ["SEC004"]
    assert "past the end" in findings[0]["message"] and findings[0]["path"].endswith("__0_0.distcp")


def test_metadata_name_alone_is_not_scanned(tmp_path: Path) -> None:
    """A ``.metadata`` file with no ``*.distcp`` beside it belongs to something else: not a pickle."""
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    (folder / ".metadata").write_text("not a pickle")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 10, "log_history": []}))
    rc, findings = check(folder, tmp_path)
    assert rc == 0 and findings == []

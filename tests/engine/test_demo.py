"""The README's first command: the demo builds its workspace, catches every planted problem,
repairs and merges, and the merged models pass the sanity pass."""

from __future__ import annotations

from doctor.cli import main
from doctor.demo import PLANTED


def test_demo_end_to_end(tmp_path, capsys):
    rc = main(["demo", str(tmp_path / "ws"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "MISSED" not in out and out.count("✔") == len(PLANTED)
    ws = tmp_path / "ws"
    assert (ws / "data" / "train.fixed.json").is_file()
    assert (ws / "data" / "train.json").is_file()  # the input is untouched beside the copy
    assert (ws / "llava-original" / "llava-v1.5-tiny-lora-merged" / "config.json").is_file()
    assert (ws / "adapters" / "llava-lora-merged" / "model.safetensors").is_file()
    rows = [line.split("│") for line in out.splitlines() if line.count("│") >= 3]
    statuses = {}
    for row in rows:
        statuses.setdefault(row[0].strip(), []).append(row[1].strip())
    assert statuses["1 load"] == ["pass"] * 2 and statuses["2 forward"] == ["pass"] * 2
    assert statuses["4 image-matters"] == ["pass"] * 2
    assert statuses["5 adapter-vs-merged"][-1] == "pass"


def test_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err

"""``vlm-doctor sanity`` (table, JSON, exit codes), ``check --sanity`` through the runner, and the
shipped default image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from doctor.cli import main  # noqa: E402
from doctor.testing.models import make_llava_model  # noqa: E402


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return make_llava_model(tmp_path_factory.mktemp("cli") / "llava").path


def test_table_output_and_exit_0(llava, capsys):
    assert main(["sanity", str(llava), "--device", "cpu", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    for word in ("1 load", "2 forward", "3 generate", "4 image-matters", "5 adapter-vs-merged", "6 probe",
                 "peak mem", "rss", "OK: 4 pass, 2 skip"):
        assert word in out


def test_json_output_carries_the_stages(llava, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["sanity", str(llava), "--device", "cpu", "--output-format", "json", "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    doc = json.loads(out.read_text())
    entry = doc["sanity"]["models"][0]  # the command's section beside check's top level (docs/report.md)
    assert doc["schema_version"] == 1 and entry["ok"] is True and entry["family"] == "llava"
    assert [s["code"] for s in entry["stages"]] == [f"SAN00{n}" for n in range(1, 7)]
    stages = {c["code"]: c["status"] for c in doc["checks"] if c["code"].startswith("SAN")}
    assert sorted(stages.values()) == ["pass"] * 4 + ["skip"] * 2
    first = entry["stages"][0]
    assert first["status"] == "pass" and first["seconds"] > 0 and first["memory_kind"] == "rss"


def test_a_failed_stage_exits_1(tmp_path, capsys):
    folder = make_llava_model(tmp_path / "m", drop_tensors=("multi_modal_projector",)).path
    assert main(["sanity", str(folder), "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "SAN001" in out and "projector not loaded" in out and "FAILED" in out


@pytest.mark.parametrize("argv", [
    ["sanity", "/nonexistent/model"],
    ["sanity", "{llava}", "--load-4bit", "--load-8bit"],
    ["sanity", "{llava}", "--dtype", "fp64"],
    ["sanity", "{llava}", "--device", "tpu"],
    ["sanity", "{llava}", "--max-new-tokens", "0"],
])
def test_usage_errors_exit_2(llava, argv, capsys):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main([a.format(llava=llava) for a in argv]))
    assert e.value.code == 2


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["sanity", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--probe" in out and "exit codes" in out


def test_check_sanity_runs_the_san_checks_after_the_static_ones(llava, tmp_path):
    from doctor.runner import Options, run
    from doctor.selection import Selection

    report = run([str(llava)], Options(sanity=True, device="cpu"), Selection.from_lists(select=None, ignore=[]))
    san = {r.code: r for r in report.results if r.code.startswith("SAN")}
    assert [san[c].status.value for c in sorted(san)] == ["pass", "pass", "pass", "pass", "skip", "skip"]
    assert "no adapter" in san["SAN005"].reason
    codes = [r.code for r in report.results]
    assert codes.index("SAN001") > max(i for i, c in enumerate(codes) if c.startswith("CKP"))

    broken = make_llava_model(tmp_path / "broken", drop_tensors=("multi_modal_projector",)).path
    report = run([str(broken)], Options(sanity=True, device="cpu"), Selection.from_lists(select=None, ignore=[]))
    san1 = next(r for r in report.results if r.code == "SAN001")
    static = sorted({f.code for f in report.findings if f.severity.value == "error" and not f.code.startswith("SAN")})
    if static:  # the static checks saw the missing projector: loading is pointless, say so
        assert san1.status.value == "skip" and static[0] in san1.reason
    else:
        assert san1.status.value == "fail"


def test_san_checks_are_documented():
    from doctor.registry import iter_checks

    checks = list(iter_checks(["SAN"]))
    assert [c.code for c in checks] == [f"SAN00{n}" for n in range(1, 7)]
    for c in checks:
        assert not c.missing_sections(), (c.code, c.missing_sections())


def test_default_image_is_the_deterministic_drawing():
    from doctor.sanity.inputs import aspect_variants, default_image
    from doctor.sanity.picture import draw_default_image

    shipped = default_image()
    assert shipped.size == (336, 336)
    assert shipped.tobytes() == draw_default_image().tobytes()
    variants = aspect_variants(shipped)
    assert {k: v.size for k, v in variants.items()} == {"portrait": (168, 336), "square": (336, 336),
                                                        "landscape": (336, 168)}
    assert Path(__file__).resolve().parents[2].joinpath("doctor/data/default_image.png").stat().st_size < 10_000

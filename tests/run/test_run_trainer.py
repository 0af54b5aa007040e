"""RUN on folders written by a REAL transformers Trainer (tiny Llama + peft LoRA, CPU, a few
seconds each), and `vlm-doctor triage` on them."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("peft")
import doctor  # noqa: E402
from doctor.cli import main  # noqa: E402

from tests.helpers.run import finding_codes, only, train  # noqa: E402


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainer") / "healthy"
    train(out)
    return out


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """Every label -100: what LLaVA's 'tokenization mismatch' leaves of a batch."""
    out = tmp_path_factory.mktemp("trainer") / "masked"
    train(out, ignore_labels=True, evaluate=False, max_steps=6, save_steps=2)
    return out


def test_real_run_layout_and_record(healthy):
    assert sorted(p.name for p in healthy.iterdir()) == ["checkpoint-12", "checkpoint-3", "checkpoint-6", "checkpoint-9"]
    report = doctor.check(str(healthy), select=["RUN"])
    assert finding_codes(report) == {"RUN108", "RUN301"}, [(f.code, f.message) for f in report.findings]
    # the learning rate came from training_args.bin, read through the safe pickle scanner
    assert "learning_rate 0.05 (recipe 2e-4)" in only(report, "RUN108").message
    assert "r 8, lora_alpha 16 (scale 2" in only(report, "RUN108").message
    passed = {r.code for r in report.results if r.status.value == "pass"}
    assert {"RUN101", "RUN102", "RUN103", "RUN105", "RUN106", "RUN202", "RUN203"} <= passed


def test_real_run_recommendation_is_the_lowest_eval_loss(healthy):
    from doctor.runs.triage import analyze_run

    a = analyze_run(healthy)
    evals = {st.save.name: a.eval_loss(st) for st in a.states}
    best = min(evals, key=evals.get)
    r = a.recommendation
    assert r.keep == best and r.reasons[0].startswith("lowest eval loss")
    assert sorted(n for n, _ in r.delete) == sorted(set(evals) - {best})
    assert all(size > 50_000 for _, size in r.delete)  # adapter + optimizer state + rng state
    assert all(d is None or (not d.unchanged and d.relative > 0) for d in a.deltas.values())


def test_masked_labels_give_loss_zero_and_a_frozen_adapter(masked):
    report = doctor.check(str(masked), select=["RUN"])
    assert only(report, "RUN102").message == "training loss is exactly 0.0 at every logged step"
    assert only(report, "RUN202").message.startswith(
        "the adapter did not change from checkpoint-2 to checkpoint-6 (across 2 saves)")
    assert "none is worth keeping" in only(report, "RUN301").message


def test_triage_full_output(healthy, capsys):
    code = main(["triage", str(healthy)])
    out = capsys.readouterr().out
    assert code == 0, out
    for text in ("checkpoint-3", "checkpoint-12", "complete", "complete (keep)", "yes (resume)", "safe to delete", "eval loss",
                 "inference", "resume",
                 "adapter delta", "RUN108"):
        assert text in out


def test_triage_json_and_exit_code(masked, capsys):
    code = main(["triage", str(masked), "--output-format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["triage"]["recommendation"]["keep"] is None
    assert [s["adapter_delta"] and s["adapter_delta"]["relative"] for s in data["triage"]["saves"]] == [None, 0.0, 0.0]
    assert {f["code"] for f in data["findings"]} >= {"RUN102", "RUN202", "RUN301"}


def test_triage_plot(masked, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "loss.png"
    assert main(["triage", str(masked), "--plot", str(png), "--exit-zero"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"wrote {png}" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_clear_usage_error(masked, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["triage", str(masked), "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and "pip install 'vlm-doctor[plot]'" in err
    assert not (tmp_path / "x.png").exists()

"""RUN0xx/RUN1xx: the run's record (trainer_state.json), on run folders shaped like the Trainer's."""

from __future__ import annotations

import json
import math

import pytest

import doctor
from doctor.findings import Severity
from doctor.runs.triage import analyze_run

from tests.helpers.run import LORA_CONFIG, NAN, decreasing, finding_codes, make_run, only, write_adapter


def check(root):
    return doctor.check(str(root), select=["RUN"])


def test_healthy_run_keeps_lowest_eval_loss(tmp_path):
    make_run(tmp_path, decreasing(40), 10, evals={10: 1.9, 20: 1.5, 30: 1.31, 40: 1.36})
    report = check(tmp_path)
    assert finding_codes(report) == {"RUN301"}, [(f.code, f.message) for f in report.findings]
    rec = only(report, "RUN301")
    assert rec.severity is Severity.INFO
    assert rec.message.startswith("keep checkpoint-30 (lowest eval loss (1.31 at step 30) of 4 evaluated saves)")
    for name in ("checkpoint-10", "checkpoint-20", "checkpoint-40"):
        assert name in rec.message.split("safe to delete:")[1]
    assert rec.path == str(tmp_path / "checkpoint-30")


def test_nan_loss_points_at_first_nan_and_resume_checkpoint(tmp_path):
    losses = decreasing(40)
    losses[24:] = [NAN] * 16
    make_run(tmp_path, losses, 10)
    report = check(tmp_path)
    f = only(report, "RUN101")
    assert f.severity is Severity.ERROR
    assert "first at step 25" in f.message and "16 of 40" in f.message
    assert f.location.pointer == "/log_history/24/loss"
    assert f.path == str(tmp_path / "checkpoint-40" / "trainer_state.json")
    assert "resume from checkpoint-20" in f.hint
    rec = only(report, "RUN301")
    assert rec.message.startswith("keep checkpoint-20 (the last complete save; saves from step 25 on come after")


def test_loss_exactly_zero_is_the_tokenization_mismatch_signal(tmp_path):
    make_run(tmp_path, [0.0] * 20, 10, grad_norms=[0.0] * 20)
    report = check(tmp_path)
    f = only(report, "RUN102")
    assert f.message == "training loss is exactly 0.0 at every logged step"
    assert "tokenization mismatch" in f.why
    assert "RUN109" not in finding_codes(report)  # zero grads are explained by the zero loss
    assert "none is worth keeping" in only(report, "RUN301").message


@pytest.mark.parametrize("shape,verb", [("flat", "did not fall"), ("rising", "rose")])
def test_loss_that_never_falls(tmp_path, shape, verb):
    losses = [2.0 + 0.01 * ((i * 7) % 5) for i in range(40)] if shape == "flat" else decreasing(40, 1.0, 2.0)
    make_run(tmp_path, losses, 10)
    f = only(check(tmp_path), "RUN103")
    assert f.severity is Severity.WARNING
    assert f.message.startswith(f"training loss {verb}: median")
    assert "over steps 1-8" in f.message and "over steps 21-40" in f.message


def test_falling_loss_and_short_runs_pass(tmp_path):
    make_run(tmp_path / "a", decreasing(40), 10)
    assert "RUN103" not in finding_codes(check(tmp_path / "a"))
    make_run(tmp_path / "b", [2.0] * 6, 3)
    report = check(tmp_path / "b")
    assert "RUN103" not in finding_codes(report)
    assert any(r.code == "RUN103" and r.status.value == "skip" for r in report.results)


def test_spikes_recovered_and_not(tmp_path):
    losses = decreasing(40, noise=0.02)
    losses[29] = 9.0
    make_run(tmp_path / "recovered", losses, 10)
    f = only(check(tmp_path / "recovered"), "RUN104")
    assert f.severity is Severity.INFO and "9 at step 30" in f.message and "recovered" in f.message
    stuck = decreasing(40, noise=0.02)
    stuck[29:] = [6.0 + 0.01 * i for i in range(11)]
    make_run(tmp_path / "stuck", stuck, 10)
    f = only(check(tmp_path / "stuck"), "RUN104")
    assert f.severity is Severity.WARNING and "did not recover" in f.message
    assert "resume from checkpoint-20" in f.hint


def test_noisy_loss_is_not_a_spike(tmp_path):
    rng = [1.5, 0.6, 2.4, 1.0, 1.9, 0.7, 2.2, 1.2] * 5  # per-sample losses with logging_steps=1
    make_run(tmp_path, rng, 10)
    assert "RUN104" not in finding_codes(check(tmp_path))


def test_learning_rate_zero_and_frozen_adapter(tmp_path):
    make_run(tmp_path, [2.0] * 30, 10, lrs=[0.0] * 30, frozen_after=10)
    report = check(tmp_path)
    assert only(report, "RUN106").message == "learning_rate is 0 at all 30 logged steps"
    f = only(report, "RUN202")
    assert f.message == ("the adapter did not change from checkpoint-10 to checkpoint-30 (across 2 saves): "
                         "all 8 LoRA tensors compared")


def test_first_logged_lr_zero_is_normal_warmup(tmp_path):
    lrs = [0.0] + [2e-4] * 19
    make_run(tmp_path, decreasing(20), 10, lrs=lrs)
    assert not finding_codes(check(tmp_path)) & {"RUN106", "RUN107"}


def test_warmup_that_lasts_the_whole_run(tmp_path):
    lrs = [2e-4 * (i + 1) / 60 for i in range(40)]  # warmup_steps 60, max_steps 40
    make_run(tmp_path, decreasing(40), 10, lrs=lrs)
    f = only(check(tmp_path), "RUN107")
    assert "warmup lasted the whole run" in f.message and "(40 of 40)" in f.message


def test_unfinished_run_is_not_judged_on_warmup(tmp_path):
    lrs = [2e-4 * (i + 1) / 60 for i in range(20)]
    make_run(tmp_path, decreasing(30), 10, lrs=lrs + [lrs[-1]] * 10, max_steps=200,
             evals={10: 1.2, 20: 1.5, 30: 1.6})
    report = check(tmp_path)
    assert "RUN107" not in finding_codes(report)
    rec = only(report, "RUN301")
    assert rec.message.startswith("keep checkpoint-10 (lowest eval loss")
    assert "safe to delete: checkpoint-20 (" in rec.message
    assert [n for n, _ in analyze_run(tmp_path).recommendation.delete] == ["checkpoint-20"]
    assert "resume training from checkpoint-30 (the newest save" in rec.message  # it holds the optimizer state


def test_grad_norm_inf_at_start_is_a_warning_persistent_nan_an_error(tmp_path):
    gn = [math.inf, math.inf] + [1.0] * 38
    make_run(tmp_path / "fp16", decreasing(40), 10, grad_norms=gn)
    f = only(check(tmp_path / "fp16"), "RUN105")
    assert f.severity is Severity.WARNING and "fp16 loss scaling" in f.message
    gn = [1.0] * 30 + [NAN] * 10
    make_run(tmp_path / "nan", decreasing(40), 10, grad_norms=gn)
    f = only(check(tmp_path / "nan"), "RUN105")
    assert f.severity is Severity.ERROR and f.location.pointer == "/log_history/30/grad_norm"


def test_grad_norm_zero_with_a_real_loss(tmp_path):
    make_run(tmp_path, [2.1] * 20, 10, grad_norms=[0.0] * 20)
    f = only(check(tmp_path), "RUN109")
    assert "enable_input_require_grads" in f.hint


def test_unreadable_state_is_reported_and_others_still_used(tmp_path):
    make_run(tmp_path, decreasing(30), 10)
    broken = tmp_path / "checkpoint-30" / "trainer_state.json"
    broken.write_text(broken.read_text()[:200])
    report = check(tmp_path)
    assert "RUN001" not in finding_codes(report)  # the newest save's: resuming from it raises (one finding)
    f = only(report, "RUN205")
    assert f.path == str(broken) and "not valid JSON" in f.message and "load_from_json raises" in f.message
    assert only(report, "RUN301").message.startswith("keep checkpoint-30")
    older = tmp_path / "checkpoint-20" / "trainer_state.json"
    broken.write_text(older.read_text().replace('"global_step": 20', '"global_step": 30'))
    older.write_text(older.read_text()[:200])
    report = check(tmp_path)
    assert not finding_codes(report) & {"RUN001", "RUN205"}  # the record comes from checkpoint-30
    a = analyze_run(tmp_path)
    assert a.resume["checkpoint-20"].raises[0][0] == "trainer_state.json"  # its verdict shows it
    assert a.recommendation.resume_from == "checkpoint-30"


def test_recipe_info_only_when_different(tmp_path):
    make_run(tmp_path / "recipe", decreasing(20), 10)
    assert "RUN108" not in finding_codes(check(tmp_path / "recipe"))
    make_run(tmp_path / "weak", decreasing(20), 10, lrs=[2e-5] * 20)
    for ckpt in (tmp_path / "weak").iterdir():
        write_adapter(ckpt, None, {**LORA_CONFIG, "r": 64, "lora_alpha": 16})
    f = only(check(tmp_path / "weak"), "RUN108")
    assert f.severity is Severity.INFO
    assert "r 64, lora_alpha 16 (scale 0.25" in f.message and "peak logged learning rate 2e-05" in f.message


def test_trainer_state_with_nan_is_python_json(tmp_path):
    make_run(tmp_path, [1.0, NAN, 1.0], 3)
    text = (tmp_path / "checkpoint-3" / "trainer_state.json").read_text()
    assert '"loss": NaN' in text  # what TrainerState.save_to_json writes
    assert math.isnan(json.loads(text)["log_history"][1]["loss"])

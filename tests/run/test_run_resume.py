"""RUN205-RUN207 and the resume advice, on REAL Trainer runs (tiny models, CPU, 2-4 steps), each
prediction confirmed by an actual ``trainer.train(resume_from_checkpoint=...)``."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("peft")
import doctor  # noqa: E402
from doctor.findings import Severity  # noqa: E402
from doctor.runs.triage import analyze_run  # noqa: E402

from tests.helpers.run import finding_codes, only, optimizer_steps, resume, tiny_full_model, train, train_full  # noqa: E402

RESUME_CODES = {"RUN205", "RUN206", "RUN207"}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """checkpoint-2 and checkpoint-4 of a 4-step LoRA run (2 steps per epoch)."""
    out = tmp_path_factory.mktemp("resume") / "lora"
    train(out, max_steps=4, save_steps=2, evaluate=False)
    return out


def copy_without(run, tmp_path, *names, truncate=()):
    root = tmp_path / run.name
    shutil.copytree(run, root)
    for n in names:
        (root / "checkpoint-4" / n).unlink()
    for n in truncate:
        p = root / "checkpoint-4" / n
        p.write_bytes(p.read_bytes()[:100])
    return root


def codes(root):
    return finding_codes(doctor.check(str(root), select=["RUN"])) & RESUME_CODES


def test_intact_run_resumes_everything(lora_run, tmp_path):
    import torch

    root = copy_without(lora_run, tmp_path)
    a = analyze_run(root)
    assert {n: r.verdict for n, r in a.resume.items()} == {"checkpoint-2": "yes", "checkpoint-4": "yes"}
    assert codes(root) == set()
    r = a.recommendation
    assert (r.keep, r.resume_from) == ("checkpoint-4", "checkpoint-4")
    assert [n for n, _ in r.delete] == ["checkpoint-2"]
    trainer, error, rng = resume(root / "checkpoint-4", tmp_path / "r", max_steps=5)
    assert error is None
    assert optimizer_steps(trainer) == {5} and trainer.lr_scheduler.last_epoch == 5  # 4 restored + 1
    assert rng == torch.load(root / "checkpoint-4" / "rng_state.pth", weights_only=False)["python"]


def test_without_trainer_state_resume_raises(lora_run, tmp_path):
    root = copy_without(lora_run, tmp_path, "trainer_state.json")
    report = doctor.check(str(root), select=["RUN"])
    f = only(report, "RUN205")
    assert f.severity is Severity.ERROR
    assert f.message.startswith("checkpoint-4 (the newest save) cannot be resumed: trainer_state.json: absent")
    assert f.path == str(root / "checkpoint-4" / "trainer_state.json")
    assert f.hint.startswith("Resume from checkpoint-2 instead") and str(root / "checkpoint-2") in f.hint
    assert "RUN206" not in finding_codes(report)
    r = analyze_run(root).recommendation
    assert r.resume_from == "checkpoint-2" and r.delete == []  # the only resumable save and the newest weights
    assert "resume training from checkpoint-2" in " ".join(r.notes)
    _, error, _ = resume(root / "checkpoint-4", tmp_path / "r", max_steps=5)
    assert isinstance(error, FileNotFoundError) and "trainer_state.json" in str(error)
    trainer, error, _ = resume(root / "checkpoint-2", tmp_path / "r2", max_steps=3)
    assert error is None and optimizer_steps(trainer) == {3}  # the advised save resumes intact


@pytest.mark.parametrize("missing", ["optimizer.pt", "scheduler.pt"])
def test_without_optimizer_or_scheduler_both_restart(lora_run, tmp_path, missing):
    root = copy_without(lora_run, tmp_path, missing)
    report = doctor.check(str(root), select=["RUN"])
    f = only(report, "RUN206")
    assert f.severity is Severity.WARNING and "RUN205" not in finding_codes(report)
    assert f.message.startswith("resuming from checkpoint-4 (the newest save) restarts its optimizer state and "
                                f"learning-rate schedule: {missing} absent")
    assert f.hint.startswith("Resume from checkpoint-2 instead")
    r = analyze_run(root).recommendation
    assert r.resume_from == "checkpoint-2" and "checkpoint-2" not in [n for n, _ in r.delete]
    assert any(n.startswith("checkpoint-4 (the newest save) resumes without its optimizer state") for n in r.notes)
    trainer, error, _ = resume(root / "checkpoint-4", tmp_path / "r", max_steps=5)
    assert error is None
    # both restarted, even the one that was there: Adam counts 1 step, the schedule is back in its warmup
    assert optimizer_steps(trainer) == {1} and trainer.lr_scheduler.last_epoch == 1
    assert trainer.state.log_history[0]["learning_rate"] == 0.0


def test_without_rng_state_randomness_restarts(lora_run, tmp_path):
    import torch

    root = copy_without(lora_run, tmp_path, "rng_state.pth")
    f = only(doctor.check(str(root), select=["RUN"]), "RUN206")
    assert "restarts its RNG state: rng_state.pth absent" in f.message
    assert analyze_run(root).recommendation.resume_from == "checkpoint-2"
    trainer, error, rng = resume(root / "checkpoint-4", tmp_path / "r", max_steps=5)
    assert error is None and optimizer_steps(trainer) == {5}  # the rest was restored
    saved = torch.load(lora_run / "checkpoint-4" / "rng_state.pth", weights_only=False)["python"]
    assert rng is not None and rng != saved


def test_truncated_optimizer_raises(lora_run, tmp_path):
    root = copy_without(lora_run, tmp_path, truncate=["optimizer.pt"])
    f = only(doctor.check(str(root), select=["RUN"]), "RUN205")
    assert "optimizer.pt: not a readable torch file" in f.message
    assert analyze_run(root).recommendation.resume_from == "checkpoint-2"
    _, error, _ = resume(root / "checkpoint-4", tmp_path / "r", max_steps=5)
    assert error is not None and "optimizer.pt" not in str(type(error))


@pytest.fixture(scope="module")
def llava_full(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "llava-full"
    train_full(out, "llava", max_steps=2, save_steps=1)
    return out


@pytest.fixture(scope="module")
def llama_full(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "llama-full"
    train_full(out, "llama", max_steps=2, save_steps=1)
    return out


def test_full_llava_resume_drops_every_weight(llava_full, tmp_path):
    import torch
    from safetensors.torch import load_file

    report = doctor.check(str(llava_full), select=["RUN"])
    f = only(report, "RUN207")
    assert f.severity is Severity.ERROR
    total = len(load_file(llava_full / "checkpoint-2" / "model.safetensors"))
    assert f.message.startswith(f"checkpoint-1, checkpoint-2: the Trainer's resume would drop {total} of {total} "
                                "tensors of model.safetensors (LlavaForConditionalGeneration has no tensor named like")
    assert f"with {total} weights left at the base model" in f.message
    assert f.path == str(llava_full / "checkpoint-2" / "model.safetensors")
    a = analyze_run(llava_full)
    assert a.resume["checkpoint-2"].verdict == "yes"  # files only: the names need the model (torch)
    assert a.check_weights()["checkpoint-2"].verdict == "no (drops weights)"
    assert [st.usable for st in a.states] == [True, True]  # from_pretrained loads it: fine for inference
    r = a.recommendation
    assert r.keep == "checkpoint-2" and r.resume_from is None
    assert "checkpoint-2" not in [n for n, _ in r.delete]
    assert "no earlier save resumes intact" in " ".join(r.notes)
    base = {k: v.clone() for k, v in tiny_full_model("llava").state_dict().items()}
    trainer, error, _ = resume(llava_full / "checkpoint-2", tmp_path / "r", max_steps=2, model=tiny_full_model("llava"))
    assert error is None  # no exception: the weights are silently the base model's
    now = trainer.model.state_dict()
    assert all(torch.equal(now[k], base[k]) for k in now)


def test_full_llama_resume_loads_the_weights(llama_full, tmp_path):
    import torch
    from safetensors.torch import load_file

    assert codes(llama_full) == set()
    assert "RUN108" not in finding_codes(doctor.check(str(llama_full), select=["RUN"]))  # no LoRA recipe to compare
    a = analyze_run(llama_full)
    assert a.check_weights()["checkpoint-2"].resumable and a.resume["checkpoint-2"].dropped.count == 0
    assert a.recommendation.resume_from == "checkpoint-2"
    saved = load_file(llama_full / "checkpoint-2" / "model.safetensors")
    trainer, error, _ = resume(llama_full / "checkpoint-2", tmp_path / "r", max_steps=2, model=tiny_full_model("llama"))
    assert error is None
    now = trainer.model.state_dict()
    assert all(torch.equal(now[k], saved[k]) for k in saved)


def test_triage_table_and_json_show_both_verdicts(lora_run, tmp_path, capsys):
    import json

    from doctor.cli import main

    root = copy_without(lora_run, tmp_path, "scheduler.pt")
    main(["triage", str(root), "--exit-zero"])
    out = capsys.readouterr().out
    assert "inference" in out and "resume" in out and "restarts optimizer" in out
    main(["triage", str(root), "--output-format", "json", "--exit-zero"])
    data = json.loads(capsys.readouterr().out)["triage"]
    rows = {s["name"]: s for s in data["saves"]}
    assert (rows["checkpoint-4"]["usable"], rows["checkpoint-4"]["resumable"]) == (True, False)
    assert rows["checkpoint-4"]["resume"]["lost"][0]["state"] == "optimizer state and learning-rate schedule"
    assert (rows["checkpoint-2"]["usable"], rows["checkpoint-2"]["resumable"]) == (True, True)
    assert data["recommendation"]["resume_from"] == "checkpoint-2"

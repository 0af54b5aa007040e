"""The deletion advice, the riskiest thing triage prints, over every combination of missing or
broken files across a run's saves (property-based), and the resume rules the real-Trainer tests
cannot run here (DeepSpeed, several ranks, fp16 scaler), on folders shaped like those saves."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import doctor
from doctor.runs.triage import analyze_run

from tests.helpers.run import (
    TRAINING_STATE,
    decreasing,
    finding_codes,
    history,
    lora_tensors,
    make_run,
    only,
    write_adapter,
    write_state,
    write_torch_file,
)

FILES = ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", *TRAINING_STATE)


def build(root: Path, saves: list[tuple[frozenset[str], bool]], evals: bool, nan_from: int | None,
          unfinished: bool, final: bool) -> list[int]:
    """checkpoint-2, -4, ... each lacking its ``missing`` files (and with a truncated optimizer.pt
    when asked); returns the steps."""
    steps = [2 * (i + 1) for i in range(len(saves))]
    total = steps[-1]
    losses = decreasing(total, seed=len(saves))
    if nan_from is not None:
        losses = [math.nan if i + 1 >= nan_from else v for i, v in enumerate(losses)]
    log = history(losses, evals={s: 2.0 - 0.1 * s + (0.3 if s == 4 else 0) for s in steps} if evals else None)
    max_steps = total * 2 if unfinished else total
    for step, (missing, truncated) in zip(steps, saves, strict=True):
        folder = root / f"checkpoint-{step}"
        write_adapter(folder, lora_tensors(step, r=4))
        write_state(folder, [e for e in log if e["step"] <= step], step, max_steps)
        for name in TRAINING_STATE:
            write_torch_file(folder / name)
        if truncated:
            (folder / "optimizer.pt").write_bytes(b"PK\x03\x04")
        for name in missing:
            (folder / name).unlink()
    if final:
        write_adapter(root, lora_tensors(total, r=4))
    return steps


def usable(folder: Path) -> bool:
    return (folder / "adapter_model.safetensors").exists() and (folder / "adapter_config.json").exists()


def resumable(folder: Path) -> bool:
    """The Trainer's resume, restated independently: weights + adapter config, trainer_state.json,
    optimizer.pt (readable) + scheduler.pt, rng_state.pth."""
    opt = folder / "optimizer.pt"
    return usable(folder) and all((folder / n).exists() for n in FILES) and opt.stat().st_size > 4


save_strategy = st.tuples(st.frozensets(st.sampled_from(FILES), max_size=3), st.booleans())  # (missing, truncated)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(saves=st.lists(save_strategy, min_size=1, max_size=4), evals=st.booleans(),
       nan_from=st.one_of(st.none(), st.integers(1, 8)), unfinished=st.booleans(), final=st.booleans())
def test_never_advise_deleting_what_is_needed(saves, evals, nan_from, unfinished, final):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        steps = build(root, saves, evals, nan_from, unfinished, final)
        a = analyze_run(root)
        r = a.recommendation
        deleted = {n for n, _ in r.delete}
        ckpts = [f"checkpoint-{s}" for s in steps]
        can_use = [n for n in ckpts if usable(root / n)] + (["final"] if final else [])
        can_resume = [n for n in ckpts if resumable(root / n)]

        # the verdicts agree with the resume rules restated above
        assert {n: a.resume[n].resumable for n in ckpts} == {n: n in can_resume for n in ckpts}
        assert {st_.save.name: st_.usable for st_ in a.states} == {n: n in can_use for n in [*ckpts, *(["final"] if final else [])]}
        # only checkpoint-N folders are ever offered, never the final output
        assert deleted <= set(ckpts)
        # the newest save, usable and resumable, is never offered
        newest = ckpts[-1]
        if newest in can_use and newest in can_resume:
            assert newest not in deleted
        # never the only (or newest) resumable save, and the advised one resumes
        if can_resume:
            assert can_resume[-1] not in deleted
            assert r.resume_from in can_resume
        else:
            assert r.resume_from is None
        # never every usable save; the kept one is usable
        if can_use:
            assert set(can_use) - deleted
        if r.keep is not None:
            assert r.keep in can_use and r.keep not in deleted
        if r.resume_from is not None:
            assert r.resume_from not in deleted
        # when the newest save does not resume, the advice says which one does and which is for inference
        if newest not in can_resume:
            text = " ".join(r.notes)
            assert f"{newest} (the newest save)" in text
            if r.resume_from is not None:
                assert f"resume training from {r.resume_from}" in text or f"resuming from {r.resume_from}" in text
            if r.keep is not None and r.keep != r.resume_from:
                assert f"for inference use {a.layout.by_name(r.keep).label}" in text


def test_findings_only_for_the_newest_save(tmp_path):
    make_run(tmp_path, decreasing(30), 10)
    (tmp_path / "checkpoint-10" / "optimizer.pt").unlink()  # an old save: its verdict shows, no finding
    a = analyze_run(tmp_path)
    assert a.resume["checkpoint-10"].verdict == "restarts optimizer"
    assert not finding_codes(doctor.check(str(tmp_path), select=["RUN"])) & {"RUN205", "RUN206", "RUN207"}


def test_no_resumable_save_at_all(tmp_path):
    make_run(tmp_path, decreasing(20), 10, training_state=())  # save_only_model=True writes no state
    f = only(doctor.check(str(tmp_path), select=["RUN"]), "RUN206")
    assert "optimizer state and learning-rate schedule and RNG state" in f.message
    assert f.hint.startswith("No earlier save of this run resumes intact either: resume from checkpoint-20 knowing")
    r = analyze_run(tmp_path).recommendation
    assert r.resume_from is None and r.keep == "checkpoint-20" and [n for n, _ in r.delete] == ["checkpoint-10"]


def test_fp16_scaler_written_by_earlier_saves(tmp_path):
    make_run(tmp_path, decreasing(30), 10, training_state=(*TRAINING_STATE, "scaler.pt"))
    (tmp_path / "checkpoint-30" / "scaler.pt").unlink()
    f = only(doctor.check(str(tmp_path), select=["RUN"]), "RUN206")
    assert "restarts its fp16 loss scale (scaler.pt)" in f.message and "checkpoint-20" in f.hint


def test_scaler_never_written_is_not_expected(tmp_path):
    make_run(tmp_path, decreasing(30), 10)  # bf16 / fp32 runs (and 4.x Trainers) write no scaler.pt
    assert analyze_run(tmp_path).resume["checkpoint-30"].resumable


def test_rng_state_of_every_rank(tmp_path):
    make_run(tmp_path, decreasing(30), 10, training_state=("optimizer.pt", "scheduler.pt", "rng_state_0.pth",
                                                            "rng_state_1.pth"))
    (tmp_path / "checkpoint-30" / "rng_state_1.pth").unlink()
    f = only(doctor.check(str(tmp_path), select=["RUN"]), "RUN206")
    assert "RNG state: rng_state_1.pth absent" in f.message
    assert analyze_run(tmp_path).resume["checkpoint-20"].resumable


def deepspeed_run(root: Path, latest: bool = True, optim: bool = True, scheduler: bool = True) -> None:
    make_run(root, decreasing(20), 10, training_state=("rng_state_0.pth", "rng_state_1.pth"))
    for step in (10, 20):
        folder = root / f"checkpoint-{step}"
        tag = folder / f"global_step{step}"
        tag.mkdir()
        write_torch_file(tag / "mp_rank_00_model_states.pt")
        if optim or step == 10:
            write_torch_file(tag / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
        if latest or step == 10:
            (folder / "latest").write_text(f"global_step{step}")
        if scheduler or step == 10:
            write_torch_file(folder / "scheduler.pt")


def test_deepspeed_save_resumes_from_its_shards(tmp_path):
    deepspeed_run(tmp_path)
    a = analyze_run(tmp_path)
    assert a.resume["checkpoint-20"].engine == "deepspeed" and a.resume["checkpoint-20"].resumable
    assert not finding_codes(doctor.check(str(tmp_path), select=["RUN"])) & {"RUN205", "RUN206"}


@pytest.mark.parametrize("broken,expected", [
    ({"latest": False}, "latest: absent: DeepSpeed's load_checkpoint finds no tag"),
    ({"optim": False}, "global_step20/*optim_states.pt: absent"),
    ({"scheduler": False}, "scheduler.pt: absent while earlier saves have it"),
])
def test_deepspeed_resume_raises(tmp_path, broken, expected):
    deepspeed_run(tmp_path, **broken)
    f = only(doctor.check(str(tmp_path), select=["RUN"]), "RUN205")
    assert expected in f.message and f.hint.startswith("Resume from checkpoint-10 instead")
    assert Path(f.path).exists() and Path(f.path).parent.name in ("checkpoint-20", "global_step20") or \
        f.path == str(tmp_path / "checkpoint-20" / expected.split(":")[0])
    assert analyze_run(tmp_path).recommendation.resume_from == "checkpoint-10"


def test_final_output_is_not_judged_for_resuming(tmp_path):
    make_run(tmp_path, decreasing(20), 10)
    write_adapter(tmp_path, lora_tensors(20))
    write_state(tmp_path, history(decreasing(20)), 20, 20)  # trainer.save_state() at the end
    a = analyze_run(tmp_path)
    assert a.resume["final"].verdict == "-" and a.resume["final"].to_dict()["resumable"] is None
    assert a.recommendation.resume_from == "checkpoint-20"


def test_only_save_without_state_file(tmp_path):
    make_run(tmp_path, decreasing(10), 10)
    (tmp_path / "checkpoint-10" / "trainer_state.json").unlink()
    f = only(doctor.check(str(tmp_path), select=["RUN"]), "RUN205")
    assert f.hint.startswith("No earlier save of this run resumes intact either: restore the file")
    r = analyze_run(tmp_path).recommendation
    assert (r.keep, r.resume_from, r.delete) == ("checkpoint-10", None, [])


def test_every_resumable_save_after_the_loss_broke(tmp_path):
    make_run(tmp_path, decreasing(10) + [math.nan] * 20, 10)
    (tmp_path / "checkpoint-10" / "optimizer.pt").unlink()  # the one healthy save does not resume
    (tmp_path / "checkpoint-30" / "scheduler.pt").unlink()
    r = analyze_run(tmp_path).recommendation
    assert (r.keep, r.resume_from) == ("checkpoint-10", "checkpoint-20")
    assert [n for n, _ in r.delete] == ["checkpoint-30"]  # NaN weights, and it does not resume intact
    text = " ".join(r.notes)
    assert text.startswith("checkpoint-30 (the newest save) resumes without its optimizer state")
    assert "resuming from checkpoint-20 continues the broken run" in text

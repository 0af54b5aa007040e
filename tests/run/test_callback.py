"""DoctorCallback inside a REAL transformers Trainer (tiny Llama + peft LoRA on CPU)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

pytest.importorskip("peft")
from doctor.report import ChecksFailed  # noqa: E402

from tests.helpers.run import NAN, decreasing, make_run, train  # noqa: E402

BROKEN_LLAVA_JSON = """[
  {"id": "000001", "image": "coco/000001.jpg",
   "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"}, {"from": "gpt", "value": "A cat."}]},
]"""  # the trailing comma of LLaVA's docs/Finetune_Custom_Data.md sample: json.load raises


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def vlm_log():
    logger = logging.getLogger("transformers.vlm_doctor")
    handler = Collect()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_importing_the_package_does_not_import_transformers():
    code = "import sys, doctor.integrations; assert 'transformers' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_broken_dataset_stops_training_before_the_first_step(tmp_path):
    pytest.importorskip("doctor.checks.dataset")
    from doctor.integrations import DoctorCallback

    data = tmp_path / "llava_mix.json"
    data.write_text(BROKEN_LLAVA_JSON)
    cb = DoctorCallback(dataset=str(data))
    with pytest.raises(ChecksFailed) as e:
        train(tmp_path / "out", callbacks=[cb], evaluate=False)
    assert str(data) in str(e.value) and "stopped training before the first step" in str(e.value)
    assert any(f.path.startswith(str(data)) and f.code.startswith("DAT") for f in e.value.blocking)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("checkpoint-*"))


def test_resuming_into_a_run_whose_loss_went_nan_is_stopped(tmp_path):
    from doctor.integrations import DoctorCallback

    losses = decreasing(20)
    losses[12:] = [NAN] * 8
    make_run(tmp_path / "out", losses, 10)
    trainer_box = {}

    class Keep(DoctorCallback):
        def on_train_begin(self, args, state, control, **kw):
            trainer_box["state"] = state
            return super().on_train_begin(args, state, control, **kw)

    with pytest.raises(ChecksFailed) as e:
        train(tmp_path / "out", callbacks=[Keep()], evaluate=False)
    assert trainer_box["state"].global_step == 0
    assert [f.code for f in e.value.blocking] == ["RUN101"]


def test_without_raising_the_run_stops_after_one_step(tmp_path, vlm_log):
    from doctor.integrations import DoctorCallback

    losses = decreasing(20)
    losses[12:] = [NAN] * 8
    make_run(tmp_path / "out", losses, 10)
    cb = DoctorCallback(raise_on_error=False, check_saves=False)
    trainer = train(tmp_path / "out", callbacks=[cb], evaluate=False, max_steps=12, save_steps=100)
    # transformers reads should_training_stop only after a step: one step runs, nothing is saved
    assert trainer.state.global_step == 1
    assert {p.name for p in (tmp_path / "out").glob("checkpoint-*")} == {"checkpoint-10", "checkpoint-20"}
    assert any("RUN101" in m for m in vlm_log.messages)
    assert any("stopping the run" in m for m in vlm_log.messages)


def test_live_peft_config_and_model_config_are_checked_without_false_alarms(tmp_path):
    from doctor.integrations import DoctorCallback

    cb = DoctorCallback(check_saves=False)
    train(tmp_path / "out", callbacks=[cb], evaluate=False, max_steps=2, save_steps=100)
    report = cb.begin_report
    # the live peft_config and the in-memory model's config.json, written to a temp folder
    assert sorted(a.kind for a in report.artifacts) == ["adapter", "model"]
    assert not [f for f in report.findings if f.code[:3] in ("ADP", "CKP") and f.severity.value != "info"], \
        [(f.code, f.message) for f in report.findings]


def test_tokenizer_larger_than_the_embedding_stops_training(tmp_path):
    from transformers import AutoTokenizer

    from doctor.integrations import DoctorCallback
    from doctor.testing.tokenizer import make_tokenizer

    make_tokenizer(tmp_path / "tok", vocab_size=300)  # + <image> and <pad>: 302 tokens
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    with pytest.raises(ChecksFailed) as e:  # the model's embedding has 300 rows: tokens added, never resized
        train(tmp_path / "out", callbacks=[DoctorCallback()], evaluate=False, processing_class=tokenizer, vocab=300)
    assert {f.code[:3] for f in e.value.blocking} == {"CKP"}, [(f.code, f.message) for f in e.value.blocking]
    assert any("302" in f.message for f in e.value.blocking)
    assert {f.path.split("/")[0] for f in e.value.blocking} == {"<in-memory model>"}  # not a temp folder


def test_saves_are_checked_in_the_background(tmp_path, vlm_log):
    from doctor.integrations import DoctorCallback

    cb = DoctorCallback(check_saves=True)
    train(tmp_path / "out", callbacks=[cb], evaluate=False, lr=0.0, max_steps=6, save_steps=2)
    codes = {f["code"] for f in cb.save_findings}
    assert {"RUN106", "RUN202"} <= codes, cb.save_findings
    assert "RUN301" not in codes  # the recommendation changes with every save: not repeated
    assert len(cb.save_findings) == len({(f["code"], f["path"], f["message"]) for f in cb.save_findings})
    assert any("RUN106 learning-rate-zero" in m for m in vlm_log.messages)

"""RUN2xx/RUN3xx: the run's saves, on folders shaped like LLaVA, DeepSpeed and FSDP outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import doctor
from doctor.artifacts import discover
from doctor.findings import Severity
from doctor.runs.tensors import delta, read_tensor
from doctor.runs.tensors import lora_tensors as header_lora
from doctor.runs.triage import analyze_run
from doctor.testing.original import make_llava_original_lora

from tests.helpers.run import decreasing, finding_codes, lora_tensors, make_run, only, write_adapter, write_state

NEW_ZERO_TO_FP32 = '''if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir", type=str)
    parser.add_argument("output_dir", type=str)
    parser.add_argument("--safe_serialization", default=False, action='store_true')
    parser.add_argument("--exclude_frozen_parameters", action='store_true')
'''
OLD_ZERO_TO_FP32 = '''if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir", type=str)
    parser.add_argument("output_file", type=str)
'''


def check(root, **kw):
    return doctor.check(str(root), select=["RUN"], **kw)


@pytest.fixture(scope="module")
def llava_run(tmp_path_factory):
    """finetune_lora.sh's output_dir: checkpoint-N/ with the adapter only, the final output (config.json,
    adapter, non_lora_trainables.bin) at the top, written by the test factory."""
    root = tmp_path_factory.mktemp("llava") / "llava-v1.5-7b-lora"
    make_llava_original_lora(root.parent, folder_name=root.name)
    make_run(root, decreasing(20), 10)
    write_state(root, json.loads((root / "checkpoint-20" / "trainer_state.json").read_text())["log_history"], 20, 20)
    (root / "checkpoint-20" / "global_step20").mkdir()
    return root


def test_llava_intermediate_checkpoints_lack_config_and_projector(llava_run):
    assert discover([str(llava_run)])[0].kinds >= {"run", "adapter", "llava-lora"}
    report = check(llava_run)
    f = only(report, "RUN201")
    assert f.severity is Severity.WARNING  # the final output holds both: LLaVA's way of saving
    assert f.message.startswith("checkpoint-10, checkpoint-20 lack config.json and non_lora_trainables.bin")
    assert f.hint.startswith(f"Copy {llava_run / 'config.json'} (written by this run at its end)")
    assert "get_fp32_state_dict_from_zero_checkpoint" in f.hint and str(llava_run / "checkpoint-20") in f.hint
    assert f"{llava_run / 'non_lora_trainables.bin'}: the projector at the end of training" in f.hint
    rec = only(report, "RUN301")
    assert rec.message.startswith(f"keep the final output in {llava_run.name}/ (the last complete save)")
    assert "checkpoint-10 (" in rec.message and "checkpoint-20 (" in rec.message


def test_llava_run_whose_projector_no_save_holds(llava_run, tmp_path):
    import shutil

    root = tmp_path / "run"
    shutil.copytree(llava_run, root)
    (root / "non_lora_trainables.bin").unlink()
    f = only(check(root), "RUN201")
    assert f.severity is Severity.ERROR and "no save of this run holds them yet" in f.message


def test_triage_table_marks_extras(llava_run):
    a = analyze_run(llava_run)
    assert [(st.save.name, st.status) for st in a.states] == [
        ("checkpoint-10", "needs LLaVA extras"), ("checkpoint-20", "needs LLaVA extras"), ("final", "complete")]
    assert a.recommendation.keep == "final"


@pytest.mark.parametrize("script,expected", [
    (NEW_ZERO_TO_FP32, "python zero_to_fp32.py . {ckpt}-fp32 --safe_serialization --exclude_frozen_parameters"),
    (OLD_ZERO_TO_FP32, "python zero_to_fp32.py . {ckpt}-fp32.bin"),
])
def test_zero3_empty_tensors_with_recovery_command(tmp_path, script, expected):
    make_run(tmp_path, decreasing(20), 10)
    ckpt = tmp_path / "checkpoint-20"
    write_adapter(ckpt, lora_tensors(0, empty=True))
    (ckpt / "global_step20").mkdir()
    (ckpt / "global_step20" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"\0" * 64)
    (ckpt / "latest").write_text("global_step20")
    (ckpt / "zero_to_fp32.py").write_text(script)
    report = check(tmp_path)
    f = only(report, "RUN203")
    assert f.message.startswith("checkpoint-20: 8 tensor(s) with 0 elements")
    assert f.location.tensor == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert f"cd {ckpt} && " + expected.format(ckpt=ckpt) in f.hint
    assert "lora_" in f.hint and "stage3_gather_16bit_weights_on_model_save" in f.hint
    assert only(report, "RUN301").message.startswith("keep checkpoint-10")


def test_zero3_checkpoint_folder_itself_leaves_its_adapter_to_adp(tmp_path):
    make_run(tmp_path, decreasing(10), 10)
    ckpt = tmp_path / "checkpoint-10"
    write_adapter(ckpt, lora_tensors(0, empty=True))
    (ckpt / "global_step10").mkdir()
    art = discover([str(ckpt)])[0]
    assert art.kinds >= {"run", "adapter"}
    assert "RUN203" not in finding_codes(check(ckpt))  # ADP015 reports the empty tensors of this adapter


def test_empty_bin_adapter_and_unrecoverable_save(tmp_path):
    torch = pytest.importorskip("torch")
    make_run(tmp_path, decreasing(20), 10)
    ckpt = tmp_path / "checkpoint-20"
    (ckpt / "adapter_model.safetensors").unlink()
    torch.save({}, ckpt / "adapter_model.bin")  # peft's save under ZeRO-3 with an empty state dict
    f = only(check(tmp_path), "RUN203")
    assert f.message == "checkpoint-20: adapter_model.bin holds no tensor data"
    assert f.hint.startswith("This save cannot be recovered")


def test_deepspeed_only_save(tmp_path):
    make_run(tmp_path, decreasing(20), 10)
    ckpt = tmp_path / "checkpoint-20"
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (ckpt / name).unlink()
    (ckpt / "global_step20").mkdir()
    f = only(check(tmp_path), "RUN203")
    assert "only DeepSpeed shards (global_step20)" in f.message
    assert "get_fp32_state_dict_from_zero_checkpoint" in f.hint


def test_unfolded_lora_from_zero_to_fp32(tmp_path):
    from safetensors.numpy import save_file

    make_run(tmp_path, decreasing(20), 10)
    out = tmp_path / "checkpoint-20"
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.base_layer.weight": np.ones((16, 16), np.float32),
               f"{prefix}.lora_A.default.weight": np.ones((4, 16), np.float32),
               f"{prefix}.lora_B.default.weight": np.zeros((16, 4), np.float32)}, str(out / "model.safetensors"))
    (out / "adapter_model.safetensors").unlink()
    (out / "adapter_config.json").unlink()
    f = only(check(tmp_path), "RUN204")
    assert f.severity is Severity.ERROR  # from_pretrained would initialise the real weights randomly
    assert f.location.tensor == f"{prefix}.base_layer.weight"
    assert "replace('.default.', '.')" in f.hint and f"copy {tmp_path / 'checkpoint-10' / 'adapter_config.json'}" in f.hint


def test_fsdp_sharded_checkpoint(tmp_path):
    make_run(tmp_path, decreasing(20), 10)
    ckpt = tmp_path / "checkpoint-20"
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (ckpt / name).unlink()
    (ckpt / "pytorch_model_fsdp_0").mkdir()
    (ckpt / "pytorch_model_fsdp_0" / "__0_0.distcp").write_bytes(b"\0" * 128)
    (ckpt / "pytorch_model_fsdp_0" / ".metadata").write_bytes(b"\0" * 16)
    f = only(check(tmp_path), "RUN204")
    assert f"accelerate merge-weights {ckpt / 'pytorch_model_fsdp_0'} {ckpt}-merged" in f.hint
    assert discover([str(ckpt)])[0].kinds >= {"run"}


def _dcp_save(ckpt, model_state):
    """What accelerate's save_fsdp_model / save_fsdp_optimizer write for SHARDED_STATE_DICT, with torch's dcp.save."""
    import warnings

    torch = pytest.importorskip("torch")
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    optim = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}}, "param_groups": [{"lr": 1e-4}]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": model_state}, checkpoint_id=ckpt / "pytorch_model_fsdp_0")
        dcp.save({"optimizer": optim}, checkpoint_id=ckpt / "optimizer_0")


@pytest.mark.parametrize("lora", [True, False])
def test_real_fsdp_sharded_save_lora_or_full(tmp_path, lora):
    """The .metadata tells a LoRA run's shards (RUN204, naming a LoRA key and the model folder, never
    optimizer_0/) from a full-parameter sharded save (not a LoRA matter: no RUN204)."""
    torch = pytest.importorskip("torch")
    make_run(tmp_path, decreasing(20), 10)
    ckpt = tmp_path / "checkpoint-20"
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (ckpt / name).unlink()
    prefix = "model.base_model.model.model.layers.0.self_attn.q_proj"
    state = ({f"{prefix}.base_layer.weight": torch.ones(4, 4), f"{prefix}.lora_A.default.weight": torch.ones(2, 4),
              f"{prefix}.lora_B.default.weight": torch.zeros(4, 2)} if lora
             else {"model.layers.0.self_attn.q_proj.weight": torch.ones(4, 4)})
    _dcp_save(ckpt, state)
    report = check(tmp_path)
    if not lora:
        assert "RUN204" not in finding_codes(report)
        states = {st.save.name: st.status for st in analyze_run(tmp_path).states}
        assert states["checkpoint-20"] == "fsdp shards only" and states["checkpoint-10"] == "complete"
        return
    f = only(report, "RUN204")
    assert f.path == str(ckpt / "pytorch_model_fsdp_0") and "optimizer_0" not in f.hint
    assert f.location.tensor.startswith(f"model.{prefix}.") and f.location.tensor.endswith(".weight")
    assert f"accelerate merge-weights {ckpt / 'pytorch_model_fsdp_0'} {ckpt}-merged" in f.hint


def test_empty_and_config_less_checkpoints(tmp_path):
    make_run(tmp_path, decreasing(30), 10)
    (tmp_path / "checkpoint-20" / "adapter_config.json").unlink()
    for p in (tmp_path / "checkpoint-30").iterdir():
        p.unlink()
    report = check(tmp_path)
    msgs = {f.message: f for f in report.findings if f.code == "RUN201"}
    assert set(msgs) == {"checkpoint-20 lacks adapter_config.json",
                         "checkpoint-30 is empty: the save was cut short (killed or out of disk)"}
    assert {f.severity for f in msgs.values()} == {Severity.ERROR}  # the loader raises on both
    assert "RUN205" not in finding_codes(report)  # one finding per cause: RUN201 says where to resume
    assert msgs["checkpoint-20 lacks adapter_config.json"].hint == \
        f"Copy adapter_config.json from {tmp_path / 'checkpoint-10' / 'adapter_config.json'} (same run)."
    rec = only(report, "RUN301")
    assert rec.message.startswith("keep checkpoint-10")


def test_bf16_deltas_read_from_raw_bytes(tmp_path):
    write_adapter(tmp_path / "a", lora_tensors(1), bf16=True)
    write_adapter(tmp_path / "b", lora_tensors(2), bf16=True)
    write_adapter(tmp_path / "c", lora_tensors(1), bf16=True)
    a, b, c = (header_lora(tmp_path / x / "adapter_model.safetensors") for x in "abc")
    name = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    expected = (lora_tensors(1)[name].view(np.uint32) & 0xFFFF0000).view(np.float32)  # bf16 truncation
    assert np.array_equal(read_tensor(a[name]), expected.ravel())
    assert delta(a, c, deep=True).unchanged
    d = delta(a, b, deep=True)
    assert not d.unchanged and d.compared == d.total == 8 and 0.5 < d.relative < 2.5


def test_sampled_deltas_and_deep(tmp_path):
    big = {f"base_model.model.model.layers.{i}.mlp.up_proj.lora_{m}.weight": np.full((4, 8), i, np.float32)
           for i in range(32) for m in "AB"}
    moved = dict(big)
    moved["base_model.model.model.layers.7.mlp.up_proj.lora_B.weight"] = np.full((4, 8), 99.0, np.float32)
    write_adapter(tmp_path / "a", big)
    write_adapter(tmp_path / "b", moved)
    a, b = header_lora(tmp_path / "a" / "adapter_model.safetensors"), header_lora(tmp_path / "b" / "adapter_model.safetensors")
    sampled = delta(a, b, deep=False)
    assert sampled.sampled and sampled.compared == 8 and sampled.total == 64
    assert sampled.unchanged  # layer 7 is not in the spread sample (layers 0, 10, 21, 31)...
    assert not delta(a, b, deep=True).unchanged  # ...which is what --deep is for


def test_best_model_checkpoint_without_eval_at_save_steps(tmp_path):
    make_run(tmp_path, decreasing(30), 10, best="checkpoint-20")
    rec = only(check(tmp_path), "RUN301")
    assert rec.message.startswith("keep checkpoint-20 (trainer_state.json names it best_model_checkpoint")


def test_triage_command_on_a_single_checkpoint(tmp_path, capsys):
    from doctor.cli import main

    make_run(tmp_path, decreasing(20), 10)
    code = main(["triage", str(tmp_path / "checkpoint-20"), "--output-format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [s["name"] for s in data["triage"]["saves"]] == ["checkpoint-20"]
    assert data["triage"]["recommendation"]["keep"] == "checkpoint-20"


def test_triage_deep_compares_every_lora_tensor(tmp_path, capsys):
    from doctor.cli import main

    big = {f"base_model.model.model.layers.{i}.mlp.up_proj.lora_{m}.weight": np.full((4, 8), i + 1, np.float32)
           for i in range(8) for m in "AB"}
    for step, shift in ((10, 0.0), (20, 1.0)):
        write_adapter(tmp_path / f"checkpoint-{step}", {k: v + shift for k, v in big.items()},
                      {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["up_proj"]})
    for deep, compared in ((False, 8), (True, 16)):
        main(["triage", str(tmp_path), "--output-format", "json", *(["--deep"] if deep else [])])
        saves = json.loads(capsys.readouterr().out)["triage"]["saves"]
        assert saves[1]["adapter_delta"]["tensors_compared"] == compared
        assert saves[1]["adapter_delta"]["tensors_total"] == 16


def test_bin_weights_are_read_statically(tmp_path):
    torch = pytest.importorskip("torch")
    make_run(tmp_path, decreasing(20), 10)
    ckpt = tmp_path / "checkpoint-20"
    (ckpt / "adapter_model.safetensors").unlink()
    (ckpt / "adapter_config.json").unlink()
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    torch.save({f"{prefix}.base_layer.weight": torch.ones(16, 16), f"{prefix}.lora_A.default.weight": torch.ones(4, 16)},
               ckpt / "pytorch_model.bin")  # what zero_to_fp32.py (DeepSpeed < 0.14) writes for a PeftModel
    (ckpt / "config.json").write_text("{}")
    f = only(check(tmp_path), "RUN204")
    assert f.path == str(ckpt / "pytorch_model.bin") and f.location.tensor == f"{prefix}.base_layer.weight"
    assert "torch.load(..., weights_only=True)" in f.hint


def test_run_of_only_fsdp_shards_says_how_to_load_them(tmp_path):
    torch = pytest.importorskip("torch")
    make_run(tmp_path, decreasing(20), 10)
    for ckpt in sorted(tmp_path.glob("checkpoint-*")):
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            (ckpt / name).unlink()
        _dcp_save(ckpt, {"model.layers.0.self_attn.q_proj.weight": torch.ones(4, 4)})
    rec = only(check(tmp_path), "RUN301")
    assert "no save is complete" in rec.message and "`accelerate merge-weights DIR/pytorch_model_fsdp_0 OUT`" in rec.message

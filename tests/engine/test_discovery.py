"""Discovery: what is at this path? (file names and small JSON files only)."""

from __future__ import annotations

import json

import pytest

from doctor.artifacts import discover
from doctor.errors import ArtifactError


def write(path, data=None, raw=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(json.dumps(data if data is not None else {}))
    return path


@pytest.fixture
def tree(tmp_path):
    write(tmp_path / "data" / "train.json", [{"id": "1"}])
    write(tmp_path / "data" / "more.jsonl", raw=b'{"id": "2"}\n')
    write(tmp_path / "data" / "notes.json", {"just": "an object"})
    write(tmp_path / "adapters" / "plain" / "adapter_config.json", {"peft_type": "LORA"})
    write(tmp_path / "adapters" / "plain" / "adapter_model.safetensors", raw=b"")
    write(tmp_path / "llava-v1.5-lora" / "adapter_config.json", {"peft_type": "LORA"})
    write(tmp_path / "llava-v1.5-lora" / "config.json", {"model_type": "llava_llama"})
    write(tmp_path / "llava-v1.5-lora" / "non_lora_trainables.bin", raw=b"PK")
    write(tmp_path / "models" / "hf" / "config.json", {"model_type": "llava"})
    write(tmp_path / "models" / "hf" / "model.safetensors", raw=b"")
    write(tmp_path / "models" / "orig" / "config.json", {"model_type": "llava", "architectures": ["LlavaLlamaForCausalLM"]})
    write(tmp_path / "models" / "orig" / "pytorch_model.bin", raw=b"")
    write(tmp_path / "xtuner-release" / "projector" / "config.json", {"model_type": "projector"})
    write(tmp_path / "xtuner-release" / "llm_adapter" / "adapter_config.json", {})
    write(tmp_path / "run" / "checkpoint-10" / "adapter_config.json", {})
    write(tmp_path / "run" / "trainer_state.json", {"log_history": []})
    write(tmp_path / ".hidden" / "x.json", [1])
    return tmp_path


def kinds(artifacts, root):
    return {str(a.path)[len(str(root)) + 1:]: a.kind for a in artifacts}


def test_walks_a_folder_of_artifacts(tree):
    found = kinds(discover([str(tree)]), tree)
    assert found == {
        "adapters/plain": "adapter",
        "data/more.jsonl": "dataset",
        "data/train.json": "dataset",
        "llava-v1.5-lora": "llava-lora",
        "models/hf": "model",
        "models/orig": "llava-original",
        "run": "run",
        "xtuner-release": "xtuner",
    }


def test_llava_lora_is_also_an_adapter(tree):
    (art,) = discover([str(tree / "llava-v1.5-lora")])
    assert {"adapter", "llava-lora"} <= art.kinds and art.meta["model_type"] == "llava_llama"


def test_explicit_json_is_a_dataset_and_config_file_means_its_folder(tree):
    (art,) = discover([str(tree / "data" / "notes.json")])
    assert art.kind == "dataset"
    (art,) = discover([str(tree / "adapters" / "plain" / "adapter_config.json")])
    assert art.kind == "adapter" and art.path.endswith("plain")


def test_explicit_weights_file(tree):
    (art,) = discover([str(tree / "models" / "orig" / "pytorch_model.bin")])
    assert art.kind == "weights"


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="no such file"):
        discover([str(tmp_path / "nope")])


def test_same_artifact_twice_is_checked_once(tree):
    found = discover([str(tree / "models" / "hf"), str(tree / "models")])
    assert [a.path for a in found].count(str(tree / "models" / "hf")) == 1


@pytest.mark.parametrize("config", [
    {"model_type": ["llava"]}, {"model_type": {"a": 1}}, {"model_type": "llava", "architectures": 3},
    {"model_type": None, "architectures": "LlavaLlamaForCausalLM"}, [1, 2], "text",
])
def test_junk_configs_never_crash_discovery(tmp_path, config):
    write(tmp_path / "m" / "config.json", config)
    write(tmp_path / "m" / "model.safetensors", raw=b"")
    (art,) = discover([str(tmp_path / "m")])
    assert "model" in art.kinds


def test_bare_deepspeed_and_xtuner_folders_yield_their_pickles(tmp_path):
    ds = tmp_path / "global_step10"
    write(ds / "mp_rank_00_model_states.pt", raw=b"\x80\x02}q\x00.")
    write(ds / "zero_pp_rank_0_mp_rank_00_optim_states.pt", raw=b"\x80\x02}q\x00.")
    assert {a.path: a.kind for a in discover([str(ds)])} == {
        str(ds / "mp_rank_00_model_states.pt"): "pickle", str(ds / "zero_pp_rank_0_mp_rank_00_optim_states.pt"): "pickle"}
    cfg = tmp_path / "work_dirs" / "cfg"
    write(cfg / "iter_500.pth" / "mp_rank_00_model_states.pt", raw=b"\x80\x02}q\x00.")
    write(cfg / "iter_250.pth", raw=b"\x80\x02}q\x00.")  # the same run saved without DeepSpeed
    write(cfg / "last_checkpoint", raw=b"work_dirs/cfg/iter_500.pth")
    found = {str(a.path)[len(str(tmp_path)) + 1:]: a.kind for a in discover([str(tmp_path / "work_dirs")])}
    assert found == {"work_dirs/cfg/iter_500.pth/mp_rank_00_model_states.pt": "pickle",
                     "work_dirs/cfg/iter_250.pth": "pickle"}


def test_layout_facts_have_one_home():
    import doctor.artifacts as artifacts
    import doctor.files as files

    assert artifacts.ORIGINAL_LLAVA_TYPES is files.ORIGINAL_LLAVA_TYPES
    assert artifacts.WEIGHT_SUFFIXES is files.WEIGHT_SUFFIXES and artifacts.CONFIG_NAMES is files.CONFIG_NAMES
    assert files.checkpoint_step("checkpoint-120") == 120 and files.checkpoint_step("checkpoint-x") is None
    assert files.ADAPTER_WEIGHTS == ("adapter_model.safetensors", "adapter_model.bin")  # what peft loads
    # ... and every place that looks for adapter weights or the LLaVA projector reads them there
    from doctor.checks.adapter import reading
    from doctor.checks.checkpoint import fixtures

    from doctor.runs import layout

    assert reading.ADAPTER_FILES is fixtures.ADAPTER_NAMES is layout.ADAPTER_WEIGHTS is files.ADAPTER_WEIGHTS
    assert layout.CHECKPOINT_RE is files.CHECKPOINT_RE and layout.GLOBAL_STEP_RE is files.GLOBAL_STEP_RE
    assert all(files.is_training_state(n) for n in (
        "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state_3.pth", "training_args.bin", "random_states_0.pkl",
        "optimizer.bin", "scheduler_1.bin", "sampler.bin",
        "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "mp_rank_00_model_states.pt", "iter_500.pth",
        "work_dirs/cfg/iter_500.pth/x.pt"))
    assert not any(files.is_training_state(n) for n in ("pytorch_model.bin", "adapter_model.bin", "mm_projector.bin"))

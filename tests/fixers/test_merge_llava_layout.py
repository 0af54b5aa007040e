"""``merge RUN --layout llava``: an original-LLaVA LoRA run written as LLaVA's own
``scripts/merge_lora_weights.py`` writes it (LoRA folded into the LLM, the trained projector from
non_lora_trainables.bin, the run's llava_llama / llava_mistral config naming the tower), with no
local CLIP tower. LLaVA's builder logic (as the LLV family replays it) accepts it, the check is
clean, and its LLM weights equal peft's merge of the same adapter."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from doctor.checks.llava.builder import (  # noqa: E402
    CLASS_FOR_TYPE,
    builder_branch,
    compare_projector,
    expected_projector,
    projector_type_of,
)
from doctor.fixers.merge import merge  # noqa: E402

import doctor  # noqa: E402
from doctor.errors import ArtifactError, UsageError  # noqa: E402
from doctor.findings import Severity, Status  # noqa: E402
from doctor.testing.original import make_llava_original_lora  # noqa: E402

HUB_TOWER = "openai/clip-vit-large-patch14-336"


def hub_tower(run: Path) -> None:
    """The run names its tower as finetune_lora.sh does: a hub id, not a local folder."""
    cfg = json.loads((run / "config.json").read_text())
    cfg["mm_vision_tower"] = HUB_TOWER
    (run / "config.json").write_text(json.dumps(cfg, indent=2))


def state_of(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def non_lora(run: Path) -> dict[str, Any]:
    """non_lora_trainables.bin with LLaVA's builder's prefix stripping."""
    state = torch.load(run / "non_lora_trainables.bin", weights_only=True)
    state = {(k[11:] if k.startswith("base_model.") else k): v for k, v in state.items()}
    if any(k.startswith("model.model.") for k in state):
        state = {(k[6:] if k.startswith("model.") else k): v for k, v in state.items()}
    return state


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def llava_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment with the LLaVA codebase importable, where this layout is meant to be loaded."""
    pkg = tmp_path / "site" / "llava"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(pkg.parent))


@pytest.fixture(scope="module", params=["llava_llama", "llava_mistral"])
def merged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Any, dict]:
    model_type = request.param
    root = tmp_path_factory.mktemp(model_type)
    info = make_llava_original_lora(root, model_type=model_type, seed=31)
    hub_tower(info.path)
    before = digest(info.path)
    name = "llava-v1.5-tiny-merged" if model_type == "llava_llama" else "llava-v1.6-mistral-tiny-merged"
    result = merge(info.path, out=root / name, layout="llava", dtype="fp32")
    assert digest(info.path) == before  # the run is never modified
    return info, root / name, result, json.loads((root / name / "config.json").read_text())


def test_llava_builder_accepts_the_output(merged: tuple[Any, Path, Any, dict]) -> None:
    info, out, result, cfg = merged
    assert result.kind == "llava-layout"
    assert cfg["model_type"] == info.model_type and cfg["architectures"] == [CLASS_FOR_TYPE[info.model_type]]
    assert cfg["mm_vision_tower"] == HUB_TOWER  # named as the run did; no tower copied
    branch = builder_branch(str(out), has_model_base=False)
    assert branch.name == "llava-full" and branch.model_class == CLASS_FOR_TYPE[cfg["model_type"]]
    state = state_of(out)
    assert not any("vision_tower" in k for k in state)
    projector = {k[len("model.mm_projector."):]: v for k, v in state.items() if k.startswith("model.mm_projector.")}
    assert projector_type_of(list(projector)) == cfg["mm_projector_type"]
    want = expected_projector(cfg["mm_projector_type"], cfg["hidden_size"], cfg["mm_hidden_size"])
    assert compare_projector(projector, want) == ([], [], [])
    for key, value in non_lora(info.path).items():  # the trained projector, in place
        assert torch.equal(state[key], value.float()), key
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= {p.name for p in out.iterdir()}
    assert cfg["vocab_size"] == state["model.embed_tokens.weight"].shape[0]
    # the LLV family's replay of the builder ran on the output and passed
    report = result.report
    for code in ("LLV001", "LLV003", "LLV006"):
        assert any(r.code == code and r.status is Status.PASS for r in report.results), code


def test_llm_weights_equal_peft_merge(merged: tuple[Any, Path, Any, dict]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    info, out, _, _ = merged
    base = AutoModelForCausalLM.from_pretrained(str(info.base_dir), dtype=torch.float32)
    reference = PeftModel.from_pretrained(base, str(info.path)).merge_and_unload().state_dict()
    state = state_of(out)
    assert set(reference) <= set(state)
    for key, value in reference.items():
        torch.testing.assert_close(state[key], value, rtol=1e-6, atol=1e-6)
    assert set(state) - set(reference) == {k for k in state if k.startswith("model.mm_projector.")}


def test_check_on_the_output_is_clean(merged: tuple[Any, Path, Any, dict], llava_installed: None) -> None:
    _, out, _, _ = merged
    report = doctor.check([str(out)], ignore=["ENV"])
    errors = [(f.code, f.message) for f in report.findings if f.severity is Severity.ERROR]
    assert not errors and not report.internal_errors, errors
    assert any(r.code.startswith("LLV") for r in report.results)


def test_without_the_llava_codebase_only_transformers_loading_is_an_error(merged: tuple[Any, Path, Any, dict]
                                                                         ) -> None:
    _, out, result, cfg = merged
    errors = [f for f in result.report.findings if f.severity is Severity.ERROR]
    assert [f.code for f in errors] == ["CKP002"] and "registered only by the LLaVA codebase" in errors[0].message
    assert cfg["model_type"] in errors[0].message


def test_auto_dtype_is_the_llm_s(tmp_path: Path) -> None:
    info = make_llava_original_lora(tmp_path, seed=32)  # projector saved in bf16, base in fp32
    hub_tower(info.path)
    result = merge(info.path, out=tmp_path / "llava-merged", layout="llava", check=False)
    base = state_of(info.base_dir)
    dtypes = {v.dtype for v in state_of(result.out).values()}
    assert dtypes == {base["model.embed_tokens.weight"].dtype}
    assert json.loads((result.out / "config.json").read_text())["torch_dtype"] == "float32"


def test_default_layout_without_a_tower_names_both_ways_out(tmp_path: Path) -> None:
    info = make_llava_original_lora(tmp_path, seed=33)
    hub_tower(info.path)
    with pytest.raises(UsageError) as e:
        merge(info.path, out=tmp_path / "out")
    assert "--vision-tower DIR" in str(e.value) and "--layout llava" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_cli_layout_llava(tmp_path: Path, capsys: pytest.CaptureFixture[str], llava_installed: None) -> None:
    from doctor.cli import main

    info = make_llava_original_lora(tmp_path, seed=34)
    hub_tower(info.path)
    code = main(["merge", str(info.path), "--layout", "llava", "-o", str(tmp_path / "llava-v1.5-merged"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr()
    assert json.loads((tmp_path / "llava-v1.5-merged" / "config.json").read_text())["model_type"] == "llava_llama"


def test_refusals(tmp_path: Path) -> None:
    from doctor.testing import make_llava_model, make_lora_adapter

    info = make_llava_original_lora(tmp_path / "runs", model_type="llava_mistral", seed=35)
    hub_tower(info.path)
    with pytest.raises(UsageError, match="'mistral'"):  # the builder would build LlavaLlamaForCausalLM
        merge(info.path, out=tmp_path / "llava-merged", layout="llava")
    with pytest.raises(UsageError, match="'llava'"):  # no 'llava': loaded as a text-only model
        merge(info.path, out=tmp_path / "merged", layout="llava")
    with pytest.raises(UsageError, match="mm_vision_tower"):
        merge(info.path, out=tmp_path / "llava-mistral-m", layout="llava", vision_tower=info.vision_tower_dir)
    model = make_llava_model(tmp_path / "hf", family="llava")
    adapter = make_lora_adapter(model.path, tmp_path / "adapter", train_steps=0)
    with pytest.raises(UsageError, match="original-LLaVA LoRA run"):
        merge(adapter, out=tmp_path / "llava-out", layout="llava")
    bare = make_llava_original_lora(tmp_path / "bare", with_non_lora=False, seed=36)
    hub_tower(bare.path)
    with pytest.raises(ArtifactError, match="non_lora_trainables.bin"):
        merge(bare.path, out=tmp_path / "llava-bare", layout="llava")
    assert not any(p.name.startswith("llava-") for p in tmp_path.iterdir())

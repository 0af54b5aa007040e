"""CKP001-CKP012: config.json and generation_config.json, on factory-built llava, llava_next and
mllama folders; each failure is also shown to be real with the installed transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doctor.testing import make_llava_model, make_llava_original_model, tiny_inputs

from tests.helpers.checkpoint import (
    FAMILIES,
    assert_fails,
    assert_passes,
    build_clean_models,
    clone,
    edit_json,
    run_ckp,
)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_clean_models(tmp_path_factory)


CONFIG_CODES = ("CKP001", "CKP002", "CKP003", "CKP004", "CKP005", "CKP006", "CKP007", "CKP008", "CKP009",
                "CKP010", "CKP011", "CKP012")


@pytest.mark.parametrize("family", FAMILIES)
def test_clean_pass_every_config_check(clean: dict[str, Any], family: str) -> None:
    report = run_ckp(clean[family].path)
    for code in CONFIG_CODES:
        assert_passes(report, code)


def test_invalid_json_gives_line_and_column(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["llava"].path, tmp_path / "m")
    text = (model / "config.json").read_text()
    (model / "config.json").write_text(text.replace('"model_type": "llava",', '"model_type": "llava",,'))
    report = run_ckp(model)
    [f] = assert_fails(report, "CKP001", "not valid JSON")
    assert f.location is not None and f.location.line and f.location.column
    line = text.splitlines()[f.location.line - 1]
    assert "model_type" in line
    assert all(r.status.value == "skip" for r in report.results if r.code in ("CKP002", "CKP005"))


def test_config_not_an_object(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["mllama"].path, tmp_path / "m")
    (model / "config.json").write_text("[1, 2]")
    assert_fails(run_ckp(model), "CKP001", "not an object")


@pytest.mark.parametrize("model_type,class_name", [("llava_mistral", "LlavaMistralConfig"), ("llava_llama", "LlavaConfig")])
def test_original_llava_types_are_unregistered(tmp_path: Path, model_type: str, class_name: str) -> None:
    from transformers import AutoConfig

    info = make_llava_original_model(tmp_path, model_type=model_type)
    with pytest.raises((KeyError, ValueError)):
        AutoConfig.from_pretrained(info.path)  # the real failure
    [f] = assert_fails(run_ckp(info.path), "CKP002", repr(model_type), f"KeyError: '{class_name}'")
    assert "vlm-doctor convert" in f.hint and "vlm-doctor merge" in f.hint and "4.37.2" in f.hint


def test_unknown_type_and_remote_code(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["llava"].path, tmp_path / "m")
    edit_json(model / "config.json", model_type="my_vlm")
    [f] = assert_fails(run_ckp(model), "CKP002", "'my_vlm' is not registered")
    assert f.severity.value == "error"
    edit_json(model / "config.json", auto_map={"AutoConfig": "configuration_my.MyConfig"})
    [f] = assert_fails(run_ckp(model), "CKP002", "trust_remote_code")
    assert f.severity.value == "warning"


def test_llava_v15_model_type_collision(tmp_path: Path) -> None:
    from transformers import AutoConfig

    info = make_llava_original_model(tmp_path, model_type="llava")
    assert type(AutoConfig.from_pretrained(info.path)).__name__ == "LlavaConfig"  # transformers takes it as its own
    report = run_ckp(info.path)
    assert_fails(report, "CKP003", "LlavaLlamaForCausalLM", "model.mm_projector")
    assert_passes(report, "CKP002")
    assert_fails(report, "CKP104", "only 1 of the", "original LLaVA")  # every weight would be random


def test_native_llava_is_no_collision(clean: dict[str, Any]) -> None:
    assert_passes(run_ckp(clean["llava"].path), "CKP003")


def test_unknown_architecture(clean: dict[str, Any], tmp_path: Path) -> None:
    import transformers

    model = clone(clean["llava_next"].path, tmp_path / "m")
    edit_json(model / "config.json", architectures=["LlavaNextForConditionalGenerationX"])
    assert not hasattr(transformers, "LlavaNextForConditionalGenerationX")
    assert_fails(run_ckp(model), "CKP004", "LlavaNextForConditionalGenerationX")


@pytest.mark.parametrize("family", FAMILIES)
def test_image_token_beyond_embedding(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(clean[family].path, tmp_path / "m")
    edit_json(model / "config.json", image_token_index=5000)
    assert_fails(run_ckp(model), "CKP005", "5000", "IndexError")


def test_image_token_sentinel(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["llava"].path, tmp_path / "m")
    edit_json(model / "config.json", image_token_index=-200)
    assert_fails(run_ckp(model), "CKP005", "-200")


def test_mllama_image_token_equal_to_vocab_size_is_healthy(clean: dict[str, Any]) -> None:
    info = clean["mllama"]
    assert info.config["image_token_index"] == info.config["text_config"]["vocab_size"]
    assert_passes(run_ckp(info.path), "CKP005")


def _forward(path: Path, info: Any) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path)
    inputs = tiny_inputs(info)
    with torch.no_grad():
        model(**inputs)


@pytest.mark.parametrize("family,key,bad,good", [
    ("llava", "vision_feature_layer", 3, -3),
    ("llava_next", "vision_feature_layer", -4, 2),
    ("mllama", "vision_config.intermediate_layers_indices", [2, 0], [-2, 1]),
])
def test_vision_layer_index_range_matches_a_real_forward(tmp_path: Path, family: str, key: str, bad: Any,
                                                         good: Any) -> None:
    bad_info = make_llava_model(tmp_path / "bad", family=family, config_overrides={key: bad})
    assert_fails(run_ckp(bad_info.path), "CKP006", "IndexError")
    with pytest.raises(IndexError):
        _forward(bad_info.path, bad_info)
    good_info = make_llava_model(tmp_path / "good", family=family, config_overrides={key: good})
    assert_passes(run_ckp(good_info.path), "CKP006")
    _forward(good_info.path, good_info)


def test_vision_feature_layer_wrong_type(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["llava"].path, tmp_path / "m")
    edit_json(model / "config.json", vision_feature_layer="penultimate")
    assert_fails(run_ckp(model), "CKP006", "must be an integer")


def test_mllama_vision_output_dim(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["mllama"].path, tmp_path / "m")
    edit_json(model / "config.json", vision_config__intermediate_layers_indices=[1])
    assert_fails(run_ckp(model), "CKP006", "vision_output_dim")


@pytest.mark.parametrize("family", ("llava", "llava_next"))
def test_feature_strategy(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(clean[family].path, tmp_path / "m")
    edit_json(model / "config.json", vision_feature_select_strategy="patch")
    assert_fails(run_ckp(model), "CKP007", "'patch'")
    edit_json(model / "config.json", vision_feature_select_strategy="full")
    edit_json(model / "processor_config.json", vision_feature_select_strategy="cls_patch")
    assert_fails(run_ckp(model), "CKP007", "processor", "'cls_patch'")


@pytest.mark.parametrize("family", ("llava", "llava_next"))
def test_projector_width_vs_feature_layers(tmp_path: Path, family: str) -> None:
    from transformers import AutoModelForImageTextToText

    info = make_llava_model(tmp_path / "m", family=family, config_overrides={"vision_feature_layer": [-2, -1]})
    assert_fails(run_ckp(info.path), "CKP008", "linear_1.weight", "[32, 64]")
    with pytest.raises(RuntimeError, match="mismatch"):
        AutoModelForImageTextToText.from_pretrained(info.path)


def test_mllama_projector_shape(clean: dict[str, Any], tmp_path: Path) -> None:
    import torch

    from doctor.testing import weights as _weights

    model = clone(clean["mllama"].path, tmp_path / "m")
    _weights.rewrite_weights(model, lambda s: {**s, "multi_modal_projector.weight": torch.zeros(32, 64)})
    assert_fails(run_ckp(model), "CKP008", "multi_modal_projector.weight", "[32, 64]", "[32, 96]")


def test_original_llava_projector_shape(tmp_path: Path) -> None:
    info = make_llava_original_model(tmp_path, model_type="llava_llama", hidden=32, mm_hidden=32)
    edit_json(info.path / "config.json", mm_hidden_size=48)
    assert_fails(run_ckp(info.path), "CKP008", "mm_projector.0.weight", "[32, 48]")


def test_next_pinpoints_disagree(tmp_path: Path) -> None:
    info = make_llava_model(tmp_path / "m", family="llava_next", processor_overrides={"image_processor.image_grid_pinpoints": [[28, 28]]})
    [f] = assert_fails(run_ckp(info.path), "CKP009", "differ")
    assert f.location is not None and f.location.pointer == "/image_processor/image_grid_pinpoints"
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(info.path)
    with torch.no_grad():
        model(**tiny_inputs(info, image_shape=(28, 28)))  # square images work
        with pytest.raises(RuntimeError, match="split_with_sizes"):
            model(**tiny_inputs(info, image_shape=(28, 56)))  # wide ones do not


def test_next_pinpoints_split_layout_and_multiples(tmp_path: Path) -> None:
    info = make_llava_model(tmp_path / "m", family="llava_next", processor_layout="split",
                            config_overrides={"image_grid_pinpoints": [[28, 28], [42, 28]]})
    report = run_ckp(info.path)
    found = assert_fails(report, "CKP009", "preprocessor_config.json", "not multiples")
    assert len(found) == 2


@pytest.mark.parametrize("layers,needle", [([5], "outside the 2-layer"), ([0], "cross-attention tensors for layers [1]"),
                                           ([], "never reach")])
def test_mllama_cross_attention_layers(clean: dict[str, Any], tmp_path: Path, layers: list[int],
                                       needle: str) -> None:
    model = clone(clean["mllama"].path, tmp_path / "m")
    edit_json(model / "config.json", text_config__cross_attention_layers=layers)
    assert_fails(run_ckp(model), "CKP010", needle)


def test_mllama_cross_attention_mismatch_is_random_init(clean: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText

    model = clone(clean["mllama"].path, tmp_path / "m")
    edit_json(model / "config.json", text_config__cross_attention_layers=[0])
    _, info = AutoModelForImageTextToText.from_pretrained(model, output_loading_info=True)
    assert any("layers.0.cross_attn" in k for k in info["missing_keys"])
    report = run_ckp(model)
    assert_fails(report, "CKP010")
    assert_fails(report, "CKP104", "layers.0.cross_attn")


def test_saved_by_newer_transformers(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["llava"].path, tmp_path / "m")
    edit_json(model / "config.json", transformers_version="99.1.0")
    [f] = assert_fails(run_ckp(model), "CKP011", "99.1.0")
    assert f.severity.value == "warning"


LLAVA_RELEASE_GENERATION = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "max_length": 4096,
                            "pad_token_id": 0, "temperature": 0.9, "top_p": 0.6}


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_config_refused_on_save_and_fixed(clean: dict[str, Any], tmp_path: Path,
                                                     family: str) -> None:
    from transformers import GenerationConfig

    model = clone(clean[family].path, tmp_path / "m")
    gen_path = model / "generation_config.json"
    gen_path.write_text(json.dumps(LLAVA_RELEASE_GENERATION))
    # The real refusal: save_pretrained's strict validation (4.37+; 5.x when the config is built in code).
    with pytest.raises(ValueError, match="invalid"):
        GenerationConfig.from_dict(json.loads(gen_path.read_text())).save_pretrained(tmp_path / "resaved")
    before = gen_path.read_bytes()
    [f] = assert_fails(run_ckp(model), "CKP012", "temperature=0.9", "top_p=0.6")
    assert f.fix is not None and f.fix.fixer == "generation_config"

    diff = run_ckp(model, diff=True)
    assert '-  "temperature": 0.9,' in diff.fixes[0].diff and '+  "max_length": 4096' not in diff.fixes[0].diff
    assert not (model / "generation_config.fixed.json").exists()

    fixed = run_ckp(model, fix=True)
    assert fixed.fixes and fixed.fixes[0].error is None, fixed.fixes
    assert gen_path.read_bytes() == before  # the input is never modified
    out = json.loads((model / "generation_config.fixed.json").read_text())
    assert "temperature" not in out and "top_p" not in out and out["max_length"] == 4096
    GenerationConfig.from_dict(out).save_pretrained(tmp_path / "resaved-ok")


def test_generation_config_beam_flags_and_bad_json(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["llava"].path, tmp_path / "m")
    (model / "generation_config.json").write_text(json.dumps({"num_beams": 1, "length_penalty": 2.0}))
    assert_fails(run_ckp(model), "CKP012", "length_penalty=2.0")
    (model / "generation_config.json").write_text('{"do_sample": true,\n "top_p": }')
    [f] = assert_fails(run_ckp(model), "CKP012", "not a valid JSON")
    assert f.location is not None and f.location.line == 2
    (model / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.2, "top_p": 0.9}))
    assert_passes(run_ckp(model), "CKP012")


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False), st.text(max_size=5),
                 st.lists(st.one_of(st.integers(-5, 500), st.text(max_size=3)), max_size=3),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
FUZZ_KEYS = ("image_token_index", "vision_feature_layer", "vision_feature_select_strategy", "image_grid_pinpoints",
             "transformers_version", "text_config", "vision_config", "tie_word_embeddings", "mm_hidden_size",
             "text_config.vocab_size", "text_config.hidden_size", "text_config.cross_attention_layers",
             "text_config.pad_token_id", "vision_config.hidden_size", "vision_config.num_hidden_layers",
             "vision_config.intermediate_layers_indices", "vision_config.vision_output_dim", "vision_config.patch_size")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(family=st.sampled_from(FAMILIES), edits=st.dictionaries(st.sampled_from(FUZZ_KEYS), JUNK, min_size=1, max_size=3),
       model_type=st.sampled_from(["llava", "mllama", "llava_mistral", "nope", ""]),
       architectures=st.one_of(st.none(), st.lists(st.text(max_size=8), max_size=2)))
def test_junk_config_values_give_findings_never_a_crash(clean: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
                                                         family: str, edits: dict[str, Any], model_type: str,
                                                         architectures: list[str] | None) -> None:
    model = clone(clean[family].path, tmp_path_factory.mktemp("junk") / "m")
    data = json.loads((model / "config.json").read_text())
    data["model_type"], data["architectures"] = model_type, architectures
    for dotted, value in edits.items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part] if isinstance(node.get(part), dict) else {}
        node[leaf] = value
    (model / "config.json").write_text(json.dumps(data))
    run_ckp(model)  # asserts no internal error


def test_absurd_layer_count_is_refused_not_built(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["llava"].path, tmp_path / "m")
    edit_json(model / "config.json", text_config__num_hidden_layers=10**12)
    assert_fails(run_ckp(model), "CKP100", "1,000,000,000,000", "refusing")

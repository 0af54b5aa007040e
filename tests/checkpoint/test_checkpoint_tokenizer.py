"""CKP401-CKP407: tokenizer and processor files, on factory-built llava, llava_next and mllama
folders; the tokenizer is read without transformers and compared with AutoTokenizer, and each
failure is reproduced with the real tokenizer, processor or model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from doctor.testing import DELETE, make_llava_model, make_llava_original_model, tiny_inputs

from tests.helpers.checkpoint import (
    FAMILIES,
    assert_fails,
    assert_passes,
    build_clean_models,
    clone,
    edit_json,
    run_ckp,
)

TOKENIZER_CODES = ("CKP401", "CKP402", "CKP403", "CKP404", "CKP405", "CKP406", "CKP407")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_clean_models(tmp_path_factory)


def _forward(path: Path, info: Any, shape: tuple[int, int] = (28, 28)) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path)
    with torch.no_grad():
        model(**tiny_inputs(info, image_shape=shape))


@pytest.mark.parametrize("family", FAMILIES)
def test_clean_models_pass(clean: dict[str, Any], family: str) -> None:
    report = run_ckp(clean[family].path)
    for code in TOKENIZER_CODES:
        assert_passes(report, code)


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_read_without_transformers_matches_autotokenizer(clean: dict[str, Any], family: str) -> None:
    from transformers import AutoTokenizer

    from doctor.checks.checkpoint.tokenizer_files import read_tokenizer

    path = clean[family].path
    facts = read_tokenizer(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert facts.size == len(tok)
    assert facts.vocab == tok.get_vocab()
    for role in ("bos_token", "eos_token", "pad_token"):
        assert facts.special.get(role) == getattr(tok, role)


def test_sentencepiece_model_read_by_hand(tmp_path: Path) -> None:
    spm = pytest.importorskip("sentencepiece")
    from doctor.checks.checkpoint.tokenizer_files import read_tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the cat {i} sat on the mat with image number {i * 7}" for i in range(300)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=60,
                                   model_type="bpe", minloglevel=2)
    proc = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<image>": 60}))
    facts = read_tokenizer(tmp_path)
    assert facts.vocab_files == ["tokenizer.model"]
    assert facts.vocab is not None
    assert all(facts.vocab[proc.id_to_piece(i)] == i for i in range(proc.get_piece_size()))
    assert facts.size == proc.get_piece_size() + 1 and facts.id_of("<image>") == 60


@pytest.mark.parametrize("family", FAMILIES)
def test_no_tokenizer_files(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    from transformers import AutoTokenizer

    model = clone(clean[family].path, tmp_path / "m")
    for name in TOKENIZER_FILES:
        (model / name).unlink()
    with pytest.raises((ValueError, KeyError, OSError)):
        AutoTokenizer.from_pretrained(model)  # the real failure
    [f] = assert_fails(run_ckp(model), "CKP401", "no tokenizer files", "KeyError", "load the tokenizer from the base")
    # ... but the model itself loads, and the tokenizer of the base works with it: a warning
    assert f.severity.value == "warning"
    AutoTokenizer.from_pretrained(clean[family].path)
    assert all(r.status.value == "skip" for r in run_ckp(model).results if r.code in ("CKP402", "CKP403"))
    # --tokenizer stands in for the other checks; the folder itself still cannot load a tokenizer
    report = run_ckp(model, tokenizer=str(clean[family].path))
    assert_fails(report, "CKP401", "the other checks use --tokenizer")
    for code in ("CKP402", "CKP403", "CKP405"):
        assert_passes(report, code)


def test_tokenizer_config_without_vocabulary_and_bad_json(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["llava"].path, tmp_path / "m")
    (model / "tokenizer.json").unlink()
    [f] = assert_fails(run_ckp(model), "CKP401", "no vocabulary")
    assert f.severity.value == "error"  # present but broken: every tokenizer load of the folder fails
    model2 = clone(clean["llava"].path, tmp_path / "m2")
    (model2 / "tokenizer_config.json").write_text('{"bos_token": "<s>",\n "eos_token": }')
    [f] = assert_fails(run_ckp(model2), "CKP401", "not valid JSON")
    assert f.location is not None and f.location.line == 2
    assert f.severity.value == "error"


def test_model_without_tokenizer_loads(clean: dict[str, Any], tmp_path: Path) -> None:
    """Why a folder with no tokenizer files at all is only a warning: from_pretrained never reads them."""
    from transformers import AutoModelForImageTextToText

    model = clone(clean["llava"].path, tmp_path / "m")
    for name in TOKENIZER_FILES:
        (model / name).unlink(missing_ok=True)
    assert AutoModelForImageTextToText.from_pretrained(model) is not None


def test_original_llava_without_tokenizer_names_its_keyerror(tmp_path: Path) -> None:
    info = make_llava_original_model(tmp_path, model_type="llava_mistral")
    for name in TOKENIZER_FILES:
        (info.path / name).unlink(missing_ok=True)
    [f] = assert_fails(run_ckp(info.path), "CKP401", "KeyError: 'LlavaMistralConfig'", "load_pretrained_model")
    assert f.severity.value == "error"  # LLaVA's builder reads the tokenizer from the model folder


def _add_tokens(model: Path, tokens: dict[str, int]) -> None:
    data = json.loads((model / "tokenizer.json").read_text())
    for text, i in tokens.items():
        data["added_tokens"].append({"id": i, "content": text, "single_word": False, "lstrip": False,
                                     "rstrip": False, "normalized": False, "special": True})
    (model / "tokenizer.json").write_text(json.dumps(data))


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_larger_than_embedding(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model = clone(clean[family].path, tmp_path / "m")
    rows = 308 if family == "mllama" else 302
    _add_tokens(model, {"<box>": rows, "</box>": rows + 1})
    assert len(AutoTokenizer.from_pretrained(model)) == (rows + 2 if family != "mllama" else 303)
    assert_fails(run_ckp(model), "CKP402", f"largest id {rows + 1}", "'<box>'")
    embed = AutoModelForImageTextToText.from_pretrained(model).get_input_embeddings()
    with pytest.raises(IndexError):
        embed(torch.tensor([rows]))


def test_mllama_image_token_at_vocab_size_is_not_too_large(clean: dict[str, Any]) -> None:
    info = clean["mllama"]
    assert info.image_token_id == info.config["text_config"]["vocab_size"]
    assert_passes(run_ckp(info.path), "CKP402")


@pytest.mark.parametrize("family", ("llava", "llava_next"))
def test_image_token_id_disagrees_with_tokenizer(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(clean[family].path, tmp_path / "m")
    edit_json(model / "config.json", image_token_index=7)
    report = run_ckp(model)
    [f] = assert_fails(report, "CKP403", "is 7", "'<image>' is 300")
    assert "300" in (f.hint or "")
    assert_passes(report, "CKP005")  # 7 is a valid row: only the tokenizer shows the mistake
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        _forward(model, clean[family])


def test_mllama_image_token_disagrees(clean: dict[str, Any], tmp_path: Path) -> None:
    model = clone(clean["mllama"].path, tmp_path / "m")
    edit_json(model / "config.json", image_token_index=299)
    assert_fails(run_ckp(model), "CKP403", "'<|image|>' is 300")


@pytest.mark.parametrize("family", FAMILIES)
def test_image_token_missing_from_tokenizer(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(clean[family].path, tmp_path / "m")
    token = clean[family].image_token
    data = json.loads((model / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != token]
    (model / "tokenizer.json").write_text(json.dumps(data))
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg.pop("extra_special_tokens", None)
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert_fails(run_ckp(model), "CKP403", f"no {token!r} token")


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_missing(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(clean[family].path, tmp_path / "m")
    (model / "chat_template.jinja").unlink()
    [f] = assert_fails(run_ckp(model), "CKP404", "no chat template")
    assert f.severity.value == "warning"


def test_chat_template_in_the_split_layout(tmp_path: Path) -> None:
    info = make_llava_model(tmp_path / "m", family="llava", processor_layout="split")
    assert (info.path / "chat_template.json").exists()
    report = run_ckp(info.path)
    for code in TOKENIZER_CODES:
        assert_passes(report, code)


@pytest.mark.parametrize("family", FAMILIES)
def test_special_tokens(clean: dict[str, Any], tmp_path: Path, family: str) -> None:
    model = clone(clean[family].path, tmp_path / "m")
    edit_json(model / "tokenizer_config.json", pad_token="<padding>")
    assert_fails(run_ckp(model), "CKP405", "pad_token '<padding>'")
    model2 = clone(clean[family].path, tmp_path / "m2")
    edit_json(model2 / "generation_config.json", eos_token_id=[2, 9999])
    [f] = assert_fails(run_ckp(model2), "CKP405", "eos_token_id 9999")
    assert f.path.endswith("generation_config.json")


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_files_missing(tmp_path: Path, family: str) -> None:
    from transformers import AutoProcessor

    info = make_llava_model(tmp_path / "m", family=family, processor=False)
    with pytest.raises(Exception):  # noqa: B017 - transformers raises OSError or ValueError by version
        AutoProcessor.from_pretrained(info.path)
    [f] = assert_fails(run_ckp(info.path), "CKP406", "AutoProcessor")
    assert f.severity.value == "warning"


@pytest.mark.parametrize("family", ("llava", "llava_next"))
@pytest.mark.parametrize("key,error", [("patch_size", TypeError),
                                       ("num_additional_image_tokens", ValueError),
                                       ("vision_feature_select_strategy", ValueError)])
def test_processor_fields_missing_break_a_real_forward(tmp_path: Path, family: str, key: str, error: type) -> None:
    info = make_llava_model(tmp_path / "m", family=family, processor_overrides={key: DELETE})
    assert_fails(run_ckp(info.path), "CKP407", f"has no {key}")
    with pytest.raises(error):
        _forward(info.path, info, shape=(28, 56))


@pytest.mark.parametrize("family", ("llava", "llava_next"))
def test_processor_fields_disagree(tmp_path: Path, family: str) -> None:
    info = make_llava_model(tmp_path / "m", family=family,
                            processor_overrides={"vision_feature_select_strategy": "full", "patch_size": 7})
    report = run_ckp(info.path)
    assert_fails(report, "CKP407", "vision_feature_select_strategy is 'full'", "patch_size is 7")


def test_mllama_processor_needs_no_expansion_fields(clean: dict[str, Any]) -> None:
    proc = json.loads((clean["mllama"].path / "processor_config.json").read_text())
    assert "patch_size" not in proc
    assert_passes(run_ckp(clean["mllama"].path), "CKP407")


@pytest.mark.parametrize("name,content", [
    ("tokenizer.json", '{"model": {"vocab": [[1, 2], "x"]}, "added_tokens": [5, {"id": "x", "content": 3}]}'),
    ("tokenizer.json", "[]"),
    ("added_tokens.json", '{"<x>": "y", "<z>": 10000}'),
    ("tokenizer_config.json", '{"added_tokens_decoder": {"x": 5, "7": {"content": 3}}, "pad_token": {"content": null}}'),
    ("processor_config.json", '{"image_processor": {"image_grid_pinpoints": [[1]]}, "patch_size": [], "image_token": 5}'),
    ("preprocessor_config.json", "[1]"),
    ("generation_config.json", '{"eos_token_id": {"a": 1}, "do_sample": null, "temperature": [1]}'),
    ("tokenizer.model", "not a sentencepiece model"),
])
def test_junk_tokenizer_and_processor_files_never_crash(clean: dict[str, Any], tmp_path: Path, name: str,
                                                        content: str) -> None:
    model = clone(clean["llava_next"].path, tmp_path / "m")
    (model / name).write_text(content)
    run_ckp(model)  # asserts no internal error

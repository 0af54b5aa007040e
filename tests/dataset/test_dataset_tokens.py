"""DAT3xx and DAT903: the token budget, with image token counts checked against transformers'
own processors, and the estimate checked against a real chat-template tokenization."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from doctor.checks.dataset.vision import vision_spec

import doctor
from doctor.testing import make_image, make_llava_dataset, make_tokenizer

SIZES = [(48, 48), (40, 64), (72, 40), (20, 100), (300, 20), (28, 28), (57, 29), (13, 90), (1000, 999)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("torch")
    from doctor.testing import make_llava_model

    root = tmp_path_factory.mktemp("tok_models")
    wide = [[28, 28], [56, 28], [28, 56], [56, 56], [84, 28], [28, 84]]
    return {
        "llava": make_llava_model(root / "llava", family="llava"),
        "llava_next": make_llava_model(root / "next", family="llava_next", image_grid_pinpoints=wide),
        "mllama": make_llava_model(root / "mllama", family="mllama"),
    }


def test_image_tokens_equal_what_the_processors_insert(models):
    from PIL import Image
    from transformers import AutoProcessor

    for family, info in models.items():
        spec = vision_spec(str(info.path))
        processor = AutoProcessor.from_pretrained(str(info.path))
        token = "<|image|>" if family == "mllama" else "<image>"
        token_id = processor.tokenizer.convert_tokens_to_ids(token)
        for w, h in SIZES:
            ids = processor(images=[Image.new("RGB", (w, h))], text=token + " hi", return_tensors="np")["input_ids"]
            assert int((ids == token_id).sum()) == spec.tokens(w, h), (family, w, h)
        if family == "llava_next":
            assert spec.tokens() == max(spec.tokens(w, h) for w, h in SIZES)  # unknown size: the worst case


def test_original_llava_and_default_image_tokens(tmp_path):
    assert vision_spec(None).tokens() == 576
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llava_llama", "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_vision_select_feature": "patch", "tokenizer_model_max_length": 2048}))
    assert vision_spec(str(tmp_path)).tokens() == 576
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llava_llama", "mm_vision_tower": "openai/clip-vit-large-patch14", "mm_vision_select_feature": "cls_patch"}))
    assert vision_spec(str(tmp_path)).tokens() == 257


def records(texts: list[tuple[str, str]], image: str | None = "a.png") -> list[dict]:
    return [{"id": f"r{i}", **({"image": image} if image else {}), "conversations": [
        {"from": "human", "value": ("<image>\n" if image else "") + q}, {"from": "gpt", "value": a}]}
        for i, (q, a) in enumerate(texts)]


def write(root: Path, recs: list[dict]) -> Path:
    make_image(root / "a.png")
    path = root / "d.json"
    path.write_text(json.dumps(recs))
    return path


def test_estimate_matches_the_chat_template_tokenization(models, tmp_path):
    from PIL import Image
    from transformers import AutoProcessor

    from doctor.checks.dataset.scan import scan_dataset
    from doctor.checks.dataset.tokens import count_tokens

    from doctor.runner import Options

    info = models["llava"]
    processor = AutoProcessor.from_pretrained(str(info.path))
    question, answer = "describe the picture in detail", "there are two dogs on the street at night"
    pairs = [(question, answer), (question * 5, answer * 3), ("what", "it is red. " * 40)]
    path = write(tmp_path, records(pairs))
    tokens = count_tokens(scan_dataset(str(path)), None, Options(model=str(info.path)))
    assert "chat template" in tokens.template.source
    for (q, a), ours in zip(pairs, tokens.lengths, strict=True):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]},
                    {"role": "assistant", "content": [{"type": "text", "text": a}]}]
        text = processor.apply_chat_template(messages)
        real = processor(images=[Image.new("RGB", (48, 48))], text=text, return_tensors="np")["input_ids"].shape[1]
        assert abs(real - ours) <= 3, (q[:20], real, ours)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def test_truncated_answers_cut_and_image_tokens_cut(tokenizer, tmp_path):
    long = " ".join(["describe the picture"] * 400)
    recs = records([("what is it", "a cat"), ("what is it", long)])  # fine; answer cut (DAT301)
    recs += records([(long, "a cat")])  # the question pushes the answer out (DAT302)
    recs.append({"id": "late-image", "image": "a.png", "conversations": [  # image after a long turn (DAT303)
        {"from": "human", "value": long}, {"from": "gpt", "value": "ok"},
        {"from": "human", "value": "<image>\nand this?"}, {"from": "gpt", "value": "a cat"}]})
    path = write(tmp_path, recs)
    report = doctor.check(str(path), select=["DAT3", "DAT903"], tokenizer=str(tokenizer.path),
                          image_folder=str(tmp_path), max_length=1200)
    found = {(f.code, f.location.record) for f in report.findings if f.location and f.location.record is not None}
    assert found == {("DAT301", 1), ("DAT302", 2), ("DAT303", 3)}
    (summary,) = [f for f in report.findings if f.code == "DAT903"]
    assert "3 record(s) over 1,200 (--max-length)" in summary.message and "576 per image" in summary.message
    fixed = doctor.check(str(path), select=["DAT3"], tokenizer=str(tokenizer.path), image_folder=str(tmp_path),
                         max_length=1200, fix=True, unsafe_fixes=True)
    kept = json.loads(Path(fixed.fixes[0].written[0]).read_text())
    assert [r["id"] for r in kept] == ["r0", "r1"]
    rejected = (tmp_path / "d.rejected.jsonl").read_text()
    assert "DAT302" in rejected and "DAT303" in rejected


def test_factory_long_text_is_truncated_at_2048(tokenizer, tmp_path):
    path = make_llava_dataset(tmp_path, n=2, problems=["long-text"])
    report = doctor.check(str(path), select=["DAT3"], tokenizer=str(tokenizer.path),
                          image_folder=str(tmp_path / "images"))
    assert [f.location.record for f in report.findings if f.code == "DAT301"] == [2]


def test_skipped_without_a_tokenizer(tmp_path):
    path = write(tmp_path, records([("q", "a")]))
    report = doctor.check(str(path), select=["DAT3", "DAT903"], images="none")
    assert {r.status.value for r in report.results if r.code.startswith("DAT")} == {"skip"}
    assert "--tokenizer" in report.results[-1].reason


def test_dataset_checks_import_neither_torch_nor_transformers(tokenizer, tmp_path):
    path = make_llava_dataset(tmp_path, n=3, problems=["bad-role", "truncated-image"])
    code = (
        "import sys, doctor\n"
        f"r = doctor.check({str(path)!r}, select=['DAT'], images='decode', image_folder={str(tmp_path / 'images')!r},"
        f" tokenizer={str(tokenizer.path)!r})\n"
        "assert any(f.code == 'DAT903' for f in r.findings), [f.code for f in r.findings]\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print('heavy:', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alpaca_records_count_as_the_messages_llamafactory_makes_of_them(tokenizer, tmp_path):
    """An alpaca record and the messages AlpacaDatasetConverter turns it into get the same count."""
    from types import SimpleNamespace

    from doctor.checks.dataset.scan import scan_dataset
    from doctor.checks.dataset.tokens import count_tokens

    long = " ".join(["describe the picture"] * 300)
    alpaca = [
        {"instruction": "<image>what is it", "input": "", "output": "a cat", "images": ["a.png"]},
        {"instruction": "translate", "input": "bonjour", "output": "hello", "system": "be brief"},
        {"instruction": "and now?", "output": long, "history": [["<image>first", "a dog"], ["second", "a bird"]],
         "images": ["a.png"]},
        {"instruction": "unsupervised", "output": None},
    ]
    messages = [
        {"messages": [{"role": "user", "content": "<image>what is it"}, {"role": "assistant", "content": "a cat"}],
         "images": ["a.png"]},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "translate\nbonjour"},
                      {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "<image>first"}, {"role": "assistant", "content": "a dog"},
                      {"role": "user", "content": "second"}, {"role": "assistant", "content": "a bird"},
                      {"role": "user", "content": "and now?"}, {"role": "assistant", "content": long}],
         "images": ["a.png"]},
        {"messages": [{"role": "user", "content": "unsupervised"}]},
    ]
    make_image(tmp_path / "a.png")
    options = SimpleNamespace(tokenizer=str(tokenizer.path), model=None, max_length=1500)
    lengths = {}
    for name, recs in (("alpaca", alpaca), ("messages", messages)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(recs))
        scan = scan_dataset(str(path))
        assert scan.fmt == name
        report = count_tokens(scan, None, options)
        assert report.skipped is None
        lengths[name] = list(report.lengths)
        over = doctor.check(str(path), select=["DAT3"], tokenizer=str(tokenizer.path), max_length=1500,
                            image_folder=str(tmp_path))
        assert [(f.code, f.location.record) for f in over.findings] == [("DAT301", 2)], name  # the long answer is cut
    assert lengths["alpaca"] == lengths["messages"] and len(lengths["alpaca"]) == 4
    assert lengths["alpaca"][2] > lengths["alpaca"][0] > 576  # text plus one 576-token image each


def test_a_vlm_without_a_family_table_gets_no_invented_image_count(tokenizer, tmp_path):
    """A model type with a vision tower but no family table (idefics3 splits images into tiles): its
    image tokens are said to be uncounted, never llava's formula (4,097 here) passed off as its count."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "idefics3", "vision_config": {"image_size": 896, "patch_size": 14}, "scale_factor": 4}))
    spec = vision_spec(str(model))
    assert spec.tokens(896, 896) == spec.tokens() == 0 and "not counted" in spec.description
    assert "idefics3" in spec.description and "docs/families.md" in spec.description
    path = write(tmp_path, records([("what is it", "a cat")]))
    report = doctor.check(str(path), select=["DAT3", "DAT903"], tokenizer=str(tokenizer.path), model=str(model),
                          image_folder=str(tmp_path), max_length=600)
    assert not [f for f in report.findings if f.code.startswith("DAT30")]  # 4,097 "image tokens" would be DAT303
    (summary,) = [f for f in report.findings if f.code == "DAT903"]
    assert "not counted" in summary.message

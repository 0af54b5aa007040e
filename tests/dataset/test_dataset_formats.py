"""Issue 12 point 6: every documented record variant of the loaders is accepted as its loader
accepts it, and its broken twin is reported, naming the loader.

Variants, as read in the loaders' code:
- LLaMA-Factory alpaca (``AlpacaDatasetConverter``): instruction/input/output/history + images;
- LLaMA-Factory sharegpt (``SharegptDatasetConverter``): conversations with system / human /
  gpt / function_call / observation tags + images; an odd turn count or a tag out of place is
  skipped silently ("Invalid role tag", "Invalid message count");
- LLaMA-Factory openai (``OpenAIDatasetConverter``): messages with string content and <image>;
- LLaMA-Factory v1 (``_to_hf_messages``): parts {"type": "text" | "image_url", "value": ...};
- TRL (``prepare_multimodal_messages``): parts {"type": "image"} / {"type": "text", "text": ...},
  or plain strings with images (it inserts the images before the first user message).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import doctor
from doctor.testing import make_image


def check(tmp_path: Path, records: list[dict], images: str = "exists") -> dict[str, list]:
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "b.png")
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = doctor.check(str(path), select=["DAT0", "DAT1", "DAT2"], ignore=["DAT006"], images=images,
                          image_folder=str(tmp_path))
    out: dict[str, list] = {}
    for f in report.findings:
        out.setdefault(f.code, []).append(f)
    return out


def errors(codes: dict[str, list]) -> dict[str, list]:
    return {c: fs for c, fs in codes.items() if any(f.severity.value == "error" for f in fs)}


# (clean record, broken twin, code the twin gets, loader named in its message)
VARIANTS = {
    "lf-alpaca": (
        {"instruction": "<image>What is in the picture?", "input": "", "output": "A cat on a sofa.",
         "images": ["a.png"]},
        {"instruction": "What is in the picture?", "input": "", "output": "A cat on a sofa.", "images": ["a.png"]},
        "DAT110", "LLaMA-Factory"),
    "lf-alpaca-history": (
        {"instruction": "And the colour?", "input": "", "output": "Grey.", "system": "Be brief.",
         "history": [["<image>What animal is it?", "A cat."]], "images": ["a.png"]},
        {"instruction": "And the colour?", "input": "", "output": 3, "history": [["<image>What animal?", "A cat."]],
         "images": ["a.png"]},
        "DAT013", "LLaMA-Factory"),
    "lf-sharegpt-system": (
        {"conversations": [{"from": "system", "value": "You are helpful."},
                           {"from": "human", "value": "<image>Who are they?"},
                           {"from": "gpt", "value": "Two football players."}], "images": ["a.png"]},
        {"conversations": [{"from": "system", "value": "You are helpful."},
                           {"from": "human", "value": "<image>Who are they?"},
                           {"from": "gpt", "value": "Two football players."},
                           {"from": "human", "value": "And then?"}], "images": ["a.png"]},
        "DAT103", "sharegpt"),
    "lf-sharegpt-tools": (
        {"conversations": [{"from": "human", "value": "<image>What is the weather where this is?"},
                           {"from": "function_call", "value": "{\"name\": \"weather\", \"arguments\": {}}"},
                           {"from": "observation", "value": "{\"sky\": \"clear\"}"},
                           {"from": "gpt", "value": "Clear skies."}],
         "tools": "[]", "images": ["a.png"]},
        {"conversations": [{"from": "human", "value": "<image>What is the weather where this is?"},
                           {"from": "observation", "value": "{\"sky\": \"clear\"}"},
                           {"from": "function_call", "value": "{\"name\": \"weather\", \"arguments\": {}}"},
                           {"from": "gpt", "value": "Clear skies."}],
         "tools": "[]", "images": ["a.png"]},
        "DAT103", "sharegpt"),
    "lf-openai": (
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "<image>Describe it."},
                      {"role": "assistant", "content": "A cat."}], "images": ["a.png"]},
        {"messages": [{"role": "user", "content": "<image><image>Describe it."},
                      {"role": "assistant", "content": "A cat."}], "images": ["a.png"]},
        "DAT111", "LLaMA-Factory"),
    "lf-v1-parts": (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "value": "a.png"},
                                                   {"type": "text", "value": "Who are they?"}], "loss_weight": 0.0},
                      {"role": "assistant", "content": [{"type": "text", "value": "Kane and Gretzka."}],
                       "loss_weight": 1.0},
                      {"role": "user", "content": [{"type": "text", "value": "And here?"},
                                                   {"type": "image_url", "value": "b.png"}]},
                      {"role": "assistant", "content": [{"type": "text", "value": "Celebrating."}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "value": "a.png"},
                                                   {"type": "text", "content": "Who are they?"}]},
                      {"role": "assistant", "content": [{"type": "text", "value": "Kane and Gretzka."}]}]},
        "DAT012", "LLaMA-Factory v1"),
    "trl-parts": (
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}], "images": ["a.png"]},
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                   {"type": "text", "text": "What is it?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}], "images": ["a.png"]},
        "DAT111", "LLaMA-Factory"),
    "trl-parts-own-image": (
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "a.png"},
                                                   {"type": "text", "text": "What is it?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "a.png"},
                                                   {"type": "text", "text": "What is it?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}], "images": ["b.png"]},
        "DAT111", "TRL"),
    "trl-image-url": (
        {"messages": [{"role": "user", "content": [{"type": "image", "url": "https://example.com/cat.png"},
                                                   {"type": "text", "text": "What is it?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]},
        {"messages": [{"role": "user", "content": [{"type": "img", "url": "https://example.com/cat.png"},
                                                   {"type": "text", "text": "What is it?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]},
        "DAT013", "no loader"),
    "trl-content-object": (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]}]},
        {"messages": [{"role": "user", "content": {"type": "text", "text": "Hi"}},
                      {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]}]},
        "DAT013", "TRL"),
    "placeholder-without-image": (
        {"messages": [{"role": "user", "content": "<image>What is it?"},
                      {"role": "assistant", "content": "A cat."}], "images": ["a.png"]},
        {"messages": [{"role": "user", "content": "<image>What is it?"},
                      {"role": "assistant", "content": "A cat."}]},
        "DAT112", "no images were passed"),
    "llava-placeholder-without-image": (
        {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                             {"from": "gpt", "value": "A cat."}]},
        {"conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]},
        "DAT112", "no images were passed"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_clean_and_its_broken_twin(tmp_path, variant):
    clean, broken, code, loader = VARIANTS[variant]
    assert check(tmp_path, [clean]) == {}, variant
    got = errors(check(tmp_path, [broken]))
    assert list(got) == [code], (variant, {c: [f.message for f in fs] for c, fs in got.items()})
    (finding,) = got[code]
    assert loader in finding.message and finding.location.record == 0


def test_trl_string_content_with_images_is_a_warning_naming_both_loaders(tmp_path):
    rec = {"messages": [{"role": "user", "content": "What is it?"}, {"role": "assistant", "content": "A cat."}],
           "images": ["a.png"]}
    codes = check(tmp_path, [rec])
    (f,) = codes.pop("DAT110")
    assert codes == {} and f.severity.value == "warning"
    assert "TRL" in f.message and "LLaMA-Factory raises" in f.message
    # the typed-parts twin with no image part is an error: TRL counts 0 placeholders for 1 image
    typed = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}], "images": ["a.png"]}
    assert [f.severity.value for f in check(tmp_path, [typed])["DAT110"]] == ["error"]


def test_inline_and_v1_image_paths_are_checked_on_disk(tmp_path):
    recs = [
        {"messages": [{"role": "user", "content": [{"type": "image_url", "value": "gone.png"},
                                                   {"type": "text", "value": "What?"}]},
                      {"role": "assistant", "content": [{"type": "text", "value": "A cat."}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "gone2.png"},
                                                   {"type": "text", "text": "What?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]},
    ]
    codes = check(tmp_path, recs)
    assert sorted(f.location.record for f in codes.pop("DAT201")) == [0, 1]
    assert codes == {}


def test_sharegpt_tags_in_a_llava_record_stay_errors(tmp_path):
    # "image" (singular) and a "system" turn: haotian-liu/LLaVA's roles["system"] raises KeyError
    rec = {"image": "a.png", "conversations": [{"from": "system", "value": "Be brief."},
                                               {"from": "human", "value": "<image>\nWhat?"},
                                               {"from": "gpt", "value": "A cat."}]}
    (f,) = errors(check(tmp_path, [rec]))["DAT101"]
    assert "LLaVA" in f.message


def test_alpaca_records_are_detected_not_unknown(tmp_path):
    rec = {"instruction": "Say hi.", "input": "", "output": "Hi."}
    assert check(tmp_path, [rec, rec | {"output": "Hello."}]) == {}
    (f,) = errors(check(tmp_path, [{"instruction": "Say hi.", "input": ""}]))["DAT012"]
    assert "Dropped invalid example" in f.message


def test_sharegpt_placeholder_mismatch_names_llama_factory(tmp_path):
    rec = {"conversations": [{"from": "human", "value": "Who are they?"}, {"from": "gpt", "value": "Players."}],
           "images": ["a.png"]}
    (f,) = errors(check(tmp_path, [rec]))["DAT110"]
    assert "LLaMA-Factory raises" in f.message and "LLaVA" not in f.message


@pytest.mark.parametrize("fmt", ["messages", "sharegpt", "alpaca"])
def test_image_objects_as_llama_factory_reads_them(tmp_path, fmt):
    def record(images):
        if fmt == "messages":
            return {"messages": [{"role": "user", "content": "<image>What?"},
                                 {"role": "assistant", "content": "A cat."}], "images": images}
        if fmt == "sharegpt":
            return {"conversations": [{"from": "human", "value": "<image>What?"},
                                      {"from": "gpt", "value": "A cat."}], "images": images}
        return {"instruction": "<image>What?", "input": "", "output": "A cat.", "images": images}

    # {"bytes": null, "path": ...} (what datasets' Image feature writes), alone or in a list: accepted
    assert check(tmp_path, [record([{"bytes": None, "path": "a.png"}])]) == {}
    assert check(tmp_path, [record({"bytes": None, "path": "a.png"})]) == {}
    assert check(tmp_path, [record("a.png")]) == {}
    # the path is checked on disk like any other
    assert list(errors(check(tmp_path, [record([{"bytes": None, "path": "gone.png"}])]))) == ["DAT201"]
    # without "bytes", _regularize_images raises KeyError: an error that says so
    (f,) = errors(check(tmp_path, [record([{"path": "a.png"}])]))["DAT013"]
    assert "LLaMA-Factory" in f.message and "bytes" in f.message


def test_json_lines_in_a_json_file_is_an_error_only_for_llava(tmp_path):
    llava = {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                 {"from": "gpt", "value": "A cat."}]}
    messages = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    for rec, severity in ((llava, "error"), (messages, "warning")):
        path = tmp_path / "d.json"
        path.write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
        make_image(tmp_path / "a.png")
        report = doctor.check(str(path), select=["DAT005"], images="none")
        assert [f.severity.value for f in report.findings] == [severity]

"""A tree of broken artifacts of every kind: every finding has a code, a message and a hint,
nothing crashes (no DOC001, no traceback), and the input files are never modified."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from doctor.cli import main

BROKEN: dict[str, bytes | str] = {
    "a1/adapter_config.json": "[]",
    "a2/adapter_config.json": '{"peft_type": "LORA", "r": "8", "target_modules": 5}',
    "a3/adapter_config.json": '{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj"],'
                              '"base_model_name_or_path":"/nonexistent"}',
    "a3/adapter_model.safetensors": bytes(range(100)),
    "a4/adapter_config.json": '{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":"(((",'
                              '"base_model_name_or_path":"x"}',
    "a4/adapter_model.bin": b"PK\x03\x04" + bytes(50),
    "a5/adapter_config.json": '{"peft_type":"LORA","r":0,"lora_alpha":-1,"target_modules":null,'
                              '"rank_pattern":"x","alpha_pattern":[1]}',
    "a5/adapter_model.safetensors": struct.pack("<Q", 2) + b"{}",
    "m1/config.json": '{"model_type": "llava", "text_config": "x", "vision_config": [1]}',
    "m1/model.safetensors": b"",
    "m2/config.json": '{"model_type": "llava_next", "image_grid_pinpoints": "bad", "vision_feature_layer": "x"}',
    "m2/model.safetensors.index.json": '{"weight_map": {"a": "../../etc/passwd", "b": 3}}',
    "m3/config.json": '{"model_type": "mllama", "text_config": {"cross_attention_layers": [99, "a"]}}',
    "m3/pytorch_model.bin": bytes(range(256)) * 2,
    "m4/config.json": '{"model_type": "llava_llama", "mm_projector_type": 7, "mm_hidden_size": "a"}',
    "m4/pytorch_model.bin": "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 10\n",
    "m5/config.json": "{" * 100000,
    "m5/model.safetensors": struct.pack("<Q", 30) + b'{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}'[:30],
    "m6/config.json": '{"model_type":"llava","vision_config":{"num_hidden_layers":-1},'
                      '"text_config":{"vocab_size":-5},"image_token_index":"x"}',
    "m6/model.safetensors": struct.pack("<Q", 2) + b"{}",
    "m6/tokenizer.json": '{"model": 5}',
    "m6/tokenizer_config.json": '{"added_tokens_decoder": "x", "chat_template": 5}',
    "m6/generation_config.json": '{"do_sample": "no", "temperature": "hot"}',
    "x1/projector/config.json": '{"model_type":"projector","depth":"a"}',
    "x1/llm_adapter/adapter_config.json": "{}",
    "llava-x-lora/adapter_config.json": '{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj"]}',
    "llava-x-lora/config.json": '{"model_type":"llava_llama","mm_projector_type":"mlp2x_gelu"}',
    "llava-x-lora/non_lora_trainables.bin": bytes(64),
    "r1/trainer_state.json": '{"log_history": [{"loss": "nan"}, {"loss": null, "step": "x"}, 5, {"learning_rate": [1]}]}',
    "r1/checkpoint-5/adapter_config.json": "not json",
    "r2/trainer_state.json": "[]",
    "r2/checkpoint-1/trainer_state.json": '{"log_history": "x"}',
    "d1.json": "\x00\x01\x02",
    "d2.json": "[" * 50000,
    "d3.jsonl": '{"a":1}\n[1,2]\n"x"\n\n{"conversations": "x", "image": 5}\n',
    "d4.json": json.dumps([{"id": {"x": 1}, "image": ["a.png", None, 5],
                            "conversations": [{"from": None, "value": ["x"]}, 5]}]),
    "w1.safetensors": bytes(range(20)),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("broken")
    for rel, data in BROKEN.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.symlink(root / "loop", root / "loop")  # a link to itself
    return root


def digests(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def test_broken_tree_gives_findings_not_crashes(tree, tmp_path, capsys):
    before = digests(tree)
    out = tmp_path / "report.json"
    rc = main(["check", str(tree), "--deep", "--images", "decode", "--output-format", "json", "-o", str(out), "--fix"])
    report = json.loads(out.read_text())
    assert rc == 1, capsys.readouterr().err
    assert not [f for f in report["findings"] if f["code"] == "DOC001"]
    assert {a["kind"] for a in report["artifacts"]} >= {"adapter", "model", "dataset", "run", "xtuner", "llava-lora", "weights"}
    for f in report["findings"]:
        assert f["code"] and f["message"].strip() and f["hint"], f
        assert " it is , " not in f["message"]
    after = digests(tree)
    assert {p: after[p] for p in before} == before  # every input is untouched
    written = set(after) - set(before)
    assert written and all(".fixed" in p for p in written), written  # --fix wrote new files only


@pytest.mark.parametrize("rel", sorted({r.split("/")[0] for r in BROKEN}) + ["loop"])
def test_each_broken_path_alone_exits_0_or_1(tree, rel, capsys):
    assert main(["check", str(tree / rel), "--output-format", "concise"]) in (0, 1), capsys.readouterr().err

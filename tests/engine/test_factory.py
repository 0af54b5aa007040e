"""The shared test factory (doctor.testing) builds REAL artifacts: they load offline with the
installed transformers / peft, run forward passes, and carry exactly the planted defects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

from doctor.testing import (  # noqa: E402
    LLAVA_PROBLEMS,
    MESSAGES_PROBLEMS,
    make_decompression_bomb_png,
    make_image,
    make_llava_dataset,
    make_lying_extension,
    make_messages_dataset,
    make_not_an_image,
    make_tokenizer,
    make_truncated_jpeg,
    planted_records,
)

# peft 0.21 calls a transformers 5 API deprecated for v6 when wrapping a model: noise here.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
ROOT = Path(__file__).resolve().parents[2]
PORTRAIT, SQUARE, LANDSCAPE = (64, 40), (48, 48), (40, 72)  # (height, width)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a busy 2-core box: one intra-op thread is ~100x faster than two."""
    try:
        from doctor.testing import single_thread
    except ImportError:  # pragma: no cover - torch missing
        yield
        return
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover
        yield
        return
    with single_thread():
        yield


# --- import weight -----------------------------------------------------------------------------


def test_importing_the_factory_and_its_pillow_modules_needs_no_torch(tmp_path):
    # torch / transformers / numpy made unimportable: images and datasets must still work.
    code = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'peft', 'numpy', 'tokenizers'): sys.modules[name] = None\n"
        "import doctor.testing as t\n"
        "from doctor.testing import make_image, make_llava_dataset, make_messages_dataset\n"
        f"make_llava_dataset(r'{tmp_path}', n=3, problems=('truncated-image',))\n"
        f"make_messages_dataset(r'{tmp_path}', n=3)\n"
        "assert 'doctor.testing.models' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr


# --- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,fmt", [("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.webp", "WEBP")])
def test_make_image_writes_decodable_files_of_the_asked_size(tmp_path, name, fmt):
    path = make_image(tmp_path / "sub" / name, size=(40, 64), seed=3)
    with Image.open(path) as image:
        assert image.format == fmt and image.size == (40, 64)
        image.load()
    assert make_image(tmp_path / ("again-" + name), size=(40, 64), seed=3).read_bytes() == path.read_bytes()


def test_image_kinds_and_modes(tmp_path):
    blank = Image.open(make_image(tmp_path / "blank.png", kind="blank"))
    assert blank.getextrema() == ((128, 128),) * 3
    gradient = Image.open(make_image(tmp_path / "gradient.png", kind="gradient", size=(16, 8)))
    assert gradient.getpixel((0, 0)) != gradient.getpixel((15, 7))
    assert Image.open(make_image(tmp_path / "gray.png", mode="L")).mode == "L"


def test_broken_images_fail_where_real_ones_do(tmp_path):
    truncated = make_truncated_jpeg(tmp_path / "t.jpg")
    with Image.open(truncated) as image:
        assert image.size == (48, 48)
        with pytest.raises(OSError, match="truncated"):
            image.load()

    bomb = make_decompression_bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 2000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)

    liar = make_lying_extension(tmp_path / "photo.jpg")
    with Image.open(liar) as image:
        assert image.format == "PNG"

    with pytest.raises(UnidentifiedImageError):
        Image.open(make_not_an_image(tmp_path / "x.png"))


# --- datasets ----------------------------------------------------------------------------------


def test_llava_dataset_clean_records_and_image_shapes(tmp_path):
    path = make_llava_dataset(tmp_path, n=6)
    records = json.loads(path.read_text())
    assert path == tmp_path / "data.json" and len(records) == 6
    sizes, formats = set(), set()
    for record in records:
        assert set(record) == {"id", "image", "conversations"}
        human, gpt = record["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert gpt["from"] == "gpt" and gpt["value"]
        with Image.open(tmp_path / "images" / record["image"]) as image:
            image.load()
            sizes.add(image.size)
            formats.add(image.format)
    assert sizes == {(40, 64), (48, 48), (72, 40)} and formats == {"PNG", "JPEG"}


def test_llava_dataset_plants_every_defect(tmp_path):
    problems = [p for p in LLAVA_PROBLEMS if p != "trailing-comma"]
    path = make_llava_dataset(tmp_path, n=3, problems=problems)
    records = json.loads(path.read_text())
    where = planted_records(3, problems)
    assert len(records) == 3 + len(problems)
    rec = {p: records[i] for p, i in where.items()}
    image_root = tmp_path / "images"

    def turns(p):
        return rec[p]["conversations"]

    assert all(rec[p]["id"] == p for p in problems if p != "duplicate-id")
    assert rec["duplicate-id"]["id"] == records[0]["id"]
    assert not (image_root / rec["missing-image"]["image"]).exists()
    assert "<image>" not in json.dumps(turns("no-image-token")) and "image" in rec["no-image-token"]
    assert turns("double-image-token")[0]["value"].count("<image>") == 2
    assert "<image>" in turns("image-token-in-gpt")[1]["value"]
    assert "<image>" not in turns("image-token-in-gpt")[0]["value"]
    assert [t["from"] for t in turns("bad-role")] == ["user", "assistant"]
    assert [t["from"] for t in turns("first-turn-gpt")] == ["gpt", "human", "gpt"]
    assert turns("empty-value")[1]["value"] == ""
    assert not isinstance(turns("non-string-value")[1]["value"], str)
    with pytest.raises(OSError):
        Image.open(image_root / rec["truncated-image"]["image"]).load()
    with pytest.raises(UnidentifiedImageError):
        Image.open(image_root / rec["not-an-image"]["image"])
    escaped = (image_root / rec["path-escape"]["image"]).resolve()
    assert escaped.exists() and image_root.resolve() not in escaped.parents
    assert Path(rec["absolute-path"]["image"]).is_absolute() and Path(rec["absolute-path"]["image"]).exists()
    assert len(turns("long-text")[1]["value"].split()) > 2048
    assert "image" not in rec["text-only-record"] and "<image>" not in json.dumps(rec["text-only-record"])
    assert Image.open(image_root / rec["grayscale-image"]["image"]).mode == "L"


def test_llava_dataset_jsonl_and_trailing_comma(tmp_path):
    jsonl = make_llava_dataset(tmp_path / "a", n=4, fmt="jsonl")
    assert jsonl.suffix == ".jsonl"
    assert [json.loads(line)["id"] for line in jsonl.read_text().splitlines()] == [f"sample-{i:04d}" for i in range(4)]
    broken = make_llava_dataset(tmp_path / "b", n=2, problems={"trailing-comma"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.read_text())
    assert broken.read_text().rstrip().endswith("},\n]")
    with pytest.raises(ValueError, match="unknown dataset problems"):
        make_llava_dataset(tmp_path / "c", problems={"no-such-problem"})


@pytest.mark.parametrize("content", ["list", "string"])
def test_messages_dataset_plants_every_defect(tmp_path, content):
    path = make_messages_dataset(tmp_path, n=3, problems=MESSAGES_PROBLEMS, content=content)
    records = json.loads(path.read_text())
    rec = {p: records[i] for p, i in planted_records(3, MESSAGES_PROBLEMS, MESSAGES_PROBLEMS).items()}

    def placeholders(record):
        user = next(m for m in record["messages"] if m["role"] in ("user", "human"))["content"]
        return user.count("<image>") if isinstance(user, str) else sum(p["type"] == "image" for p in user)

    for record in records[:3]:
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert placeholders(record) == len(record["images"]) == 1
        Image.open(tmp_path / record["images"][0]).load()
    assert not (tmp_path / rec["missing-image"]["images"][0]).exists()
    assert placeholders(rec["no-image-token"]) == 0 and placeholders(rec["double-image-token"]) == 2
    assert [m["role"] for m in rec["bad-role"]["messages"]] == ["human", "gpt"]
    assert rec["first-turn-assistant"]["messages"][0]["role"] == "assistant"
    assert "images" not in rec["text-only-record"] and placeholders(rec["text-only-record"]) == 0
    assert rec["path-escape"]["images"] == ["../outside.png"]


# --- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_loads_with_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    info = make_tokenizer(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"tokenizer.json", "tokenizer_config.json",
                                                   "special_tokens_map.json"}
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert type(tok).__name__ in ("LlamaTokenizer", "LlamaTokenizerFast")
    assert len(tok) == info.size == 302 and info.vocab_size == 300
    assert tok.convert_tokens_to_ids("<image>") == info.image_token_id == 300
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 301)
    ids = tok("<image>\nDescribe the image. héllo 😀").input_ids
    assert ids[:2] == [1, 300] and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True).endswith("héllo 😀")
    chat = tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                   tokenize=False, add_generation_prompt=True)
    assert chat == "<s>USER: <image>\nhi\nASSISTANT:"
    make_tokenizer(tmp_path / "again")
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (tmp_path / "tokenizer.json").read_bytes()


def test_mllama_style_tokenizer_keeps_pad_inside_the_vocabulary(tmp_path):
    info = make_tokenizer(tmp_path, extra_special=("<|image|>",), pad_in_vocab=True)
    assert info.pad_token_id == 3 < info.vocab_size == info.image_token_id == 300


# --- models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    from doctor.testing import make_llava_model

    root = tmp_path_factory.mktemp("models")
    return {family: make_llava_model(root / family, family=family) for family in ("llava", "llava_next", "mllama")}


def _load(path):
    from transformers import AutoModelForImageTextToText

    model, info = AutoModelForImageTextToText.from_pretrained(path, output_loading_info=True)
    return model.eval(), info


@pytest.mark.parametrize("family,shapes", [
    ("llava", [SQUARE]),
    ("llava_next", [PORTRAIT, SQUARE, LANDSCAPE]),
    ("mllama", [SQUARE, LANDSCAPE]),
])
def test_family_models_load_cleanly_and_run_real_images(family_models, family, shapes):
    import torch
    from transformers import AutoConfig, AutoProcessor

    info = family_models[family]
    assert AutoConfig.from_pretrained(info.path).model_type == family
    assert info.config["transformers_version"] and info.weight_files == ["model.safetensors"]
    model, loading = _load(info.path)
    assert not loading["missing_keys"] and not loading["unexpected_keys"] and not loading["mismatched_keys"]
    processor = AutoProcessor.from_pretrained(info.path)
    assert processor.tokenizer.convert_tokens_to_ids(info.image_token) == info.image_token_id
    from doctor.testing import tiny_inputs

    for shape in shapes:
        inputs = tiny_inputs(info, image_shape=shape)
        with torch.no_grad():  # HF checks image tokens against image features here
            logits = model(**inputs).logits
        assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()


def test_processors_expand_the_image_token_as_the_model_expects(family_models):
    llava, nxt, mllama = family_models["llava"], family_models["llava_next"], family_models["mllama"]
    assert llava.num_image_tokens(*SQUARE) == llava.image_seq_length == (28 // 14) ** 2
    assert llava.num_image_tokens(*PORTRAIT) == llava.image_seq_length  # resized + cropped
    counts = {shape: nxt.num_image_tokens(*shape) for shape in (PORTRAIT, SQUARE, LANDSCAPE)}
    assert len(set(counts.values())) == 3  # anyres tiling depends on the aspect ratio
    assert nxt.config["image_grid_pinpoints"] == [[28, 28], [56, 28], [28, 56]]
    assert mllama.num_image_tokens(*SQUARE) == 1
    # mllama: <|image|> id == text vocab_size by design; the embedding has 8 extra rows.
    text = mllama.config["text_config"]
    assert mllama.image_token_id == text["vocab_size"] == mllama.config["image_token_index"]
    from safetensors import safe_open

    with safe_open(mllama.path / "model.safetensors", "pt") as f:
        assert f.get_slice("language_model.model.embed_tokens.weight").get_shape()[0] == text["vocab_size"] + 8


def test_model_options_shards_bin_dtype_drops_and_overrides(tmp_path):
    from transformers import AutoProcessor

    from doctor.testing import make_llava_model

    info = make_llava_model(tmp_path / "m", family="llava_next", shard_size="20KB", weights="bin", dtype="bfloat16",
                            drop_tensors=("image_newline",), processor_layout="split",
                            config_overrides={"image_token_index": 5})
    names = {p.name for p in info.path.iterdir()}
    assert len(info.weight_files) > 2 and all(n.startswith("pytorch_model-") for n in info.weight_files)
    assert "pytorch_model.bin.index.json" in names and not any(n.endswith(".safetensors") for n in names)
    assert {"preprocessor_config.json", "chat_template.json"} <= names
    assert json.loads((info.path / "config.json").read_text())["image_token_index"] == 5
    assert AutoProcessor.from_pretrained(info.path).patch_size == 14
    model, loading = _load(info.path)
    assert loading["missing_keys"] == {"model.image_newline"} and not loading["unexpected_keys"]
    assert str(model.dtype) == "torch.bfloat16"


def test_models_are_seeded(tmp_path):
    from doctor.testing import make_llava_model

    a = make_llava_model(tmp_path / "a", seed=1)
    b = make_llava_model(tmp_path / "b", seed=1)
    c = make_llava_model(tmp_path / "c", seed=2)
    data = [(m.path / "model.safetensors").read_bytes() for m in (a, b, c)]
    assert data[0] == data[1] != data[2]


def test_text_model_and_clip_tower_load_cleanly(tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, CLIPImageProcessor, CLIPVisionModel

    from doctor.testing import make_clip_vision_tower, make_text_model

    for arch in ("llama", "mistral"):
        text = make_text_model(tmp_path / arch, arch=arch)
        _, loading = AutoModelForCausalLM.from_pretrained(text.path, output_loading_info=True)
        assert not loading["missing_keys"] and not loading["unexpected_keys"]
        assert text.config["architectures"] == [f"{arch.capitalize()}ForCausalLM"]
    for layout in ("v4", "native"):
        tower = make_clip_vision_tower(tmp_path / f"clip-{layout}", layout=layout)
        with safe_open(tower.path / "model.safetensors", "pt") as f:
            assert all(k.startswith("vision_model.") == (layout == "v4") for k in f.keys())
        _, loading = CLIPVisionModel.from_pretrained(tower.path, output_loading_info=True)
        assert not loading["missing_keys"] and not loading["unexpected_keys"]
        assert CLIPImageProcessor.from_pretrained(tower.path).crop_size["height"] == 28


# --- adapters ----------------------------------------------------------------------------------


def _adapter_tensors(path):
    from doctor.testing.weights import load, weight_files

    return load(path / weight_files(path)[0])


def _logits(model, inputs):
    import torch

    with torch.no_grad():
        return model(**inputs).logits


def test_lora_adapter_is_real_and_changes_logits(family_models, tmp_path):
    import torch
    from peft import PeftModel

    from doctor.testing import make_lora_adapter, tiny_inputs

    info = family_models["llava"]
    inputs = tiny_inputs(info, image_shape=SQUARE)
    trained = make_lora_adapter(info, tmp_path / "trained")
    untrained = make_lora_adapter(info, tmp_path / "zero", zero_lora_b=True)
    tensors = _adapter_tensors(trained)
    assert tensors and all(".language_model." in k for k in tensors)
    assert all(k.startswith("base_model.model.model.language_model.layers.") for k in tensors)
    assert all(t.abs().max() > 0 for k, t in tensors.items() if "lora_B" in k)
    assert all(t.abs().max() == 0 for k, t in _adapter_tensors(untrained).items() if "lora_B" in k)

    base, _ = _load(info.path)
    reference = _logits(base, inputs)
    with_lora = PeftModel.from_pretrained(base, trained)
    assert not torch.allclose(_logits(with_lora, inputs), reference)
    zero = PeftModel.from_pretrained(_load(info.path)[0], untrained)
    assert torch.equal(_logits(zero, inputs), reference)


def test_lora_adapter_options(family_models, tmp_path):
    from doctor.testing import make_lora_adapter

    info = family_models["mllama"]
    out = make_lora_adapter(info, tmp_path / "opts", r=8, alpha=16, use_rslora=True, rank_pattern={"v_proj": 2},
                            alpha_pattern={"v_proj": 4}, save_format="bin", nan=True, train_steps=1,
                            base_model_name_or_path="meta-llama/Llama-3.2-11B-Vision")
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (8, 16, True)
    assert config["rank_pattern"] == {"v_proj": 2} and config["alpha_pattern"] == {"v_proj": 4}
    assert config["base_model_name_or_path"] == "meta-llama/Llama-3.2-11B-Vision"
    assert (out / "adapter_model.bin").exists()
    tensors = _adapter_tensors(out)
    assert sum(bool(t.isnan().any()) for t in tensors.values()) == 1
    assert any(k.endswith("v_proj.lora_A.weight") and t.shape[0] == 2 for k, t in tensors.items())

    bare = make_lora_adapter(family_models["llava"], tmp_path / "bare", target_modules=["q_proj"], train_steps=0)
    assert any(".vision_tower." in k for k in _adapter_tensors(bare))  # bare names reach the tower too
    # Text-only training never reaches the tower: its lora_B still comes out non-zero.
    tower = make_lora_adapter(family_models["llava"], tmp_path / "tower", target_modules=r".*vision_tower.*\.q_proj")
    b = [t for k, t in _adapter_tensors(tower).items() if "lora_B" in k]
    assert b and all(t.abs().max() > 0 for t in b)


def test_original_llava_lora_layout(tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from doctor.testing import make_llava_original_lora

    info = make_llava_original_lora(tmp_path)
    assert info.path.name == "llava-v1.5-tiny-lora"
    assert {p.name for p in info.path.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                    "config.json", "non_lora_trainables.bin"}
    config = json.loads((info.path / "config.json").read_text())
    assert config["model_type"] == "llava_llama" and config["mm_projector_type"] == "mlp2x_gelu"
    assert (config["mm_vision_select_layer"], config["mm_vision_select_feature"]) == (-2, "patch")
    assert config["mm_use_im_start_end"] is False and config["image_aspect_ratio"] == "pad"
    assert Path(config["mm_vision_tower"]) == info.vision_tower_dir and config["mm_hidden_size"] == 32
    tensors = _adapter_tensors(info.path)
    assert {k.split(".layers.")[0] for k in tensors} == {"base_model.model.model"}
    assert {k.split(".")[-3] for k in tensors} == set(info.target_modules)

    non_lora = torch.load(info.path / "non_lora_trainables.bin", weights_only=True)
    assert {k: tuple(v.shape) for k, v in non_lora.items()} == {
        "base_model.model.model.mm_projector.0.weight": (32, 32), "base_model.model.model.mm_projector.0.bias": (32,),
        "base_model.model.model.mm_projector.2.weight": (32, 32), "base_model.model.model.mm_projector.2.bias": (32,)}

    base = AutoModelForCausalLM.from_pretrained(info.base_dir).eval()
    ids = {"input_ids": torch.tensor([[1, 5, 9, 200]])}
    reference = _logits(base, ids)
    assert not torch.allclose(_logits(PeftModel.from_pretrained(base, info.path), ids), reference)

    linear = make_llava_original_lora(tmp_path, projector_type="linear", folder_name="llava-linear-lora",
                                      base_dir=info.base_dir, vision_tower_dir=info.vision_tower_dir, mm_hidden=32)
    assert set(linear.projector_keys) == {"base_model.model.model.mm_projector.weight",
                                          "base_model.model.model.mm_projector.bias"}
    bare = make_llava_original_lora(tmp_path, folder_name="llava-bare-lora", with_non_lora=False,
                                    base_dir=info.base_dir, vision_tower_dir=info.vision_tower_dir)
    assert not (bare.path / "non_lora_trainables.bin").exists()


def test_original_llava_merged_model_layout(tmp_path):
    from doctor.testing import make_llava_original_model
    from doctor.testing.weights import load

    info = make_llava_original_model(tmp_path, model_type="llava", shard_size="40KB")
    config = json.loads((info.path / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaLlamaForCausalLM"]
    index = json.loads((info.path / "model.safetensors.index.json").read_text())
    keys = set(index["weight_map"])
    assert {"lm_head.weight", "model.embed_tokens.weight", "model.mm_projector.0.weight",
            "model.mm_projector.2.bias"} <= keys
    assert any(k.startswith("model.vision_tower.vision_tower.vision_model.encoder.layers.") for k in keys)
    assert set(index["weight_map"].values()) == set(info.weight_files) and len(info.weight_files) > 1
    shapes = {k: tuple(v.shape) for f in info.weight_files for k, v in load(info.path / f).items()}
    assert shapes["model.mm_projector.0.weight"] == (info.hidden_size, info.mm_hidden_size)


def test_xtuner_release_layout(tmp_path):
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    from doctor.testing import make_xtuner_release

    info = make_xtuner_release(tmp_path, hidden=48, visual_hidden=32)
    assert {p.name for p in info.path.iterdir()} == {"llm_adapter", "visual_encoder_adapter", "projector"}
    config = json.loads((info.projector / "config.json").read_text())
    assert config["model_type"] == "projector" and config["architectures"] == ["ProjectorModel"]
    assert (config["visual_hidden_size"], config["llm_hidden_size"], config["depth"]) == (32, 48, 2)
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel"}
    with safe_open(info.projector / "model.safetensors", "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes == {"model.0.weight": (48, 32), "model.0.bias": (48,), "model.2.weight": (48, 48),
                      "model.2.bias": (48,)}
    visual = _adapter_tensors(info.visual_encoder_adapter)
    assert all(k.startswith("base_model.model.vision_model.encoder.layers.") for k in visual)

    base = AutoModelForCausalLM.from_pretrained(info.llm_dir).eval()
    ids = {"input_ids": torch.tensor([[1, 5, 9, 200]])}
    reference = _logits(base, ids)
    assert not torch.allclose(_logits(PeftModel.from_pretrained(base, info.llm_adapter), ids), reference)

    native = make_xtuner_release(tmp_path / "native", vision_key_layout="native")
    tower = CLIPVisionModel.from_pretrained(native.visual_encoder_dir).eval()
    pixels = {"pixel_values": torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        before = tower(**pixels).last_hidden_state
        after = PeftModel.from_pretrained(tower, native.visual_encoder_adapter)(**pixels).last_hidden_state
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("layout", ["native", "split"])
def test_processor_overrides_plant_mismatches_in_either_layout(tmp_path, layout):
    import torch
    from transformers import AutoProcessor

    from doctor.testing import DELETE, make_llava_model, tiny_inputs

    info = make_llava_model(tmp_path / "m", family="llava_next", processor_layout=layout,
                            processor_overrides={"image_processor.image_grid_pinpoints": [[28, 28]]})
    assert AutoProcessor.from_pretrained(info.path).image_processor.image_grid_pinpoints == [[28, 28]]
    assert info.config["image_grid_pinpoints"] == [[28, 28], [56, 28], [28, 56]]
    model, _ = _load(info.path)
    with pytest.raises(RuntimeError, match="split_with_sizes"), torch.no_grad():  # H2: tiled differently
        model(**tiny_inputs(info, image_shape=PORTRAIT))

    bare = make_llava_model(tmp_path / "bare", processor_layout=layout, processor_overrides={"patch_size": DELETE})
    assert "patch_size" not in json.loads((bare.path / "processor_config.json").read_text())
    assert AutoProcessor.from_pretrained(bare.path).patch_size is None

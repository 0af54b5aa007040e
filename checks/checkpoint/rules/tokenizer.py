"""CKP401-CKP405: the tokenizer of a model folder (or of ``--tokenizer``) against config.json and
the embedding rows in the weights' headers. No transformers import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.fixtures import ModelWeights, image_token_id, load_json_dict, text_config
from doctor.checks.checkpoint.installed import installed_transformers
from doctor.checks.checkpoint.tokenizer_files import TokenizerFacts, read_tokenizer

from doctor.envprobe import version_tuple
from doctor.errors import Skip
from doctor.families import default_image_tokens
from doctor.findings import Location, Severity
from doctor.registry import Check, fixture, register

DEFAULT_IMAGE_TOKENS = default_image_tokens()  # model_type -> placeholder, from doctor.families


@fixture
def ckp_own_tokenizer(ckp_folder: Path) -> TokenizerFacts:
    """The model folder's own tokenizer files (what ``AutoTokenizer(model_path)`` reads)."""
    return read_tokenizer(ckp_folder)


@fixture
def ckp_tokenizer(ckp_own_tokenizer: TokenizerFacts, options: Any) -> TokenizerFacts:
    """The tokenizer the other checks compare with the model: the folder's own, or ``--tokenizer``
    when the folder has none."""
    other = getattr(options, "tokenizer", None)
    if not ckp_own_tokenizer.has_tokenizer and other:
        return read_tokenizer(Path(other))
    return ckp_own_tokenizer


@fixture
def ckp_embedding_rows(ckp_config: dict[str, Any], ckp_weights: ModelWeights) -> tuple[int, str]:
    """Rows of the input embedding: from the headers, else what transformers builds from config."""
    emb = ckp_weights.embedding_rows() if ckp_weights.complete else None
    if emb is not None:
        return emb[1], f"the embedding {emb[0]} has {emb[1]} rows"
    vocab = text_config(ckp_config).get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool):
        raise Skip("neither the weights nor config.json give the embedding size")
    extra = 8 if ckp_config.get("model_type") == "mllama" else 0
    return vocab + extra, f"config.json gives {vocab + extra} embedding rows"


def is_native_vlm(config: dict[str, Any]) -> bool:
    """A transformers VLM (llava, llava_next, mllama, ...), not an original-LLaVA folder."""
    return isinstance(config.get("vision_config"), dict) and image_token_id(config)[0] is not None


def _tok_file(facts: TokenizerFacts, name: str = "tokenizer_config.json") -> str:
    return str(facts.folder / name)


@register
class TokenizerFilesMissing(Check):
    """The model folder has no tokenizer files, or tokenizer files that do not load.

    ## What it does
    Looks for `tokenizer_config.json` and a vocabulary file (`tokenizer.json`, `tokenizer.model`,
    `vocab.json`, ...) in the model folder (or in `--tokenizer`), and checks they parse. Models
    without a text side (a config with no `vocab_size`, such as a CLIP vision tower) need none.

    ## Why is this bad?
    `AutoTokenizer.from_pretrained(model_path)` on such a folder falls back to the model's config
    class: transformers 4.x raises `KeyError: 'LlavaConfig'`, 5.x `ValueError: Couldn't instantiate
    the backend tokenizer`. The model itself loads (`from_pretrained` never reads tokenizer files),
    so a folder with NO tokenizer files at all is a warning: people load the tokenizer from the base.
    It is an error when the folder is an original-LLaVA model (`model_type` `llava_llama`,
    `llava_mistral`, ...), because LLaVA's `load_pretrained_model` without `--model-base` calls
    `AutoTokenizer.from_pretrained(model_path)` itself and fails, and when tokenizer files are
    present but broken (a `tokenizer_config.json` that is not JSON, one with no vocabulary file
    beside it): then every tokenizer load of this folder fails. Typical causes: an unfinished merge,
    a LoRA folder passed as the base, `--model-path` and `--model-base` swapped.

    ## Example
    `merged/` with config.json and model.safetensors only.

    ## How to fix
    Copy the tokenizer files (tokenizer_config.json, tokenizer.json or tokenizer.model,
    special_tokens_map.json) from the base model into the folder, or pass the tokenizer's folder
    explicitly.
    """

    code = "CKP401"
    name = "tokenizer-files-missing"
    severity = Severity.WARNING  # no tokenizer at all; broken files and original LLaVA are errors
    artifacts = frozenset({"model"})

    def run(self, ckp_own_tokenizer: TokenizerFacts, ckp_config: dict[str, Any], options: Any):
        t = ckp_own_tokenizer
        cls = ckp_config.get("model_type", "?")
        if not t.has_tokenizer and not _has_text_side(ckp_config):
            return  # a vision tower (CLIPVisionModel, SigLIP) or a projector reads no text
        if not t.has_tokenizer:
            info = installed_transformers()
            v4 = info is not None and version_tuple(info.version)[:1] < (5,)
            error = "KeyError on the config class" if v4 else "ValueError: Couldn't instantiate the backend tokenizer"
            nothing = not t.config_file.exists
            what = "no tokenizer files at all" if nothing else \
                "tokenizer_config.json but no vocabulary (tokenizer.json / tokenizer.model)"
            other = getattr(options, "tokenizer", None)
            also = f" (the other checks use --tokenizer {other})" if other else ""
            original = _is_original_llava(ckp_config)
            if nothing and not original:
                severity, where = Severity.WARNING, "the model loads; load the tokenizer from the base"
            elif original:
                severity, where = Severity.ERROR, "LLaVA's load_pretrained_model reads the tokenizer from this folder"
            else:
                severity, where = Severity.ERROR, "the tokenizer files here are incomplete"
            yield self.finding(f"{what}: AutoTokenizer on this folder fails ({error}; transformers 4.x: "
                               f"KeyError: '{_config_class(cls)}'); {where}{also}", path=str(t.folder),
                               severity=severity)
        if t.config_file.exists and not t.config_file.ok:
            loc = Location(line=t.config_file.line, column=t.config_file.column) if t.config_file.line else None
            yield self.finding(f"tokenizer_config.json is not valid JSON: {t.config_file.error}",
                               path=_tok_file(t), location=loc, severity=Severity.ERROR)
        for problem in t.problems:
            yield self.finding(problem, path=str(t.folder), severity=Severity.ERROR)


def _has_text_side(config: dict[str, Any]) -> bool:
    """A model that reads tokens: its config, or a sub-config, declares a vocabulary."""
    if "vocab_size" in config:
        return True
    return any(isinstance(sub, dict) and "vocab_size" in sub for sub in config.values())


def _is_original_llava(config: dict[str, Any]) -> bool:
    """A checkpoint of the LLaVA codebase (loaded by its builder, not by transformers' Auto classes)."""
    from doctor.checks.checkpoint.rules.config import ORIGINAL_CONFIG_CLASSES, ORIGINAL_CONFIG_KEYS

    return config.get("model_type") in ORIGINAL_CONFIG_CLASSES or any(k in config for k in ORIGINAL_CONFIG_KEYS)


def _config_class(model_type: str) -> str:
    from doctor.checks.checkpoint.rules.config import ORIGINAL_CONFIG_CLASSES

    if model_type in ORIGINAL_CONFIG_CLASSES:
        return ORIGINAL_CONFIG_CLASSES[model_type]
    info = installed_transformers()
    return (info.model_types.get(model_type) if info else None) or "LlavaConfig"


def _require_vocab(t: TokenizerFacts) -> None:
    if t.vocab is None:
        raise Skip("the tokenizer's vocabulary could not be read (see CKP401)")


@register
class TokenizerLargerThanEmbedding(Check):
    """The tokenizer produces ids beyond the rows of the input embedding.

    ## What it does
    Compares the largest token id (vocabulary plus added tokens, i.e. `len(tokenizer)`) with the
    embedding rows read from the weights' headers (or, without weights, from `vocab_size`).

    ## Why is this bad?
    A token whose id has no row raises `IndexError: index out of range in self` (CUDA: "device-side
    assert triggered") the first time it appears, typically the `<image>` or `<pad>` token added
    for fine-tuning without `resize_token_embeddings`.

    ## Example
    tokenizer with 32002 tokens (`<image>` 32000, `<pad>` 32001), embedding [32000, 4096].

    ## How to fix
    Resize the embedding before training or saving (`model.resize_token_embeddings(len(tokenizer))`),
    or use the tokenizer the model was trained with.
    """

    code = "CKP402"
    name = "tokenizer-larger-than-embedding"
    artifacts = frozenset({"model"})

    def run(self, ckp_tokenizer: TokenizerFacts, ckp_embedding_rows: tuple[int, str]):
        _require_vocab(ckp_tokenizer)
        rows, source = ckp_embedding_rows
        top = ckp_tokenizer.max_id
        if top is not None and top >= rows:
            over = sorted((i, tok) for tok, i in ckp_tokenizer.vocab.items() if i >= rows)  # type: ignore[union-attr]
            shown = ", ".join(f"{tok!r}={i}" for i, tok in over[:3])
            yield self.finding(f"the tokenizer has {ckp_tokenizer.size} tokens (largest id {top}) but {source}: "
                               f"{len(over)} token(s) have no row ({shown})", path=str(ckp_tokenizer.folder))


@register
class ImageTokenMismatch(Check):
    """The image placeholder token is missing from the tokenizer or its id differs from config.json.

    ## What it does
    Looks up the processor's image token (`<image>`; mllama `<|image|>`; or the `image_token` the
    processor or tokenizer config names) in the vocabulary and compares its id with
    `image_token_id` / `image_token_index` in config.json.

    ## Why is this bad?
    The processor writes the tokenizer's id; the model looks for the config's: no placeholder is
    found and generation fails with `Image features and image tokens do not match: tokens: 0,
    features 576` (or an image-blind answer).

    ## Example
    `"image_token_index": 32000` while the tokenizer has `<image>` = 32001 (tokens added in another order).

    ## How to fix
    Set `image_token_index` (`image_token_id`) in config.json to the tokenizer's id of the token, or
    add the token to the tokenizer (and resize the embedding).
    """

    code = "CKP403"
    name = "image-token-mismatch"
    artifacts = frozenset({"model"})

    def run(self, ckp_tokenizer: TokenizerFacts, ckp_config: dict[str, Any], path: str):
        if not is_native_vlm(ckp_config):
            return  # original LLaVA uses the -200 sentinel, never a vocabulary token
        _require_vocab(ckp_tokenizer)
        key, want = image_token_id(ckp_config)
        proc = load_json_dict(Path(path) / "processor_config.json") or {}
        token = (proc.get("image_token") if isinstance(proc.get("image_token"), str) else None) or \
            ckp_tokenizer.named_token("image_token") or DEFAULT_IMAGE_TOKENS.get(ckp_config.get("model_type"), "<image>")
        have = ckp_tokenizer.id_of(token)
        where = str(Path(path) / "config.json")
        if have is None:
            yield self.finding(f"the tokenizer has no {token!r} token, the image placeholder the processor inserts",
                               path=str(ckp_tokenizer.folder),
                               hint=f"Add {token!r} as a special token (id {want}) or use the model's own tokenizer.")
        elif have != want:
            yield self.finding(f"config.json {key} is {want} but the tokenizer's {token!r} is {have}: the model never "
                               "finds the image placeholders", path=where, location=Location(key=key or ""),
                               hint=f"Set {key} to {have} in config.json.")


@register
class ChatTemplateMissing(Check):
    """A chat VLM ships no chat template.

    ## What it does
    Looks for a chat template in tokenizer_config.json, chat_template.jinja, chat_template.json or
    processor_config.json of a transformers VLM folder.

    ## Why is this bad?
    `processor.apply_chat_template(...)` raises "Cannot use chat template functions because
    tokenizer.chat_template is not set", and hand-built prompts drift from the format the model was
    trained on.

    ## Example
    A merged llava folder whose processor files were not copied from the base.

    ## How to fix
    Copy chat_template.jinja (or chat_template.json) from the base model, or set the template the
    model was trained with.
    """

    code = "CKP404"
    name = "chat-template-missing"
    severity = Severity.WARNING
    artifacts = frozenset({"model"})

    def run(self, ckp_tokenizer: TokenizerFacts, ckp_config: dict[str, Any], path: str):
        if not is_native_vlm(ckp_config):
            return
        if ckp_tokenizer.chat_template_source is None and _chat_template_in(Path(path)) is None:
            yield self.finding("no chat template in tokenizer_config.json, chat_template.jinja, chat_template.json "
                               "or processor_config.json", path=path)


def _chat_template_in(folder: Path) -> str | None:
    from doctor.checks.checkpoint.tokenizer_files import _chat_template

    return _chat_template(folder, load_json_dict(folder / "tokenizer_config.json"))


@register
class SpecialTokenInvalid(Check):
    """A special token is not in the vocabulary, or a special token id has no embedding row.

    ## What it does
    Checks that the tokenizer's `bos`/`eos`/`unk`/`pad` tokens are in its vocabulary, and that the
    `bos_token_id` / `eos_token_id` / `pad_token_id` of config.json and generation_config.json are
    rows of the embedding.

    ## Why is this bad?
    A special token missing from the vocabulary is added on load with a new id beyond the
    embedding; an id beyond the embedding raises `IndexError` when padding or when generation
    appends it, and an `eos_token_id` that never matches makes generation run to `max_new_tokens`.

    ## Example
    `"pad_token": "<pad>"` in tokenizer_config.json with no `<pad>` in tokenizer.json.

    ## How to fix
    Add the token to the tokenizer (and resize the embedding) or point the special token / id at one
    that exists.
    """

    code = "CKP405"
    name = "special-token-invalid"
    artifacts = frozenset({"model"})

    def run(self, ckp_tokenizer: TokenizerFacts, ckp_config: dict[str, Any], ckp_embedding_rows: tuple[int, str],
            path: str):
        t = ckp_tokenizer
        if t.vocab is not None:
            for role, text in sorted(t.special.items()):
                if text not in t.vocab:
                    yield self.finding(f"{role} {text!r} is not in the tokenizer's vocabulary", path=_tok_file(t),
                                       location=Location(key=role))
        rows, source = ckp_embedding_rows
        folder = Path(path)
        sources = [("config.json", ckp_config), ("config.json", text_config(ckp_config)),
                   ("generation_config.json", load_json_dict(folder / "generation_config.json") or {})]
        seen: set[tuple[str, str]] = set()
        for fname, cfg in sources:
            prefix = "text_config." if cfg is not ckp_config and fname == "config.json" else ""
            for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                for value in _ids(cfg.get(key)):
                    if value >= rows and (fname, prefix + key) not in seen:
                        seen.add((fname, prefix + key))
                        yield self.finding(f"{prefix}{key} {value} is beyond the embedding ({source})",
                                           path=str(folder / fname), location=Location(key=prefix + key))


def _ids(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []

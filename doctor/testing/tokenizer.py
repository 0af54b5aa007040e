"""A tiny Llama-style tokenizer folder that ``AutoTokenizer.from_pretrained`` loads offline.

Built with the ``tokenizers`` library only (no torch, no transformers import): a BPE model with
byte fallback (ids 0-2 are ``<unk> <s> </s>``, then the 256 ``<0xNN>`` byte tokens, then
``▁`` + letters and a few whole words), a Metaspace pre-tokenizer, and a post-processor that
prepends ``<s>``. Any text tokenizes; unseen characters fall back to bytes, as in Llama-2.
The vocabulary is hand-made, so the same arguments always give the same files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BASE_SPECIALS = ("<unk>", "<s>", "</s>")
MIN_VOCAB_SIZE = len(BASE_SPECIALS) + 1 + 256 + 27  # + "<pad>" + bytes + "▁" and a-z

_LETTERS = "etaoinsrhldcumfpgwybvkxjqz"
_WORDS = ("the", "image", "describe", "what", "is", "in", "this", "picture", "of", "and", "a",
          "cat", "dog", "on", "red", "blue", "there", "are", "two", "it", "color", "how", "many",
          "detail", "shown", "street", "night", "park", "user", "assistant")
_EXTRA_PIECES = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?:;'\"-()")


@dataclass(frozen=True)
class TokenizerInfo:
    """What ``make_tokenizer`` wrote. ``vocab_size`` counts the BPE vocabulary (specials, bytes,
    pieces); ``size`` is ``len(tokenizer)``, added tokens included."""

    path: Path
    vocab_size: int
    size: int
    image_token: str | None
    image_token_id: int | None
    bos_token_id: int
    eos_token_id: int
    unk_token_id: int
    pad_token_id: int | None
    special_ids: dict[str, int] = field(default_factory=dict)
    chat_template: str | None = None


def make_tokenizer(
    dir: str | Path,
    vocab_size: int = 300,
    extra_special: Sequence[str] = ("<image>",),
    model_max_length: int = 2048,
    chat_template: bool | str = True,
    pad_token: str | None = "<pad>",
    pad_in_vocab: bool = False,
    tokenizer_class: str = "LlamaTokenizer",
) -> TokenizerInfo:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

    ``extra_special`` tokens are added after the vocabulary as special tokens (ids
    ``vocab_size``, ``vocab_size + 1``, ...); the first one is the image placeholder the chat
    template emits. ``pad_token`` is added after them (the llava-hf layout: ``<image>`` 32000,
    ``<pad>`` 32001), or, with ``pad_in_vocab=True``, sits at id 3 inside the vocabulary (the
    mllama layout, where pad must be below the text ``vocab_size``). ``chat_template``: True
    for a small USER:/ASSISTANT: template, a string for your own, False for none.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (specials, 256 bytes, letters)")
    specials = list(BASE_SPECIALS) + ([pad_token] if pad_token and pad_in_vocab else [])
    vocab, merges = _vocab(specials, vocab_size)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    added = list(specials) + list(extra_special) + ([pad_token] if pad_token and not pad_in_vocab else [])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])

    path = Path(dir)
    path.mkdir(parents=True, exist_ok=True)
    backend.save(str(path / "tokenizer.json"))
    image_token = extra_special[0] if extra_special else None
    template = _template(image_token or "<image>") if chat_template is True else (chat_template or None)
    special_map = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if pad_token:
        special_map["pad_token"] = pad_token
    config = {
        "tokenizer_class": tokenizer_class, **special_map,
        "additional_special_tokens": list(extra_special),
        "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "model_max_length": model_max_length, "padding_side": "right",
        "clean_up_tokenization_spaces": False,
    }
    if template:
        config["chat_template"] = template
    _dump(path / "tokenizer_config.json", config)
    _dump(path / "special_tokens_map.json", {**special_map, "additional_special_tokens": list(extra_special)})

    ids = {token: backend.token_to_id(token) for token in added}
    return TokenizerInfo(
        path=path, vocab_size=len(vocab), size=backend.get_vocab_size(with_added_tokens=True),
        image_token=image_token, image_token_id=ids.get(image_token) if image_token else None,
        bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], unk_token_id=ids["<unk>"],
        pad_token_id=ids.get(pad_token) if pad_token else None, special_ids=ids, chat_template=template,
    )


def _vocab(specials: list[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = {token: i for i, token in enumerate(specials)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for piece in "▁" + _LETTERS:
        vocab[piece] = len(vocab)
    # Whole words as left-to-right merge chains: "▁"+"t" -> "▁t", "▁t"+"h" -> "▁th", ...
    chains = [(current, ch) for word in _WORDS for current, ch in _chain(word)]
    for left, ch in chains:
        if len(vocab) >= vocab_size:
            break
        if left + ch not in vocab:
            vocab[left + ch] = len(vocab)
            merges.append((left, ch))
    for piece in _EXTRA_PIECES:
        if len(vocab) >= vocab_size:
            break
        vocab[piece] = len(vocab)
    while len(vocab) < vocab_size:  # never produced by the merges; fills the requested size
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    return vocab, merges


def _chain(word: str) -> list[tuple[str, str]]:
    prefixes = ["▁" + word[:i] for i in range(len(word))]
    return list(zip(prefixes, word, strict=True))


def _template(image_token: str) -> str:
    # Accepts string content and typed parts ({"type": "image"} / {"type": "text"}). Newlines are
    # written as {{ '\\n' }}: transformers renders with trim_blocks, which eats one after a tag.
    return (
        "{{ bos_token }}{% for message in messages %}"
        "{% if message['role'] == 'system' %}{% set prefix = '' %}"
        "{% else %}{% set prefix = message['role'] | upper + ': ' %}{% endif %}{{ prefix }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}" + image_token + "{{ '\\n' }}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )


def _dump(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

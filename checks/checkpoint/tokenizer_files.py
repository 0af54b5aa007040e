"""A tokenizer folder read without transformers: which files are there, the vocabulary (token ->
id) from tokenizer.json, tokenizer.model (sentencepiece protobuf, parsed by hand), vocab.json or
vocab.txt, the added tokens (tokenizer.json, added_tokens.json, ``added_tokens_decoder``), the
special tokens and the chat template."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.fixtures import JsonFile, load_json_dict, read_json

VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tiktoken.model", "qwen.tiktoken",
               "spiece.model")
SPECIAL_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token")


@dataclass
class TokenizerFacts:
    folder: Path
    config: dict[str, Any] | None
    config_file: JsonFile
    vocab_files: list[str] = field(default_factory=list)
    vocab: dict[str, int] | None = None  # every token -> id, added tokens included; None when unknown
    special: dict[str, str] = field(default_factory=dict)  # role -> token text
    chat_template_source: str | None = None
    problems: list[str] = field(default_factory=list)  # files present but unreadable

    @property
    def has_tokenizer(self) -> bool:
        return bool(self.vocab_files)

    @property
    def size(self) -> int | None:
        """``len(tokenizer)``: distinct ids, added tokens included."""
        return len(set(self.vocab.values())) if self.vocab is not None else None

    @property
    def max_id(self) -> int | None:
        return max(self.vocab.values(), default=-1) if self.vocab is not None else None

    def id_of(self, token: str) -> int | None:
        return self.vocab.get(token) if self.vocab is not None else None

    def named_token(self, key: str) -> str | None:
        """A processor token the tokenizer config names (``image_token`` in
        ``extra_special_tokens`` or at the top level)."""
        cfg = self.config or {}
        extra = cfg.get("extra_special_tokens")
        if isinstance(extra, dict) and isinstance(extra.get(key), str):
            return extra[key]
        value = cfg.get(key)
        return _token_text(value)


def read_tokenizer(folder: Path) -> TokenizerFacts:
    cfg_file = read_json(folder / "tokenizer_config.json")
    cfg = cfg_file.data if cfg_file.ok and isinstance(cfg_file.data, dict) else None
    facts = TokenizerFacts(folder, cfg, cfg_file)
    facts.vocab_files = [n for n in VOCAB_FILES if (folder / n).is_file()]
    facts.vocab = _vocabulary(folder, facts)
    stm = load_json_dict(folder / "special_tokens_map.json") or {}
    for role in SPECIAL_ROLES:
        text = _token_text((cfg or {}).get(role)) or _token_text(stm.get(role))
        if text:
            facts.special[role] = text
    facts.chat_template_source = _chat_template(folder, cfg)
    return facts


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _vocabulary(folder: Path, facts: TokenizerFacts) -> dict[str, int] | None:
    vocab: dict[str, int] | None = None
    if (folder / "tokenizer.json").is_file():
        tj = read_json(folder / "tokenizer.json")
        if not tj.ok or not isinstance(tj.data, dict):
            facts.problems.append(f"tokenizer.json is unreadable: {tj.error or 'not an object'}")
        else:
            vocab = _tokenizer_json_vocab(tj.data)
            if vocab is None:
                facts.problems.append("tokenizer.json has no model.vocab this reader understands")
    elif (folder / "tokenizer.model").is_file():
        pieces = _sentencepiece_pieces(folder / "tokenizer.model")
        if pieces is None:
            facts.problems.append("tokenizer.model is not a sentencepiece model")
        else:
            vocab = {}
            for i, p in enumerate(pieces):
                vocab.setdefault(p, i)
    elif (folder / "vocab.json").is_file():
        vj = load_json_dict(folder / "vocab.json")
        vocab = {k: v for k, v in vj.items() if isinstance(v, int)} if vj else None
    elif (folder / "vocab.txt").is_file():
        try:
            lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
            vocab = {t: i for i, t in enumerate(lines)}
        except (OSError, UnicodeDecodeError):
            vocab = None
    if vocab is None:
        return None
    added = load_json_dict(folder / "added_tokens.json") or {}
    for tok, i in added.items():
        if isinstance(i, int):
            vocab[tok] = i
    decoder = (facts.config or {}).get("added_tokens_decoder")
    if isinstance(decoder, dict):
        for i, entry in decoder.items():
            text = _token_text(entry)
            if text is not None and str(i).isdigit():
                vocab[text] = int(i)
    return vocab


def _tokenizer_json_vocab(data: dict[str, Any]) -> dict[str, int] | None:
    model = data.get("model")
    raw = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(raw, dict):
        vocab = {k: v for k, v in raw.items() if isinstance(v, int)}
    elif isinstance(raw, list):  # Unigram: [[piece, score], ...]
        vocab = {}
        for i, entry in enumerate(raw):
            if isinstance(entry, list) and entry and isinstance(entry[0], str):
                vocab.setdefault(entry[0], i)
    else:
        return None
    for tok in data.get("added_tokens") or []:
        if isinstance(tok, dict) and isinstance(tok.get("content"), str) and isinstance(tok.get("id"), int):
            vocab[tok["content"]] = tok["id"]
    return vocab


def _chat_template(folder: Path, cfg: dict[str, Any] | None) -> str | None:
    if cfg and cfg.get("chat_template"):
        return "tokenizer_config.json"
    for name in ("chat_template.jinja", "chat_template.json"):
        if (folder / name).is_file():
            return name
    if (folder / "chat_templates").is_dir() and any((folder / "chat_templates").glob("*.jinja")):
        return "chat_templates/"
    proc = load_json_dict(folder / "processor_config.json") or {}
    if proc.get("chat_template"):
        return "processor_config.json"
    return None


def _sentencepiece_pieces(path: Path, limit: int = 64 << 20) -> list[str] | None:
    """The pieces of a sentencepiece ``ModelProto``: repeated field 1 (``SentencePiece``), whose
    own field 1 is the piece text. A hand-written protobuf wire-format walk."""
    try:
        if path.stat().st_size > limit:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    pieces: list[str] = []
    try:
        for field_no, payload in _fields(data):
            if field_no == 1 and payload is not None:
                piece = next((p.decode("utf-8") for f, p in _fields(payload) if f == 1 and p is not None), None)
                if piece is None:
                    return None
                pieces.append(piece)
    except (IndexError, UnicodeDecodeError, ValueError):
        return None
    return pieces or None


def _fields(msg: bytes):
    """(field number, bytes payload or None) of each field of a protobuf message; ValueError on
    a wire type we cannot skip or a length past the end."""
    pos = 0
    while pos < len(msg):
        key, pos = _varint(msg, pos)
        field_no, wire = key >> 3, key & 7
        if wire == 2:
            n, pos = _varint(msg, pos)
            if pos + n > len(msg):
                raise ValueError("length past the end")
            yield field_no, msg[pos:pos + n]
            pos += n
            continue
        if wire == 0:
            _, pos = _varint(msg, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
        yield field_no, None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")

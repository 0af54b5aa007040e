"""Tokenizer loading and the token cost of a conversation template, for the token budget.

The count is an estimate built from per-turn pieces (tokenizing every record through a jinja
chat template would cost more than the whole structure scan): each turn's text is tokenized on
its own, and the template adds a fixed number of tokens per turn, measured once by rendering a
probe conversation. Without a chat template, LLaVA's ``conv_vicuna_v1`` is used (what
``--version v1`` trains with): ``SYSTEM USER: q ASSISTANT: a</s>USER: ...``.

Only ``tokenizers`` is imported for a folder with ``tokenizer.json``; transformers is imported
(lazily) only for a tokenizer without one (a sentencepiece ``tokenizer.model``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the user's questions.")


@dataclass(frozen=True)
class Overhead:
    """Template tokens: once per record, and per turn (before and after the content)."""

    base: int
    user: int
    assistant_before: int
    assistant_after: int
    source: str


def load_lengths(folder: str) -> Callable[[list[str]], list[int]]:
    """A function: texts -> token counts (no special tokens). Raises ValueError when there is no
    usable tokenizer in ``folder``."""
    path = Path(folder) / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - the Rust loader raises its own exception types
            raise ValueError(f"{path} does not load: {e}") from None
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
        return lambda texts: [len(e.ids) for e in encode(texts, add_special_tokens=False)]
    if not (Path(folder) / "tokenizer_config.json").is_file():
        raise ValueError(f"{folder} has no tokenizer.json or tokenizer_config.json")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ValueError(f"{folder} has no tokenizer.json; reading its tokenizer needs transformers") from None
    try:
        hf = AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001 - any loader failure means: no tokenizer here
        raise ValueError(f"AutoTokenizer cannot load {folder}: {type(e).__name__}: {e}") from None
    return lambda texts: [len(ids) for ids in hf(texts, add_special_tokens=False)["input_ids"]]


def chat_template(folder: str) -> str | None:
    """The chat template stored with a tokenizer (tokenizer_config.json, chat_template.jinja or
    chat_template.json), or None."""
    root = Path(folder)
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8", errors="replace")
    for name in ("tokenizer_config.json", "chat_template.json"):
        try:
            value = json.loads((root / name).read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str):
            return value
    return None


def overhead(folder: str, lengths: Callable[[list[str]], list[int]]) -> Overhead:
    """Measure the template's cost with probe conversations (see the module docstring)."""
    template = chat_template(folder)
    specials = _specials(folder)
    render: Callable[..., str] | None = None
    source = "LLaVA's conv_vicuna_v1 template (no chat template with the tokenizer)"
    if template:
        render = _jinja(template, specials)
        source = "the tokenizer's chat template"
    if render is not None:
        try:
            return _measure(render, lengths, source)
        except Exception:  # noqa: BLE001 - a template that cannot render probes: fall back
            source = "LLaVA's conv_vicuna_v1 template (the chat template does not render a probe)"
    return _measure(_vicuna, lengths, source, bos=1)


def _measure(render: Callable[..., str], lengths: Callable[[list[str]], list[int]], source: str,
             bos: int = 0) -> Overhead:
    a, b = "Q", "A"
    u = [{"role": "user", "content": a}]
    ua = u + [{"role": "assistant", "content": b}]
    texts = [render(u, False), render(u, True), render(ua, False), render(ua + ua, False), a, b]
    t_u, t_gen, t_ua, t_uaua, t_a, t_b = lengths(texts)
    assistant = max(0, t_ua - t_u - t_b)
    pair = t_uaua - t_ua
    user = max(0, pair - assistant - t_a - t_b)
    base = max(0, t_ua - user - t_a - assistant - t_b) + bos
    before = min(assistant, max(0, t_gen - t_u))
    return Overhead(base, user, before, assistant - before, source)


def _vicuna(messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    text = VICUNA_SYSTEM + " "
    for m in messages:
        if m["role"] == "user":
            text += "USER: " + m["content"] + " "
        else:
            text += "ASSISTANT: " + m["content"] + "</s>"
    return text + ("ASSISTANT:" if add_generation_prompt else "")


def _jinja(template: str, specials: dict[str, str]) -> Callable[..., str] | None:
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        compiled = env.from_string(template)
    except Exception:  # noqa: BLE001 - a template jinja cannot compile: fall back to vicuna
        return None
    return lambda messages, gen: compiled.render(messages=messages, add_generation_prompt=gen, **specials)


def _specials(folder: str) -> dict[str, str]:
    try:
        config = json.loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"bos_token": "", "eos_token": ""}
    out = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        out[key] = value if isinstance(value, str) else ""
    return out

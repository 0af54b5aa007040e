"""CKP505-CKP506: the vision special tokens a family's config.json names by id (Qwen2-VL:
``video_token_id``, ``vision_start_token_id``, ``vision_end_token_id``) against the tokenizer and
the embedding rows (the image token itself is CKP005's and CKP403's), and the chat template's
image placeholder. Which keys
and which token texts: the family table (``doctor.families``). Header-only, no transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.checks.checkpoint.tokenizer_files import TokenizerFacts

from doctor.findings import Location
from doctor.registry import Check, register

COVERED_ELSEWHERE = frozenset({"image_token_id", "image_token_index"})  # CKP005, CKP403

# What each id is used for, measured / read in transformers (modeling_qwen2_vl.py) and vLLM.
USE = {
    "video_token_id": "the model finds video placeholders by it: video inputs raise \"Video features and video "
                      "tokens do not match\"",
    "vision_start_token_id": "transformers 4.x (get_rope_index) and vLLM find images and videos by it: their "
                             "multimodal rotary positions are computed as text, silently",
    "vision_end_token_id": "the chat template and generation code delimit images with it",
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@register
class VisionTokenIdsInvalid(Check):
    """A vision special-token id in config.json is beyond the embedding or is not the tokenizer's id.

    ## What it does
    For each token id the family table lists besides the image token (Qwen2-VL / Qwen2.5-VL:
    `video_token_id` `<|video_pad|>`, `vision_start_token_id` `<|vision_start|>`,
    `vision_end_token_id` `<|vision_end|>`), checks that the id is an integer, is a row of the input
    embedding (from the weights' headers), and equals the tokenizer's id of that token.

    ## Why is this bad?
    The processor writes the tokenizer's ids; the model looks for config.json's. An id beyond the
    embedding raises `IndexError: index out of range in self` as soon as it is embedded; a
    different id is never found: video inputs raise `Video features and video tokens do not match`,
    and a wrong `vision_start_token_id` silently gives images text positions in transformers 4.x and
    vLLM (multimodal RoPE).

    ## Example
    `"video_token_id": 151656` in a config whose tokenizer was rebuilt with `<|video_pad|>` = 151660.

    ## How to fix
    Set each id to the tokenizer's id of its token (`tokenizer.convert_tokens_to_ids("<|video_pad|>")`),
    and resize the embedding if the tokens were added (`model.resize_token_embeddings(len(tokenizer))`).
    """

    code = "CKP505"
    name = "vision-token-ids-invalid"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], ckp_tokenizer: TokenizerFacts, ckp_embedding_rows: tuple[int, str],
            path: str):
        from doctor.families import family_of

        fam = family_of(ckp_config.get("model_type"))
        if fam is None:
            return
        where = str(Path(path) / "config.json")
        rows, source = ckp_embedding_rows
        for key, token in fam.tokens.items():
            if key in COVERED_ELSEWHERE or key not in ckp_config:
                continue
            value = ckp_config[key]
            loc = Location(key=key)
            if not _is_int(value):
                yield self.finding(f"{key} is {value!r}; it must be an integer token id", path=where, location=loc)
                continue
            have = ckp_tokenizer.id_of(token) if ckp_tokenizer.vocab is not None else None
            if value < 0 or value >= rows:
                yield self.finding(f"{key} is {value} but {source}: {USE.get(key, 'it')}; embedding it raises "
                                   "IndexError", path=where, location=loc,
                                   hint=f"Set {key} to {have} (the tokenizer's {token})." if have is not None
                                   else f"Set {key} to the tokenizer's id of {token}.")
            elif have is not None and have != value:
                yield self.finding(f"config.json {key} is {value} but the tokenizer's {token!r} is {have}: {USE.get(key, '')}",
                                   path=where, location=loc, hint=f"Set {key} to {have} in config.json.")


def processor_chat_template(folder: Path) -> tuple[str | None, str]:
    """The template ``processor.apply_chat_template`` renders, and its file: chat_template.jinja,
    chat_template.json, processor_config.json, then tokenizer_config.json (a list of named
    templates: the "default" one)."""
    from doctor.checks.checkpoint.fixtures import load_json_dict

    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8", errors="replace"), jinja.name
        except OSError:
            return None, ""
    for name in ("chat_template.json", "processor_config.json", "tokenizer_config.json"):
        data = load_json_dict(folder / name) or {}
        value = data.get("chat_template")
        if isinstance(value, list):
            value = next((t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"), None)
        if isinstance(value, str) and value:
            return value, name
    return None, ""


def render_image_turn(template: str, specials: dict[str, Any]) -> str | None:
    """The template rendered for one user turn holding an image part and a text part, the way
    transformers renders (sandboxed jinja, trim_blocks, lstrip_blocks); None when it cannot."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=True, **specials)
    except Exception:  # noqa: BLE001 - a template that cannot render a probe is not judged here
        return None


@register
class ChatTemplateDropsImages(Check):
    """The chat template does not write the image placeholder for an image in a message.

    ## What it does
    Renders the template the processor uses (chat_template.jinja / chat_template.json /
    processor_config.json / tokenizer_config.json) for one user turn with an image part
    (`{"type": "image"}`) and looks for the family's image token (Qwen2-VL: `<|image_pad|>`, from
    the family table, or the `image_token` the tokenizer config names).

    ## Why is this bad?
    The processor expands the placeholders the template wrote; with none, the image's features
    have nowhere to go: the processor or the model raises (`Image features and image tokens do not
    match`), or, where images are dropped, the model trains and answers blind. It happens when a
    text model's template (Qwen2.5-Instruct's, for a Qwen2.5-VL) is saved with a VLM.

    ## Example
    A Qwen2.5-VL folder whose tokenizer_config.json holds Qwen2.5-7B-Instruct's template, which
    prints list content as text.

    ## How to fix
    Copy chat_template.json (or chat_template.jinja) from the VLM's base model; its template writes
    `<|vision_start|><|image_pad|><|vision_end|>` for each image.
    """

    code = "CKP506"
    name = "chat-template-drops-images"
    artifacts = frozenset({"model"})
    requires = ("CKP001",)

    def run(self, ckp_config: dict[str, Any], ckp_tokenizer: TokenizerFacts, path: str):
        from doctor.families import family_of

        fam = family_of(ckp_config.get("model_type"))
        if fam is None or not fam.image_token or fam.token_rule != "dynamic":
            return
        template, source = processor_chat_template(Path(path))
        if template is None:
            return  # CKP404 reports a missing template
        token = ckp_tokenizer.named_token("image_token") or fam.image_token
        specials = {k: v for k, v in (ckp_tokenizer.special or {}).items() if isinstance(v, str)}
        rendered = render_image_turn(template, specials)
        if rendered is None or token in rendered:
            return
        yield self.finding(
            f"the chat template in {source} writes no {token} for an image part: the processor has no "
            "placeholder to expand and the image's features have nowhere to go", path=str(Path(path) / source),
            location=Location(pointer="/chat_template") if source.endswith(".json") else None,
            hint="Use the base model's chat template (chat_template.json / chat_template.jinja).")

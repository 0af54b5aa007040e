"""CKP505: the vision special tokens a family's config.json names by id (Qwen2-VL:
``video_token_id``, ``vision_start_token_id``, ``vision_end_token_id``) against the tokenizer and
the embedding rows. The image token itself is CKP005 (range) and CKP403 (tokenizer). Which keys
and which token texts: the family table (``doctor.families``). Header-only, no transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.findings import Location
from doctor.registry import Check, register

from doctor.checks.checkpoint.tokenizer_files import TokenizerFacts

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

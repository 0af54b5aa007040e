"""Images and prompts for the sanity pass, built through the model's own processor.

The prompt goes through ``processor.apply_chat_template`` when the processor has a chat
template; otherwise a family default with the processor's image token is used (llava-1.5's
``USER: <image>\\n... ASSISTANT:``, mllama's ``<|image|>...``, Qwen2-VL's ChatML turn with
``<|vision_start|><|image_pad|><|vision_end|>``).
"""

from __future__ import annotations

import contextlib
from importlib import resources
from typing import Any

from doctor.errors import UsageError

DEFAULT_PROMPT = "What is shown in this image?"
POPE_SUFFIX = " Answer the question using a single word or phrase."
_QWEN_TEMPLATE = ("<|im_start|>user\n<|vision_start|>{image}<|vision_end|>{prompt}<|im_end|>\n"
                  "<|im_start|>assistant\n")  # Qwen2-VL's ChatML, as its chat template writes one image turn
_DEFAULT_TEMPLATES = {
    "mllama": "{image}{prompt}",
    "qwen2_vl": _QWEN_TEMPLATE,
    "qwen2_5_vl": _QWEN_TEMPLATE,
}
_FALLBACK_TEMPLATE = "USER: {image}\n{prompt} ASSISTANT:"


def default_image() -> Any:
    """The picture shipped with vlm-doctor (coloured shapes on white, 336x336)."""
    from PIL import Image

    with resources.files("doctor.data").joinpath("default_image.png").open("rb") as f:
        img = Image.open(f)
        img.load()
    return img.convert("RGB")


def load_image(path: str | None) -> Any:
    """The image at ``path`` as RGB, or the default image. A bad path is a usage error."""
    if path is None:
        return default_image()
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read as an image ({e}); pass a PNG or JPEG with --image") from None


def aspect_variants(image: Any) -> dict[str, Any]:
    """Portrait (1:2), square and landscape (2:1) crops of ``image``: tiling processors
    (llava_next, mllama) take a different path for each."""
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    square = image.crop((left, top, left + s, top + s))
    half = max(1, s // 2)
    return {
        "portrait": square.crop(((s - half) // 2, 0, (s - half) // 2 + half, s)),
        "square": square,
        "landscape": square.crop((0, (s - half) // 2, s, (s - half) // 2 + half)),
    }


def aspect_of(image: Any) -> str:
    w, h = image.size
    return "square" if w == h else "portrait" if h > w else "landscape"


def blank_like(image: Any) -> Any:
    """A uniform mid-grey image of the same size (same tiling, same token count)."""
    from PIL import Image

    return Image.new("RGB", image.size, (128, 128, 128))


def noise_like(image: Any, seed: int = 0) -> Any:
    """Uniform RGB noise of the same size, from a fixed seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = image.size
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")


def tiles_images(processor: Any) -> bool:
    """True when the processor splits images by aspect ratio (anyres / tiles)."""
    ip = getattr(processor, "image_processor", None)
    return any(getattr(ip, a, None) for a in ("image_grid_pinpoints", "max_image_tiles", "supported_aspect_ratios"))


def image_token(processor: Any) -> str:
    tok = getattr(processor, "image_token", None)
    return tok if isinstance(tok, str) and tok else "<image>"


def build_prompt(processor: Any, family: str | None, prompt: str) -> tuple[str, bool]:
    """The full prompt text and whether it came from the processor's chat template."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        with contextlib.suppress(Exception):  # a broken template falls back to the default
            text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            if isinstance(text, list):
                text = text[0]
            if isinstance(text, str) and text:
                return text, True
    template = _DEFAULT_TEMPLATES.get(family or "", _FALLBACK_TEMPLATE)
    return template.format(image=image_token(processor), prompt=prompt), False


def make_inputs(processor: Any, text: str, image: Any, device: str, dtype: Any) -> Any:
    """Processor output for one image and one prompt, on ``device``, floats in ``dtype``."""
    tokenizer = getattr(processor, "tokenizer", None)
    bos = getattr(tokenizer, "bos_token", None)
    kwargs: dict[str, Any] = {"images": image, "text": text, "return_tensors": "pt"}
    if bos and text.startswith(bos):
        kwargs["add_special_tokens"] = False  # the chat template already wrote BOS
    inputs = processor(**kwargs)
    out = {}
    for k, v in inputs.items():
        if hasattr(v, "to"):
            v = v.to(device)
            if v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def yes_no_ids(tokenizer: Any) -> tuple[set[int], set[int]]:
    """Ids of the spellings of "yes" and "no" that are one token each (Llama's ``▁Yes``); empty
    sets when the vocabulary spells them in pieces (then the answers are scored as sequences)."""
    ids: dict[str, set[int]] = {"yes": set(), "no": set()}
    for word in ids:
        for form in (word, word.capitalize(), word.upper(), " " + word, " " + word.capitalize()):
            with contextlib.suppress(Exception):
                enc = tokenizer.encode(form, add_special_tokens=False)
                if len(enc) == 1:
                    ids[word].add(int(enc[0]))
    common = ids["yes"] & ids["no"]
    return ids["yes"] - common, ids["no"] - common

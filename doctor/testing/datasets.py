"""Tiny fine-tuning datasets with real image files and named, planted defects.

Needs only Pillow. Two formats:

- LLaVA (``make_llava_dataset``): a JSON array (or JSONL) of
  ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
  {"from": "gpt", "value": "..."}]}``; ``image`` is relative to the image folder, as
  LLaVA's ``--image_folder`` expects.
- messages (``make_messages_dataset``): TRL / LLaMA-Factory style
  ``{"messages": [{"role", "content"}], "images": [...]}``; image paths are relative to the
  dataset file's folder (LLaMA-Factory's ``media_dir`` default).

Layout, for both: ``n`` clean records first (shapes cycle portrait 40x64, square 48x48,
landscape 72x40; formats cycle PNG, JPEG), then one record per planted problem, in the order
of ``LLAVA_PROBLEMS`` / ``MESSAGES_PROBLEMS``. ``planted_records`` gives each problem's index;
in a LLaVA dataset the planted record's ``id`` is also the problem's name (except
"duplicate-id", which repeats record 0's id).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from doctor.testing.images import make_image, make_not_an_image, make_truncated_jpeg

DatasetFormat = Literal["json", "jsonl"]

SHAPES = ((40, 64), (48, 48), (72, 40))  # (width, height): portrait, square, landscape
IMAGE_FORMATS = (("PNG", ".png"), ("JPEG", ".jpg"))

# Defects a LLaVA dataset can carry. Each adds one record (trailing-comma only breaks the file).
LLAVA_PROBLEMS: tuple[str, ...] = (
    "missing-image",       # "image" names a file that does not exist
    "no-image-token",      # "image" is set, no "<image>" in any turn
    "double-image-token",  # two "<image>" in the first human turn, one image
    "image-token-in-gpt",  # the only "<image>" sits in the gpt answer
    "bad-role",            # OpenAI roles: "from": "user" / "assistant"
    "first-turn-gpt",      # conversation opens with a gpt turn (LLaVA drops it)
    "empty-value",         # the gpt answer is ""
    "non-string-value",    # the gpt answer is a number
    "truncated-image",     # a JPEG cut in half: opens, fails at load()
    "not-an-image",        # text bytes behind a .png name
    "path-escape",         # "../outside.png": exists, but outside the image folder
    "absolute-path",       # an absolute path (os.path.join drops the image folder)
    "duplicate-id",        # repeats the id of record 0
    "long-text",           # ~3000 words: past model_max_length 2048 once tokenized
    "text-only-record",    # valid: no "image" key and no "<image>"
    "grayscale-image",     # valid: an "L"-mode PNG
    "trailing-comma",      # file-level: "},\n]" (JSON only): the file no longer parses
)
MESSAGES_PROBLEMS: tuple[str, ...] = (
    "missing-image", "no-image-token", "double-image-token", "bad-role",
    "first-turn-assistant", "empty-value", "truncated-image", "not-an-image",
    "path-escape", "text-only-record",
)

_PROMPTS = ("What is shown in this image?", "Describe the image in detail.",
            "What color is the largest object?", "How many animals are there?",
            "Is this picture taken indoors?")
_ANSWERS = ("A cat sits on a red mat.", "The image shows a quiet street at night.",
            "It is blue.", "There are two dogs.", "No, it is outside in a park.")


def make_llava_dataset(
    dir: str | Path,
    n: int = 8,
    fmt: DatasetFormat = "json",
    image_dir: str = "images",
    problems: Iterable[str] = (),
    seed: int = 0,
    name: str = "data",
) -> Path:
    """Write ``dir/<name>.json`` (or ``.jsonl``) in LLaVA format; return the dataset file.

    Images go to ``dir/<image_dir>/``, the folder to pass as LLaVA's ``--image_folder``.
    ``problems`` names defects from ``LLAVA_PROBLEMS`` (see that tuple's comments); each adds
    one record after the ``n`` clean ones (see ``planted_records``).
    """
    root, wanted = Path(dir), _check(problems, LLAVA_PROBLEMS, fmt)
    image_root = root / image_dir
    rng = random.Random(seed)
    records = [_llava_record(f"sample-{i:04d}", _clean_image(image_root, i, seed), rng) for i in range(n)]
    for problem in wanted:
        if problem != "trailing-comma":
            records.append(_llava_problem(problem, root, image_root, records, rng, seed))
    path = root / f"{name}.{fmt}"
    _write_records(path, records, fmt, trailing_comma="trailing-comma" in wanted)
    return path


def make_messages_dataset(
    dir: str | Path,
    n: int = 8,
    fmt: DatasetFormat = "json",
    image_dir: str = "images",
    problems: Iterable[str] = (),
    content: Literal["list", "string"] = "list",
    seed: int = 0,
    name: str = "messages",
) -> Path:
    """Write ``dir/<name>.json`` (or ``.jsonl``) in the messages format; return the file.

    ``content="list"`` writes TRL's typed parts (``[{"type": "image"}, {"type": "text",
    "text": ...}]``); ``content="string"`` writes LLaMA-Factory's strings with an ``<image>``
    placeholder. ``problems`` come from ``MESSAGES_PROBLEMS``: "no-image-token" and
    "double-image-token" mean zero or two image placeholders for one listed image;
    "path-escape" lists "../outside.png", which is NOT created (it would lie outside ``dir``).
    """
    root, wanted = Path(dir), _check(problems, MESSAGES_PROBLEMS, fmt)
    rng = random.Random(seed)
    records = []
    for i in range(n):
        image = _clean_image(root / image_dir, i, seed)
        records.append(_messages_record([f"{image_dir}/{image}"], 1, rng, content))
    for problem in wanted:
        records.append(_messages_problem(problem, root, image_dir, rng, content, seed))
    path = root / f"{name}.{fmt}"
    _write_records(path, records, fmt, trailing_comma=False)
    return path


def planted_records(n: int, problems: Iterable[str], known: tuple[str, ...] = LLAVA_PROBLEMS) -> dict[str, int]:
    """Index of the record each problem was planted in, for a dataset built with ``n`` and
    ``problems`` (pass ``known=MESSAGES_PROBLEMS`` for messages datasets)."""
    asked = set(problems)
    if asked - set(known):
        raise ValueError(f"problems {sorted(asked - set(known))} are not in `known`; pass known=MESSAGES_PROBLEMS "
                         "for a messages dataset")
    wanted = [p for p in known if p in asked and p != "trailing-comma"]
    return {problem: n + i for i, problem in enumerate(wanted)}


def _check(problems: Iterable[str], known: tuple[str, ...], fmt: str) -> list[str]:
    asked = set(problems)
    unknown = asked - set(known)
    if unknown:
        raise ValueError(f"unknown dataset problems {sorted(unknown)}; known: {', '.join(known)}")
    if fmt not in ("json", "jsonl"):
        raise ValueError(f"fmt must be 'json' or 'jsonl', got {fmt!r}")
    if "trailing-comma" in asked and fmt != "json":
        raise ValueError("'trailing-comma' only applies to fmt='json'")
    return [p for p in known if p in asked]


def _clean_image(image_root: Path, i: int, seed: int) -> str:
    fmt, suffix = IMAGE_FORMATS[i % len(IMAGE_FORMATS)]
    name = f"sample-{i:04d}{suffix}"
    make_image(image_root / name, size=SHAPES[i % len(SHAPES)], fmt=fmt, seed=seed * 1000 + i)
    return name


def _llava_record(record_id: str, image: str | None, rng: random.Random,
                  prompt: str | None = None, answer: Any = None) -> dict[str, Any]:
    prompt = prompt if prompt is not None else ("<image>\n" if image else "") + rng.choice(_PROMPTS)
    answer = answer if answer is not None else rng.choice(_ANSWERS)
    record: dict[str, Any] = {"id": record_id}
    if image is not None:
        record["image"] = image
    record["conversations"] = [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]
    return record


def _llava_problem(problem: str, root: Path, image_root: Path, records: list[dict[str, Any]],
                   rng: random.Random, seed: int) -> dict[str, Any]:
    good = _clean_image(image_root, 1, seed)  # the square PNG/JPEG every problem may share
    question = rng.choice(_PROMPTS)
    if problem == "missing-image":
        return _llava_record(problem, "missing-image.png", rng)
    if problem == "no-image-token":
        return _llava_record(problem, good, rng, prompt=question)
    if problem == "double-image-token":
        return _llava_record(problem, good, rng, prompt=f"<image>\n{question}\n<image>")
    if problem == "image-token-in-gpt":
        return _llava_record(problem, good, rng, prompt=question, answer="<image>\n" + rng.choice(_ANSWERS))
    if problem == "bad-role":
        record = _llava_record(problem, good, rng)
        record["conversations"][0]["from"], record["conversations"][1]["from"] = "user", "assistant"
        return record
    if problem == "first-turn-gpt":
        record = _llava_record(problem, good, rng)
        record["conversations"].insert(0, {"from": "gpt", "value": "Hello! Send me an image."})
        return record
    if problem == "empty-value":
        return _llava_record(problem, good, rng, answer="")
    if problem == "non-string-value":
        return _llava_record(problem, good, rng, answer=42)
    if problem == "truncated-image":
        make_truncated_jpeg(image_root / "truncated-image.jpg", seed=seed)
        return _llava_record(problem, "truncated-image.jpg", rng)
    if problem == "not-an-image":
        make_not_an_image(image_root / "not-an-image.png")
        return _llava_record(problem, "not-an-image.png", rng)
    if problem == "path-escape":
        make_image(root / "outside.png", seed=seed)
        return _llava_record(problem, "../outside.png", rng)
    if problem == "absolute-path":
        target = make_image(root / "elsewhere" / "absolute.png", seed=seed)
        return _llava_record(problem, str(target.resolve()), rng)
    if problem == "duplicate-id":
        if not records:
            raise ValueError("'duplicate-id' needs n >= 1")
        return _llava_record(records[0]["id"], good, rng)
    if problem == "long-text":
        return _llava_record(problem, good, rng, answer=" ".join(rng.choice(_ANSWERS) for _ in range(500)))
    if problem == "text-only-record":
        return _llava_record(problem, None, rng)
    if problem == "grayscale-image":
        make_image(image_root / "grayscale-image.png", seed=seed, mode="L")
        return _llava_record(problem, "grayscale-image.png", rng)
    raise AssertionError(problem)  # _check() let an unhandled name through


def _messages_record(images: list[str], placeholders: int, rng: random.Random, content: str,
                     roles: tuple[str, str] = ("user", "assistant"), answer: str | None = None) -> dict[str, Any]:
    question = rng.choice(_PROMPTS)
    answer = rng.choice(_ANSWERS) if answer is None else answer
    user: Any
    if content == "string":
        user, reply = "<image>" * placeholders + question, answer
    else:
        user = [{"type": "image"}] * placeholders + [{"type": "text", "text": question}]
        reply = [{"type": "text", "text": answer}]
    record: dict[str, Any] = {"messages": [{"role": roles[0], "content": user},
                                           {"role": roles[1], "content": reply}]}
    if images:
        record["images"] = images
    return record


def _messages_problem(problem: str, root: Path, image_dir: str, rng: random.Random, content: str,
                      seed: int) -> dict[str, Any]:
    good = f"{image_dir}/{_clean_image(root / image_dir, 1, seed)}"
    if problem == "missing-image":
        return _messages_record([f"{image_dir}/missing-image.png"], 1, rng, content)
    if problem == "no-image-token":
        return _messages_record([good], 0, rng, content)
    if problem == "double-image-token":
        return _messages_record([good], 2, rng, content)
    if problem == "bad-role":
        return _messages_record([good], 1, rng, content, roles=("human", "gpt"))
    if problem == "first-turn-assistant":
        record = _messages_record([good], 1, rng, content)
        greeting = "Hello! Send me an image."
        record["messages"].insert(0, {"role": "assistant", "content": greeting if content == "string"
                                      else [{"type": "text", "text": greeting}]})
        return record
    if problem == "empty-value":
        return _messages_record([good], 1, rng, content, answer="")
    if problem == "truncated-image":
        make_truncated_jpeg(root / image_dir / "truncated-image.jpg", seed=seed)
        return _messages_record([f"{image_dir}/truncated-image.jpg"], 1, rng, content)
    if problem == "not-an-image":
        make_not_an_image(root / image_dir / "not-an-image.png")
        return _messages_record([f"{image_dir}/not-an-image.png"], 1, rng, content)
    if problem == "path-escape":  # not created: it would lie outside ``dir``
        return _messages_record(["../outside.png"], 1, rng, content)
    if problem == "text-only-record":
        return _messages_record([], 0, rng, content)
    raise AssertionError(problem)


def _write_records(path: Path, records: list[dict[str, Any]], fmt: str, trailing_comma: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    elif trailing_comma:  # the mistake in LLaVA's docs/Finetune_Custom_Data.md sample
        body = ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in records)
        text = "[\n" + body + ",\n]\n"
    else:
        text = json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")

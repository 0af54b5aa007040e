"""Per-record checks for the messages format (TRL, LLaMA-Factory, llama-recipes):
``{"messages": [{"role", "content": str | [{"type": "text"|"image", ...}]}], "images": [...]}``.

The variants the loaders document, each accepted as its loader accepts it:

- string content with ``<image>`` placeholders and an ``images`` list (LLaMA-Factory's
  ``openai`` formatting; mm_plugin raises "The number of images does not match the number of
  <image> tokens" on a mismatch);
- string content with an ``images`` list and no placeholder: TRL's ``prepare_multimodal_messages``
  inserts one ``{"type": "image"}`` per image before the first user message (LLaMA-Factory
  raises on the same record, so this is a warning naming both);
- typed parts ``{"type": "text", "text": ...}`` / ``{"type": "image"}`` (TRL, transformers chat
  templates), an image part that carries its own payload (``"image": path``) is not filled from
  ``images``;
- LLaMA-Factory v1 parts ``{"type": "text" | "image_url" | "video_url" | "audio_url" |
  "reasoning" | "tool_call", "value": ...}`` (``_to_hf_messages`` reads ``content["value"]``).

Videos the same way: a ``videos`` list with ``<video>`` placeholders in string content
(LLaMA-Factory), typed ``{"type": "video"}`` / ``"video_url"`` parts, one that names its own file
(``"video"``, ``"path"``, ``"url"``, ``"value"``) registered as such, the others filled from
``videos``; a count that differs is DAT115 (``checks/dataset/videos.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DROP, describe, repair
from doctor.checks.dataset.order import SIDE_ROLES, check_order, check_placeholders
from doctor.checks.dataset.videos import check_video_placeholders

from doctor.findings import Severity

if TYPE_CHECKING:
    from doctor.checks.dataset.records import RecordChecker

ROLES = frozenset({"system", "user", "assistant"}) | SIDE_ROLES
ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant",
           "chatgpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}
IMAGE_PARTS = frozenset({"image", "image_url"})
# Part types some loader knows: transformers chat templates (text, image, video, audio), TRL,
# LLaMA-Factory v1 (text, reasoning, tool_call, image_url, video_url, audio_url), OpenAI's API.
VIDEO_PARTS = frozenset({"video", "video_url"})
OTHER_PARTS = frozenset({"audio", "audio_url", "reasoning", "tool_call", "thinking",
                         "input_audio", "input_text", "output_text"})
IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
UNKNOWN_ROLE, EMPTY_FIELD = DAT.UNKNOWN_ROLE, DAT.EMPTY_FIELD
MISSING_FIELD, WRONG_TYPE, PH_MISSING = DAT.MISSING_FIELD, DAT.WRONG_FIELD_TYPE, DAT.IMAGE_PLACEHOLDER_MISSING
WARNING = Severity.WARNING
_MISSING: Any = object()


def check_messages(c: RecordChecker, rec: dict, i: int, line: int, col: int) -> None:
    P = c.problems
    msgs = rec.get("messages", _MISSING)
    if type(msgs) is not list:
        c._field_problem(rec, i, line, col, ("messages",), msgs, "a list of messages")
        c.chars.append(0)
        return
    c.turns[len(msgs)] = c.turns.get(len(msgs), 0) + 1
    if not msgs:
        P.record(EMPTY_FIELD, i, line, col, ("messages",), f"{describe(i, rec)}: \"messages\" is empty", fix=DROP)
        c.chars.append(0)
        return
    listed = c.listed_images(rec, i, line, col)
    inline: list[tuple[str, tuple[Any, ...]]] = []
    embedded = [0, 0]  # image / video parts carrying data, not a file (base64, bytes, a URL)
    videos: list[tuple[str, tuple[Any, ...]]] = []  # video parts naming their own file
    video_slots: list[tuple[int, int]] = []
    typed = False
    roles: list[str | None] = []
    slots: list[tuple[int, int]] = []
    chars = 0
    for j, m in enumerate(msgs):
        if type(m) is not dict:
            c._field_problem(rec, i, line, col, ("messages", j), m, "an object with \"role\" and \"content\"")
            roles.append(None)
            continue
        role = m.get("role", _MISSING)
        roles.append(role if type(role) is str and role in ROLES else _role(c, rec, i, j, line, col, role))
        content = m.get("content", _MISSING)
        if type(content) is str:
            chars += len(content)
            if IMAGE_TOKEN in content:
                slots.append((j, content.count(IMAGE_TOKEN)))
            if VIDEO_TOKEN in content:
                video_slots.append((j, content.count(VIDEO_TOKEN)))
            if (not content or content.isspace()) and not m.get("tool_calls"):
                c._empty_turn(rec, i, line, col, ("messages", j, "content"), role)
        elif type(content) is list:
            typed = True
            n, text, nv = _parts(c, rec, i, j, line, col, content, inline, embedded, videos)
            chars += text
            if n:
                slots.append((j, n))
            if nv:
                video_slots.append((j, nv))
            if not n and not nv and not text and not m.get("tool_calls"):
                c._empty_turn(rec, i, line, col, ("messages", j, "content"), role)
        elif not (content in (None, _MISSING) and m.get("tool_calls")):
            c._field_problem(rec, i, line, col, ("messages", j, "content"), content,
                             "a string or a list of parts (TRL's prepare_multimodal_messages and LLaMA-Factory "
                             "iterate anything else as parts and fail)" if type(content) is dict else
                             "a string or a list of parts")
    c.chars.append(chars)
    # Image parts that carry their own file (TRL keeps them as they are; LLaMA-Factory v1 reads
    # "value") count as images beside the "images" list, which fills the parts without one.
    for path, parts in inline:
        c._ref(path, i, parts)
    if listed is None:
        n_images = len(inline) + embedded[0]
        if n_images:
            c.records_with_images += 1
    elif listed < 0:
        n_images = listed
    else:
        n_images = listed + len(inline) + embedded[0]
        if not listed and n_images:
            c.records_with_images += 1
    if video_slots or "videos" in rec or videos:
        _videos(c, rec, i, line, col, video_slots, videos, embedded[1], n_images != 0)
    n = len(roles)
    if None not in roles and not (
        n > 1 and roles[0::2].count("user") == (n + 1) // 2 and roles[1::2].count("assistant") == n // 2
    ):
        check_order(P, rec, i, line, col, roles, "user", "assistant", "messages", False)  # type: ignore[arg-type]
    if n_images > 0 and not slots and not typed:
        # Plain-string content, images, no placeholder: TRL's form (it inserts the images before
        # the first user message); LLaMA-Factory raises on it.
        P.record(PH_MISSING, i, line, col, ("messages",),
                 f"{describe(i, rec)} has {n_images} image(s) and no <image> placeholder: TRL's "
                 "prepare_multimodal_messages inserts the images before the first user message, but "
                 "LLaMA-Factory raises \"The number of images does not match the number of <image> tokens\"",
                 severity=WARNING, fix=repair("insert <image> at the start of the first user turn")
                 if n_images == 1 else None)
    elif n_images >= 0 and (slots or n_images) and not (
        n_images == 1 and len(slots) == 1 and slots[0][1] == 1 and roles[slots[0][0]] == "user"
        and "user" not in roles[: slots[0][0]]
    ):
        check_placeholders(P, rec, i, line, col, n_images, slots, roles, "user", "messages", "content")


def _videos(c: RecordChecker, rec: dict, i: int, line: int, col: int, slots: list[tuple[int, int]],
            inline: list[tuple[str, tuple[Any, ...]]], embedded: int, with_images: bool) -> None:
    listed = c.listed_videos(rec, i, line, col, with_images=with_images)
    for path, parts in inline:
        c.video_ref(path, i, parts)
    if listed is None and (inline or embedded):
        c.video_record(i, with_images)
    if listed is not None and listed < 0:
        return
    check_video_placeholders(c.problems, rec, i, line, col, (listed or 0) + len(inline) + embedded, slots,
                             "messages", "content")


def _parts(c: RecordChecker, rec: dict, i: int, j: int, line: int, col: int, content: list,
           inline: list[tuple[str, tuple[Any, ...]]], embedded: list[int],
           videos: list[tuple[str, tuple[Any, ...]]]) -> tuple[int, int, int]:
    """(image slots, text characters, video slots) of typed content parts."""
    slots = text = video_slots = 0
    for k, part in enumerate(content):
        where = ("messages", j, "content", k)
        if type(part) is not dict:
            c._field_problem(rec, i, line, col, where, part, "an object with a \"type\"")
            continue
        kind = part.get("type", _MISSING)
        if kind == "text":
            key = "text" if "text" in part else "value" if "value" in part else None
            value = part[key] if key else _MISSING
            if type(value) is str:
                text += len(value)
            elif key is None:
                c.problems.record(MISSING_FIELD, i, line, col, where + ("text",),
                                  f"{describe(i, rec)}: the text part at messages/{j}/content/{k} has neither "
                                  "\"text\" (TRL, transformers chat templates) nor \"value\" (LLaMA-Factory v1); "
                                  "the template reads part[\"text\"] and fails or renders nothing", fix=DROP)
            else:
                c._field_problem(rec, i, line, col, where + (key,), value, "a string")
        elif type(kind) is str and kind in IMAGE_PARTS:
            slots += 1
            path, key, data = inline_path(part)
            if path:
                inline.append((path, where + key))
            elif data:
                embedded[0] += 1
        elif type(kind) is str and kind in VIDEO_PARTS:
            video_slots += 1
            path, key, data = inline_path(part, ("video", "path", "url", "value"), "video_url")
            if path:
                videos.append((path, where + key))
            elif data:
                embedded[1] += 1
        elif kind is _MISSING:
            c._field_problem(rec, i, line, col, where + ("type",), kind, "\"text\" or \"image\"")
        elif type(kind) is not str or kind not in OTHER_PARTS:
            c.problems.record(WRONG_TYPE, i, line, col, where + ("type",),
                              f"{describe(i, rec)}: part messages/{j}/content/{k} has type {kind!r}, which no loader "
                              "knows: chat templates and LLaMA-Factory skip the part silently (expected \"text\", "
                              "\"image\" or \"image_url\")", fix=DROP)
    return slots, text, video_slots


def inline_path(part: dict, keys: tuple[str, ...] = ("image", "path", "url", "value"),
                 url_key: str = "image_url") -> tuple[str | None, tuple[Any, ...], bool]:
    """(local file the part names, its key, whether it carries media data or a URL instead)."""
    data = False
    for key in keys:
        value = part.get(key)
        if type(value) is str and value:
            if not value.startswith(("http://", "https://", "data:")):
                return value, (key,), False
            data = True
    url = part.get(url_key)
    if type(url) is dict:
        url = url.get("url")
    if type(url) is str and url:
        if not url.startswith(("http://", "https://", "data:")):
            return url, (url_key,), False
        data = True
    return None, (), data


def _role(c: RecordChecker, rec: dict, i: int, j: int, line: int, col: int, role: Any) -> str | None:
    parts = ("messages", j, "role")
    if type(role) is not str:
        c._field_problem(rec, i, line, col, parts, role, "\"user\", \"assistant\" or \"system\"")
        return None
    alias = ALIASES.get(role.strip().lower())
    if alias is not None:
        c.problems.record(UNKNOWN_ROLE, i, line, col, parts,
                          f"{describe(i, rec)}: message {j} has role {role!r}; chat templates and "
                          "LLaMA-Factory know \"system\", \"user\", \"assistant\" (and tool roles)",
                          fix=repair(f"rename {role!r} to {alias!r}"))
        return alias
    c.problems.record(UNKNOWN_ROLE, i, line, col, parts,
                      f"{describe(i, rec)}: message {j} has role {role!r}, which no chat template knows", fix=DROP)
    return None

"""Per-record checks for the messages format (TRL, LLaMA-Factory, llama-recipes):
``{"messages": [{"role", "content": str | [{"type": "text"|"image", ...}]}], "images": [...]}``.

String content carries ``<image>`` placeholders (LLaMA-Factory); typed parts carry
``{"type": "image"}`` slots (TRL, transformers chat templates). Either way the number of slots
must equal the number of images: LLaMA-Factory's mm_plugin raises "The number of images does
not match the number of <image> tokens", transformers' processors raise on the mismatch too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from doctor.checks.dataset.common import DROP, describe, repair
from doctor.checks.dataset.order import SIDE_ROLES, check_order, check_placeholders

if TYPE_CHECKING:
    from doctor.checks.dataset.records import RecordChecker

ROLES = frozenset({"system", "user", "assistant"}) | SIDE_ROLES
ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant",
           "chatgpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}
IMAGE_PARTS = frozenset({"image", "image_url"})
IMAGE_TOKEN = "<image>"
UNKNOWN_ROLE, EMPTY_FIELD = "DAT101", "DAT014"
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
    listed = _listed_images(c, rec, i, line, col)
    inline: list[tuple[str, tuple[Any, ...]]] = []
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
            if (not content or content.isspace()) and not m.get("tool_calls"):
                c._empty_turn(rec, i, line, col, ("messages", j, "content"), role)
        elif type(content) is list:
            n, text = _parts(c, rec, i, j, line, col, content, inline)
            chars += text
            if n:
                slots.append((j, n))
            elif not text and not m.get("tool_calls"):
                c._empty_turn(rec, i, line, col, ("messages", j, "content"), role)
        elif not (content in (None, _MISSING) and m.get("tool_calls")):
            c._field_problem(rec, i, line, col, ("messages", j, "content"), content, "a string or a list of parts")
    c.chars.append(chars)
    if listed is None:  # no "images" list: typed parts may name their own files
        for path, parts in inline:
            c._ref(path, i, parts)
        n_images = len(inline)
        if inline:
            c.records_with_images += 1
    else:
        n_images = listed
    n = len(roles)
    if None not in roles and not (
        n > 1 and roles[0::2].count("user") == (n + 1) // 2 and roles[1::2].count("assistant") == n // 2
    ):
        check_order(P, rec, i, line, col, roles, "user", "assistant", "messages", False)  # type: ignore[arg-type]
    if n_images >= 0 and (slots or n_images) and not (
        n_images == 1 and len(slots) == 1 and slots[0][1] == 1 and roles[slots[0][0]] == "user"
        and "user" not in roles[: slots[0][0]]
    ):
        check_placeholders(P, rec, i, line, col, n_images, slots, roles, "user", "messages", "content")


def _listed_images(c: RecordChecker, rec: dict, i: int, line: int, col: int) -> int | None:
    """Register the paths in "images"; their number, None without the key, -1 when unusable."""
    images = rec.get("images", _MISSING)
    if images is _MISSING or images is None:
        return None
    if type(images) is str:  # LLaMA-Factory wraps a single path in a list itself
        images = [images]
    if type(images) is not list:
        c._field_problem(rec, i, line, col, ("images",), images, "a list of image paths")
        return -1
    ok = True
    for k, item in enumerate(images):
        path = item.get("path") if type(item) is dict else item
        if type(path) is str and path:
            c._ref(path, i, ("images", k))
        else:
            ok = False
            c._field_problem(rec, i, line, col, ("images", k), item, "a non-empty path string")
    if images:
        c.records_with_images += 1
        if len(images) > 1:
            c._multi(i)
    return len(images) if ok else -1


def _parts(c: RecordChecker, rec: dict, i: int, j: int, line: int, col: int, content: list,
           inline: list[tuple[str, tuple[Any, ...]]]) -> tuple[int, int]:
    """(image slots, text characters) of typed content parts."""
    slots = text = 0
    for k, part in enumerate(content):
        where = ("messages", j, "content", k)
        if type(part) is not dict:
            c._field_problem(rec, i, line, col, where, part, "an object with a \"type\"")
            continue
        kind = part.get("type", _MISSING)
        if kind == "text":
            value = part.get("text", _MISSING)
            if type(value) is str:
                text += len(value)
            else:
                c._field_problem(rec, i, line, col, where + ("text",), value, "a string")
        elif type(kind) is str and kind in IMAGE_PARTS:
            slots += 1
            path, key = _inline_path(part)
            if path:
                inline.append((path, where + key))
        elif kind is _MISSING:
            c._field_problem(rec, i, line, col, where + ("type",), kind, "\"text\" or \"image\"")
    return slots, text


def _inline_path(part: dict) -> tuple[str | None, tuple[Any, ...]]:
    for key in ("image", "path", "url"):
        value = part.get(key)
        if type(value) is str and value and not value.startswith(("http://", "https://", "data:")):
            return value, (key,)
    url = part.get("image_url")
    if type(url) is dict:
        url = url.get("url")
    if type(url) is str and url and not url.startswith(("http://", "https://", "data:")):
        return url, ("image_url",)
    return None, ()


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

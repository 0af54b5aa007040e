"""Record repairs for the dataset fixer: the safe ones keep the record's meaning (role aliases,
image placeholder placement, id types); whatever the record checks still find afterwards decides
whether an unsafe fix drops the record.

The same ``RecordChecker`` that the scan runs re-checks every repaired record, so "what is wrong"
has one definition."""

from __future__ import annotations

import copy
from typing import Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import Problems
from doctor.checks.dataset.messages import ALIASES as MESSAGES_ALIASES
from doctor.checks.dataset.records import IMAGE_TOKEN, LLAVA_ALIASES, RecordChecker

# Codes whose remaining problems make an unsafe fix drop the record.
DROPPABLE = frozenset({DAT.RECORD_NOT_OBJECT, DAT.MISSING_FIELD, DAT.WRONG_FIELD_TYPE, DAT.EMPTY_FIELD, DAT.NESTING_TOO_DEEP, DAT.UNKNOWN_ROLE, DAT.FIRST_TURN_NOT_USER, DAT.ROLES_NOT_ALTERNATING, DAT.EMPTY_TURN,
                       DAT.NO_ASSISTANT_TURN, DAT.IMAGE_PLACEHOLDER_MISSING, DAT.IMAGE_PLACEHOLDER_COUNT, DAT.IMAGE_PLACEHOLDER_WITHOUT_IMAGE})
_TURN_CODES = frozenset({DAT.UNKNOWN_ROLE, DAT.FIRST_TURN_NOT_USER, DAT.IMAGE_PLACEHOLDER_MISSING, DAT.IMAGE_PLACEHOLDER_COUNT, DAT.IMAGE_PLACEHOLDER_WITHOUT_IMAGE, DAT.IMAGE_PLACEHOLDER_MISPLACED})


def repair(rec: dict, fmt: str, codes: set[str], unsafe: bool) -> tuple[dict, list[str]]:
    """A repaired copy of ``rec`` (the record itself when nothing changes) and what changed;
    ``codes``: the problems to repair (the record's own, among those the findings offer)."""
    changes: list[str] = []
    new = dict(rec)
    llava = fmt == "llava"
    key = "conversations" if llava else "messages"
    if codes & _TURN_CODES and isinstance(rec.get(key), list):
        new[key] = copy.deepcopy(rec[key])
    turns = new.get(key) if codes & _TURN_CODES else None
    if DAT.MIXED_FIELD_TYPES in codes and isinstance(new.get("id"), (int, float)) and not isinstance(new.get("id"), bool):
        changes.append(f"id {new['id']!r} -> {str(new['id'])!r}")
        new["id"] = str(new["id"])
    if isinstance(turns, list):
        if DAT.UNKNOWN_ROLE in codes:
            _roles(turns, llava, changes)
        if (DAT.FIRST_TURN_NOT_USER in codes and (llava or unsafe)):
            _leading(turns, llava, changes)
        n_images = _n_images(new, llava)
        if n_images == 1 and codes & {DAT.IMAGE_PLACEHOLDER_MISSING, DAT.IMAGE_PLACEHOLDER_COUNT, DAT.IMAGE_PLACEHOLDER_MISPLACED}:
            _place_one(turns, llava, changes)
        elif n_images == 0 and DAT.IMAGE_PLACEHOLDER_WITHOUT_IMAGE in codes and unsafe:
            _strip_placeholders(turns, llava, changes)
    return (new, changes) if changes else (rec, [])


class Rechecker:
    """Runs the record checks on one record at a time: {code: first message}."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.checker = RecordChecker(Problems(cap=100))

    def __call__(self, rec: Any, index: int) -> dict[str, str]:
        if not isinstance(rec, dict):
            return {DAT.RECORD_NOT_OBJECT: f"record {index} is not an object"}
        problems = self.checker.problems = Problems(cap=100)
        self.checker.check(self.fmt, rec, index)
        return {code: samples[0].message for code, samples in problems.samples.items()}


def _roles(turns: list, llava: bool, changes: list[str]) -> None:
    key, aliases = ("from", LLAVA_ALIASES) if llava else ("role", MESSAGES_ALIASES)
    known = {"human", "gpt"} if llava else set(MESSAGES_ALIASES.values())
    for j, turn in enumerate(turns):
        if isinstance(turn, dict) and isinstance(turn.get(key), str) and turn[key] not in known:
            alias = aliases.get(turn[key].strip().lower())
            if alias:
                changes.append(f"turn {j}: {key} {turn[key]!r} -> {alias!r}")
                turn[key] = alias


def _leading(turns: list, llava: bool, changes: list[str]) -> None:
    key, user = ("from", "human") if llava else ("role", "user")
    start = 1 if not llava and turns and isinstance(turns[0], dict) and turns[0].get(key) == "system" else 0
    while len(turns) > start + 1 and isinstance(turns[start], dict) and turns[start].get(key) != user:
        changes.append(f"dropped the leading {turns[start].get(key)!r} turn")
        del turns[start]
        if llava:  # train.py drops exactly one
            break


def _n_images(rec: dict, llava: bool) -> int:
    value = rec.get("image", rec.get("images")) if llava else rec.get("images")
    if isinstance(value, str):
        return 1
    return len(value) if isinstance(value, list) else 0


def _place_one(turns: list, llava: bool, changes: list[str]) -> None:
    """Exactly one placeholder, at the start of the first user turn."""
    key, user, text = ("from", "human", "value") if llava else ("role", "user", "content")
    first = next((j for j, t in enumerate(turns) if isinstance(t, dict) and t.get(key) == user), None)
    if first is None:
        return
    before = copy.deepcopy(turns)
    _strip_placeholders(turns, llava, [])
    content = turns[first].get(text)
    if isinstance(content, list):
        turns[first][text] = [{"type": "image"}, *content]
    elif isinstance(content, str):
        turns[first][text] = IMAGE_TOKEN + "\n" + content.lstrip()
    if turns != before:
        changes.append(f"one <image> at the start of turn {first}")


def _strip_placeholders(turns: list, llava: bool, changes: list[str]) -> None:
    text = "value" if llava else "content"
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict):
            continue
        content = turn.get(text)
        if isinstance(content, str) and IMAGE_TOKEN in content:
            turn[text] = content.replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "").strip()
            changes.append(f"turn {j}: removed <image>")
        elif isinstance(content, list):
            kept = [p for p in content if not (isinstance(p, dict) and p.get("type") in ("image", "image_url"))]
            if len(kept) != len(content):
                turn[text] = kept
                changes.append(f"turn {j}: removed image parts")

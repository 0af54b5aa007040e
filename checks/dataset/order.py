"""Turn order and image placeholders of one record (both formats)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DROP, Problems, describe, repair

from doctor.findings import Applicability, Fix, Severity

FIRST_NOT_USER, NOT_ALTERNATING, NO_ASSISTANT = DAT.FIRST_TURN_NOT_USER, DAT.ROLES_NOT_ALTERNATING, DAT.NO_ASSISTANT_TURN
PH_MISSING, PH_COUNT, PH_WITHOUT_IMAGE, PH_MISPLACED = DAT.IMAGE_PLACEHOLDER_MISSING, DAT.IMAGE_PLACEHOLDER_COUNT, DAT.IMAGE_PLACEHOLDER_WITHOUT_IMAGE, DAT.IMAGE_PLACEHOLDER_MISPLACED
SIDE_ROLES = frozenset({"tool", "function", "ipython", "observation"})
WARNING = Severity.WARNING
REMOVE_PLACEHOLDER = Fix("remove the <image> placeholder", Applicability.UNSAFE, "dataset")
DROP_LEADING = Fix("drop the leading assistant turn(s)", Applicability.UNSAFE, "dataset")


def check_order(P: Problems, rec: dict, i: int, line: int, col: int, roles: list[str], user: str,
                assistant: str, field: str, llava: bool) -> None:
    """LLaVA: drop a first non-human turn, then human/gpt must alternate (train.py asserts it).
    Messages: optional system first, then user/assistant alternate (tool turns aside), as chat
    templates and LLaMA-Factory's converter require."""
    seq = [(k, r) for k, r in enumerate(roles) if r not in SIDE_ROLES] if not llava else list(enumerate(roles))
    if not llava and seq and seq[0][1] == "system":
        seq = seq[1:]
    if not seq:
        P.record(NO_ASSISTANT, i, line, col, (field,),
                 f"{describe(i, rec)} has only a system message: nothing to train on", fix=DROP)
        return
    if seq[0][1] != user:
        k, r = seq[0]
        if llava:
            P.record(FIRST_NOT_USER, i, line, col, (field, k, "from"),
                     f"{describe(i, rec)} opens with a {r!r} turn; LLaVA's preprocess silently drops a first "
                     "turn that is not from the human (the rest trains as written)", severity=WARNING,
                     fix=repair("drop the first turn, as train.py does"))
        else:
            P.record(FIRST_NOT_USER, i, line, col, (field, k, "role"),
                     f"{describe(i, rec)}: the first message (after any system prompt) is from {r!r}; chat "
                     "templates raise \"Conversation roles must alternate user/assistant/...\" and "
                     "LLaMA-Factory skips the record (\"Invalid role tag\")", severity=Severity.ERROR, fix=DROP_LEADING)
        seq = seq[1:]
        while not llava and seq and seq[0][1] != user:
            seq = seq[1:]
    key = "from" if llava else "role"
    for n, (k, r) in enumerate(seq):
        want = user if n % 2 == 0 else assistant
        if r != want:
            why = ("LLaVA asserts role == conv.roles[j % 2] (AssertionError)" if llava else
                   "chat templates raise \"Conversation roles must alternate user/assistant/...\"")
            what = "a second system message" if r == "system" else f"{r!r} where {want!r} is expected"
            P.record(NOT_ALTERNATING, i, line, col, (field, k, key),
                     f"{describe(i, rec)}: turn {k} is {what}: {why}", fix=DROP)
            break
    if not any(r == assistant for _, r in seq):
        P.record(NO_ASSISTANT, i, line, col, (field,),
                 f"{describe(i, rec)} has no {assistant!r} turn: every label is masked, so it trains nothing "
                 "(a batch of such records gives a NaN loss)", fix=DROP)


SHAREGPT_TAGS = frozenset({"human", "gpt", "observation", "function_call", "system"})
_SHAREGPT_ODD, _SHAREGPT_EVEN = ("human", "observation"), ("gpt", "function_call")
SHAREGPT = "LLaMA-Factory's sharegpt converter"


def check_sharegpt(P: Problems, rec: dict, i: int, line: int, col: int, roles: list[str]) -> list[str]:
    """LLaMA-Factory's ``SharegptDatasetConverter``: an optional first ``system`` turn, then
    human/observation and gpt/function_call alternate and their number is even; otherwise it logs
    "Invalid role tag" / "Invalid message count" and skips the record (a silent drop: error).
    Returns the roles as human/gpt for the placeholder check."""
    start = 1 if roles and roles[0] == "system" else 0
    seq = roles[start:]
    for n, r in enumerate(seq):
        k = n + start
        if r not in SHAREGPT_TAGS:
            P.record(DAT.UNKNOWN_ROLE, i, line, col, ("conversations", k, "from"),
                     f"{describe(i, rec)}: turn {k} is from {r!r}, a tag {SHAREGPT} does not know (human, gpt, "
                     "observation, function_call, system): it skips the record (\"Invalid role tag\")", fix=DROP)
            return roles
        want = _SHAREGPT_ODD if n % 2 == 0 else _SHAREGPT_EVEN
        if r not in want:
            code = FIRST_NOT_USER if n == 0 else NOT_ALTERNATING
            P.record(code, i, line, col, ("conversations", k, "from"),
                     f"{describe(i, rec)}: turn {k} is {r!r} where {' or '.join(map(repr, want))} is expected: "
                     f"{SHAREGPT} skips the record (\"Invalid role tag\")", severity=Severity.ERROR, fix=DROP)
            return roles
    if not seq:
        P.record(NO_ASSISTANT, i, line, col, ("conversations",),
                 f"{describe(i, rec)} has only a system turn: nothing to train on", fix=DROP)
    elif len(seq) % 2:
        P.record(NOT_ALTERNATING, i, line, col, ("conversations", len(roles) - 1, "from"),
                 f"{describe(i, rec)} ends with a {seq[-1]!r} turn: {SHAREGPT} needs an even number of turns "
                 "(\"Invalid message count\") and skips the record", fix=DROP)
    return ["human" if r in _SHAREGPT_ODD else "gpt" if r in _SHAREGPT_EVEN else r for r in roles]


def check_placeholders(P: Problems, rec: dict, i: int, line: int, col: int, n_images: int,
                       placeholders: list[tuple[int, int]], roles: list[Any], user: str, field: str,
                       value_key: str = "value", at: Callable[[int], tuple[Any, ...]] | None = None,
                       fixes: bool = True, sharegpt: bool = False) -> None:
    """``placeholders``: (turn index, how many) for every turn holding an image slot (an
    ``<image>`` in the text, or a ``{"type": "image"}`` part in the messages format). ``at``
    gives the pointer parts of turn j (default ``(field, j, value_key)``)."""
    llava = field == "conversations" and not sharegpt  # sharegpt records go to LLaMA-Factory, not LLaVA
    if at is None:
        def at(j: int) -> tuple[Any, ...]:
            return (field, j, value_key)
    total = sum(c for _, c in placeholders)
    if n_images == 0:
        if total:
            j = placeholders[0][0]
            why = (f"transformers' processors raise \"Found {total} <image> tokens in the text but no images were "
                   "passed\"" + ("; LLaVA's train.py tokenizes it as plain text and trains on it" if llava else
                                  "; LLaMA-Factory raises \"The number of images does not match the number of "
                                  "<image> tokens\""))
            P.record(PH_WITHOUT_IMAGE, i, line, col, at(j),
                     f"{describe(i, rec)} has {total} image placeholder(s) but no image: {why}",
                     fix=None if not fixes else REMOVE_PLACEHOLDER)
        return
    one = n_images == 1
    mismatch = ("transformers' processors raise \"Image features and image tokens do not match\"" if llava else
                "LLaMA-Factory raises \"The number of images does not match the number of <image> tokens\"; TRL "
                "raises \"Number of images provided ... does not match number of image placeholders\"")
    if total == 0:
        why = ("LLaVA appends the image features with length 0, so the image is silently ignored, and " + mismatch
               if llava else mismatch)
        P.record(PH_MISSING, i, line, col, (field,) if field != "alpaca" else ("instruction",),
                 f"{describe(i, rec)} has {n_images} image(s) but no image placeholder: {why}",
                 fix=(repair(f"insert <image> at the start of the first {user} turn") if one else DROP) if fixes else None)
        return
    if total != n_images:
        if one and len(placeholders) == 1 and llava:
            msg = (f"{describe(i, rec)}: <image> appears {total} times in turn {placeholders[0][0]} for one image: "
                   "LLaVA's preprocess collapses them into one, but " + mismatch)
        elif one and llava:
            turns = ", ".join(str(j) for j, _ in placeholders)
            msg = (f"{describe(i, rec)}: turns {turns} each hold <image> for one image: each becomes an image "
                   "placeholder, so LLaVA looks for more image features than there are (IndexError, or "
                   "features taken from the next record)")
        else:
            msg = f"{describe(i, rec)} has {total} image placeholders for {n_images} image(s): {mismatch}"
        P.record(PH_COUNT, i, line, col, at(placeholders[0][0]), msg,
                 fix=(repair(f"keep one <image> at the start of the first {user} turn") if one else DROP) if fixes else None)
        return
    if one:
        j = placeholders[0][0]
        first_user = next((k for k, r in enumerate(roles) if r == user), None)
        if j != first_user:
            role = roles[j] if j < len(roles) else None
            where = f"a {role!r} turn" if role else f"turn {j}"
            P.record(PH_MISPLACED, i, line, col, at(j),
                     f"{describe(i, rec)}: the image placeholder is in {where} (turn {j}), not in the first "
                     f"{user} turn: the model sees the image only after that text"
                     + (" and inside an answer it is trained to produce" if role not in (user, None) else ""),
                     severity=WARNING, fix=None if not fixes else repair(f"move <image> to the start of the first {user} turn"))

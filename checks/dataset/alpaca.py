"""Per-record checks for LLaMA-Factory's alpaca format:
``{"instruction", "input", "output", "system", "history": [[q, a], ...], "images": [...]}``.

Read the way ``AlpacaDatasetConverter`` (src/llamafactory/data/converter.py) reads it: the user
turn is ``"\\n".join`` of the non-empty ``instruction`` and ``input`` (a non-string raises
TypeError), the answer is ``output`` only when it is a string (otherwise the record is
"unsupervised" and the supervised processor drops it), ``history`` pairs become earlier turns,
and ``images`` (a path or a list) must match the ``<image>`` placeholders in the text
(mm_plugin raises "The number of images does not match the number of <image> tokens").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DROP, describe
from doctor.checks.dataset.order import check_placeholders
from doctor.checks.dataset.videos import check_video_placeholders

if TYPE_CHECKING:
    from doctor.checks.dataset.records import RecordChecker

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
MISSING_FIELD, WRONG_TYPE = DAT.MISSING_FIELD, DAT.WRONG_FIELD_TYPE
_MISSING: Any = object()
LOADER = "LLaMA-Factory's alpaca converter"


def check_alpaca(c: RecordChecker, rec: dict, i: int, line: int, col: int) -> None:
    P = c.problems
    roles: list[str | None] = []
    slots: list[tuple[int, int]] = []
    chars = 0
    history = rec.get("history")
    if history is not None:
        if type(history) is not list:
            c._field_problem(rec, i, line, col, ("history",), history, f"a list of [prompt, response] pairs ({LOADER})")
            history = []
        for k, pair in enumerate(history):
            if type(pair) is not list or len(pair) != 2 or not all(type(t) is str for t in pair):
                c._field_problem(rec, i, line, col, ("history", k), pair,
                                 f"a [prompt, response] pair of strings ({LOADER} unpacks two values)")
                continue
            for t, text in enumerate(pair):
                if IMAGE_TOKEN in text:
                    slots.append((len(roles), text.count(IMAGE_TOKEN)))
                roles.append("user" if t == 0 else "assistant")
                chars += len(text)
    prompt = []
    for key in ("instruction", "input"):
        value = rec.get(key)
        if value is None or value == "":
            continue
        if type(value) is not str:
            c._field_problem(rec, i, line, col, (key,), value, f"a string ({LOADER} joins it with \"\\n\")")
            continue
        prompt.append(value)
    text = "\n".join(prompt)
    if IMAGE_TOKEN in text:
        slots.append((len(roles), text.count(IMAGE_TOKEN)))
    roles.append("user")
    chars += len(text)
    output = rec.get("output", _MISSING)
    if type(output) is str:
        roles.append("assistant")
        chars += len(output)
        if not output.strip():
            c._empty_turn(rec, i, line, col, ("output",), "assistant")
    elif output is _MISSING or output is None:
        P.record(MISSING_FIELD, i, line, col, ("output",),
                 f"{describe(i, rec)} has no \"output\": {LOADER} makes it an unsupervised example and the "
                 "supervised processor drops it (\"Dropped invalid example\")", fix=DROP)
    else:
        c._field_problem(rec, i, line, col, ("output",), output,
                         f"a string ({LOADER} treats anything else as no answer and the record is dropped)")
    c.chars.append(chars)
    c.turns[len(roles)] = c.turns.get(len(roles), 0) + 1
    listed = c.listed_images(rec, i, line, col)
    n_images = 0 if listed is None else listed
    if "videos" in rec:  # LLaMA-Factory's alpaca columns include videos, with <video> placeholders
        n_videos = c.listed_videos(rec, i, line, col, with_images=n_images != 0)
        if n_videos is not None and n_videos >= 0:
            texts = [text] + [t for pair in history or () if type(pair) is list for t in pair if type(t) is str]
            total = sum(t.count(VIDEO_TOKEN) for t in texts) + (
                output.count(VIDEO_TOKEN) if type(output) is str else 0)
            check_video_placeholders(P, rec, i, line, col, n_videos, [(0, total)] if total else [],
                                     "instruction", "", at=("instruction",))
    if n_images >= 0 and (slots or n_images):
        last = len(roles) - 1 - (roles[-1] == "assistant")  # the instruction's turn

        def at(j: int) -> tuple[Any, ...]:
            if j < last:
                return ("history", j // 2, j % 2)
            return ("instruction",) if j == last else ("output",)

        check_placeholders(P, rec, i, line, col, n_images, slots, roles, "user", "alpaca", at=at, fixes=False)

"""Per-record checks for the two dataset formats, run once per record by the streaming scan.

LLaVA records are read the way haotian-liu/LLaVA's ``llava/train/train.py`` reads them:
``roles = {"human": ..., "gpt": ...}`` (any other ``from`` is a KeyError), a first turn that is
not from the human is dropped, then ``assert role == conv.roles[j % 2]``; every turn that
contains ``<image>`` becomes ONE image placeholder (``preprocess_multimodal`` strips the
occurrences and puts one at the start of that turn). Messages records are read the way TRL
and LLaMA-Factory do (roles system/user/assistant/tool, string content with ``<image>``
placeholders or typed parts ``{"type": "image"}``, paths in ``images``).

Videos are registered beside images (``videos`` / ``video_first`` / ``video_key``, numbered by
first use): LLaMA-Factory's ``videos`` column (sharegpt and openai records, a path string or a
list of them; a list of frame paths is one video of already sampled frames, each frame checked
as an image) and typed ``{"type": "video", "video" | "path" | "url": ...}`` parts; their
``<video>`` placeholders must match (``BasePlugin._validate_messages`` raises otherwise).

This module is the hot path of a 665k-record scan: keep the common case cheap.
"""

from __future__ import annotations

from array import array
from operator import attrgetter, itemgetter
from typing import Any

from doctor.checks.dataset.alpaca import check_alpaca
from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DROP, Problems, describe, kind, repair
from doctor.checks.dataset.messages import check_messages
from doctor.checks.dataset.order import SHAREGPT_TAGS, check_order, check_placeholders, check_sharegpt
from doctor.checks.dataset.videos import check_video_placeholders

from doctor.findings import Severity

try:
    from msgspec import UNSET
except ImportError:  # msgspec is optional: without it the scan reads every record as a dict
    UNSET = object()

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"

LLAVA_ALIASES = {"user": "human", "human": "human", "assistant": "gpt", "gpt": "gpt", "bot": "gpt",
                 "model": "gpt", "chatgpt": "gpt"}
MESSAGES_ROLES = frozenset({"system", "user", "assistant", "tool", "function", "ipython", "observation"})
MESSAGES_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant",
                    "chatgpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}
_SIDE_ROLES = frozenset({"tool", "function", "ipython", "observation"})
_MISSING: Any = object()
WARNING = Severity.WARNING
_FROM, _VALUE = itemgetter("from"), itemgetter("value")
_FIRST_ONLY = [(0, 1)]


def _alternating(n: int) -> list[str]:
    return ["human", "gpt"] * (n // 2) + ["human"] * (n % 2)


# human/gpt/human/... by length; lengths 0 and 1 never match (one turn trains nothing: check_order says so)
_ALTERNATING: list[list[Any]] = [[None], [None]] + [_alternating(n) for n in range(2, 64)]


class RecordChecker:
    """Checks records one at a time; collects problems, image references and counts."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.refs: dict[str, int] = {}  # image path -> reference number (order of first use)
        self.ref_first = array("l")  # reference number -> first record using it
        self.ref_key = array("H")  # reference number -> index into self.keys
        self.keys: list[tuple[Any, ...]] = []  # JSON pointer parts of the image field
        self._key_ids: dict[tuple[Any, ...], int] = {}
        self.image_refs = 0
        self.records_with_images = 0
        self.multi_image = 0  # records with a list of images or an "images" key (LLaVA format)
        self.multi_image_first: int | None = None
        self.turns: dict[int, int] = {}
        self.chars = array("I")
        self.videos: dict[str, int] = {}  # video path -> video reference number (order of first use)
        self.video_first = array("l")  # video reference number -> first record using it
        self.video_key = array("H")  # video reference number -> index into self.keys
        self.video_refs = 0
        self.records_with_videos = 0
        self.video_records_first: int | None = None
        self.video_only_records = 0  # records with videos and no image

    # ---- LLaVA -----------------------------------------------------------------------------
    def llava(self, rec: dict, i: int, line: int, col: int) -> None:
        P = self.problems
        n_images = self._llava_images(rec, i, line, col)
        conv = rec.get("conversations", _MISSING)
        if type(conv) is not list:
            self._field_problem(rec, i, line, col, ("conversations",), conv, "a list of turns")
            self.chars.append(0)
            return
        self.turns[len(conv)] = self.turns.get(len(conv), 0) + 1
        if not conv:
            P.record(DAT.EMPTY_FIELD, i, line, col, ("conversations",),
                     f"{describe(i, rec)}: \"conversations\" is empty; LLaVA's preprocess reads source[0] "
                     "and raises IndexError", fix=DROP)
            self.chars.append(0)
            return
        try:  # the common case in C-level loops: every turn an object with string "from"/"value"
            roles = list(map(_FROM, conv))
            values = list(map(_VALUE, conv))
            joined = "\n".join(values)  # TypeError unless every value is a string
        except (KeyError, TypeError):
            roles, placeholders, chars = self._llava_turns(rec, i, line, col, conv)
            alternating = False
        else:
            chars = len(joined) - len(values) + 1
            alternating = roles == (_ALTERNATING[len(roles)] if len(roles) < 64 else _alternating(len(roles))) and len(roles) > 1
            if not alternating:
                roles = [r if r == "human" or r == "gpt" else self._llava_role(rec, i, j, line, col, r)
                         for j, r in enumerate(roles)] if not self._sharegpt(rec, roles) else roles
            if not all(values) or any(map(str.isspace, values)):
                for j, value in enumerate(values):
                    if not value or value.isspace():
                        self._empty_turn(rec, i, line, col, ("conversations", j, "value"), roles[j])
            first = values[0]
            if joined.find("<", len(first)) < 0:  # memchr: no placeholder after the first turn
                n = first.count(IMAGE_TOKEN)
                placeholders = [(0, n)] if n else []
            else:
                placeholders = [(j, v.count(IMAGE_TOKEN)) for j, v in enumerate(values) if IMAGE_TOKEN in v]
        self.chars.append(chars)
        if "videos" in rec:
            self._sharegpt_videos(rec, i, line, col, conv, n_images != 0)
        if (not alternating or len(roles) % 2) and None not in roles:
            if self._sharegpt(rec, roles):
                roles = check_sharegpt(P, rec, i, line, col, roles)
            elif not alternating:
                check_order(P, rec, i, line, col, roles, "human", "gpt", "conversations", True)
        if n_images >= 0 and (placeholders or n_images) and not (
            n_images == 1 and placeholders == _FIRST_ONLY and roles[0] == "human"
        ):
            check_placeholders(P, rec, i, line, col, n_images, placeholders, roles, "human", "conversations",
                               sharegpt="images" in rec or "videos" in rec)

    def llava_window(self, items: list, first: int) -> bool:
        """Record a window of typed LLaVA records (``llava_decoder``) when no check would report
        anything on any of them, with exactly the bookkeeping ``llava`` does; False, recording
        nothing, as soon as one record needs the full rules (the caller then runs ``llava`` on
        each record as a dict). The test is conservative: whatever it is unsure of goes to
        ``llava``."""
        chars = array("I")
        add = chars.append
        alternating = _ALTERNATING
        isspace = str.isspace
        frm, val = _FRM, _VAL
        for r in items:
            conv = r.conversations
            n = len(conv)
            if n < 2 or n >= 64 or r.images is not UNSET or r.videos is not UNSET or list(map(frm, conv)) != alternating[n]:
                return False
            values = list(map(val, conv))
            head = values[0]
            joined = "\n".join(values)
            if not all(values) or any(map(isspace, values)) or joined.find("<", len(head)) >= 0:
                return False
            image = r.image
            if image is UNSET:
                if IMAGE_TOKEN in head:
                    return False
            elif not image or head.count(IMAGE_TOKEN) != 1:
                return False
            add(len(joined) - n + 1)
        self.chars.extend(chars)
        turns = self.turns
        for i, r in enumerate(items, first):
            n = len(r.conversations)
            turns[n] = turns.get(n, 0) + 1
            image = r.image
            if image is not UNSET:
                self.records_with_images += 1
                self._ref(image, i, _IMAGE_KEY)
        return True

    def _llava_turns(self, rec: dict, i: int, line: int, col: int,
                     conv: list) -> tuple[list[str | None], list[tuple[int, int]], int]:
        """Turn by turn, for records with a malformed turn: (roles, placeholders, characters)."""
        P = self.problems
        roles: list[str | None] = []
        placeholders: list[tuple[int, int]] = []
        chars = 0
        for j, turn in enumerate(conv):
            if type(turn) is not dict:
                P.record(DAT.WRONG_FIELD_TYPE, i, line, col, ("conversations", j),
                         f"{describe(i, rec)}: turn {j} is {kind(turn)}, not an object with \"from\" and \"value\"",
                         fix=DROP)
                roles.append(None)
                continue
            frm = turn.get("from", _MISSING)
            roles.append(frm if frm == "human" or frm == "gpt"
                         or (type(frm) is str and frm in SHAREGPT_TAGS and self._sharegpt(rec, [frm]))
                         else self._llava_role(rec, i, j, line, col, frm))
            value = turn.get("value", _MISSING)
            if type(value) is str:
                chars += len(value)
                if IMAGE_TOKEN in value:
                    placeholders.append((j, value.count(IMAGE_TOKEN)))
                if not value or value.isspace():
                    self._empty_turn(rec, i, line, col, ("conversations", j, "value"), frm)
            else:
                self._field_problem(rec, i, line, col, ("conversations", j, "value"), value, "a string")
        return roles, placeholders, chars

    def _llava_images(self, rec: dict, i: int, line: int, col: int) -> int:
        """Register the record's image paths; the number of images, or -1 when unusable."""
        key = "image"
        image = rec.get("image", _MISSING)
        if image is _MISSING:
            if "images" not in rec:
                return 0
            # LLaMA-Factory's sharegpt column (DAT114 is about LLaVA's "image" only)
            n = self.listed_images(rec, i, line, col, multi=False)
            return 0 if n is None else n
        if type(image) is str:
            if not image:
                self.problems.record(DAT.EMPTY_FIELD, i, line, col, (key,),
                                     f"{describe(i, rec)}: \"{key}\" is an empty string; LLaVA opens "
                                     "os.path.join(image_folder, \"\"), the folder itself", fix=DROP)
                return -1
            self.records_with_images += 1
            self._ref(image, i, (key,))
            return 1
        if type(image) is list:
            self._multi(i)
            if not image:
                self.problems.record(DAT.EMPTY_FIELD, i, line, col, (key,),
                                     f"{describe(i, rec)}: \"{key}\" is an empty list", fix=DROP)
                return -1
            ok = True
            for k, item in enumerate(image):
                if type(item) is str and item:
                    self._ref(item, i, (key, k))
                else:
                    ok = False
                    self._field_problem(rec, i, line, col, (key, k), item, "a non-empty path string")
            self.records_with_images += 1
            return len(image) if ok else -1
        self._field_problem(rec, i, line, col, (key,), image, "a path string (or a list of them)")
        return -1

    @staticmethod
    def _sharegpt(rec: dict, roles: list[Any]) -> bool:
        """Is this ``conversations`` record meant for LLaMA-Factory's sharegpt converter rather
        than LLaVA's train.py? It is when it lists its images under ``images`` (LLaMA-Factory's
        column; LLaVA reads ``image``) or uses sharegpt's tool tags, which LLaVA never had."""
        return "images" in rec or "videos" in rec or ("observation" in roles or "function_call" in roles) and "image" not in rec

    def _llava_role(self, rec: dict, i: int, j: int, line: int, col: int, frm: Any) -> str | None:
        parts = ("conversations", j, "from")
        if frm is _MISSING or type(frm) is not str:
            self._field_problem(rec, i, line, col, parts, frm, "\"human\" or \"gpt\"")
            return None
        alias = LLAVA_ALIASES.get(frm.strip().lower())
        if alias is not None:
            self.problems.record(DAT.UNKNOWN_ROLE, i, line, col, parts,
                                 f"{describe(i, rec)}: turn {j} is from {frm!r}; LLaVA's preprocess knows only "
                                 f"\"human\" and \"gpt\" (roles[{frm!r}] raises KeyError)",
                                 fix=repair(f"rename {frm!r} to {alias!r}"))
            return alias
        self.problems.record(DAT.UNKNOWN_ROLE, i, line, col, parts,
                             f"{describe(i, rec)}: turn {j} is from {frm!r}, a role LLaVA's preprocess does not "
                             "know (only \"human\" and \"gpt\"): KeyError", fix=DROP)
        return None

    def _sharegpt_videos(self, rec: dict, i: int, line: int, col: int, conv: list, with_images: bool) -> None:
        """LLaMA-Factory's sharegpt ``videos`` column against the ``<video>`` placeholders."""
        n = self.listed_videos(rec, i, line, col, with_images=with_images)
        slots = [(j, t["value"].count(VIDEO_TOKEN)) for j, t in enumerate(conv)
                 if type(t) is dict and type(t.get("value")) is str and VIDEO_TOKEN in t["value"]]
        if n is not None and n >= 0:
            check_video_placeholders(self.problems, rec, i, line, col, n, slots, "conversations", "value")

    # ---- messages, alpaca ------------------------------------------------------------------
    def messages(self, rec: dict, i: int, line: int, col: int) -> None:
        check_messages(self, rec, i, line, col)

    def alpaca(self, rec: dict, i: int, line: int, col: int) -> None:
        check_alpaca(self, rec, i, line, col)

    def check(self, fmt: str, rec: Any, i: int, line: int = 0, col: int = 0) -> None:
        """The per-record entry point for any source of records (a JSON stream, parquet or arrow
        rows as dicts): ``fmt`` is "llava", "messages" or "alpaca" (see ``detect_format``);
        ``line``/``col`` may be 0 where the source has no text positions."""
        getattr(self, fmt)(rec, i, line, col)

    # ---- shared ----------------------------------------------------------------------------
    def listed_images(self, rec: dict, i: int, line: int, col: int, key: str = "images",
                      multi: bool = True) -> int | None:
        """Register the images listed under ``key`` the way LLaMA-Factory reads that column
        (``_find_medias`` wraps a single value in a list; mm_plugin's ``_regularize_images`` opens
        a path string, or a ``{"bytes", "path"}`` object: ``bytes`` when not null, else ``path``).
        Their number; None without the key; -1 when one is unusable."""
        images = rec.get(key)
        if images is None:
            return None
        single = type(images) is not list
        if single and type(images) not in (str, dict):
            self._field_problem(rec, i, line, col, (key,), images, "a list of image paths")
            return -1
        items = [images] if single else images
        ok = True
        for k, item in enumerate(items):
            where = (key,) if single else (key, k)
            if type(item) is str and item:
                self._ref(item, i, where)
            elif type(item) is dict:
                if "bytes" not in item:
                    self.problems.record(DAT.WRONG_FIELD_TYPE, i, line, col, where,
                                         f"{describe(i, rec)}: {'/'.join(map(str, where))} is an object without "
                                         "\"bytes\": LLaMA-Factory's _regularize_images reads image[\"bytes\"] "
                                         "(KeyError); give the path as a string, or {\"bytes\": null, \"path\": ...}",
                                         fix=DROP)
                    ok = False
                elif item["bytes"] is None:
                    path = item.get("path")
                    if type(path) is str and path:
                        self._ref(path, i, where + ("path",))
                    else:
                        ok = False
                        self._field_problem(rec, i, line, col, where + ("path",), path,
                                            "a path string (\"bytes\" is null)")
            else:
                ok = False
                self._field_problem(rec, i, line, col, where, item, "a non-empty path string")
        if items:
            self.records_with_images += 1
            if len(items) > 1 and multi:
                self._multi(i)
        return len(items) if ok else -1


    def listed_videos(self, rec: dict, i: int, line: int, col: int, key: str = "videos",
                      with_images: bool = False) -> int | None:
        """Register the videos listed under ``key`` as LLaMA-Factory reads that column
        (``_find_medias`` wraps a single value in a list; ``_regularize_videos`` opens a path with
        ``av.open``, or takes a list of frame images as a video already sampled). Their number;
        None without the key; -1 when one is unusable."""
        videos = rec.get(key)
        if videos is None:
            return None
        single = type(videos) is not list
        if single and type(videos) is not str:
            self._field_problem(rec, i, line, col, (key,), videos, "a list of video paths")
            return -1
        items = [videos] if single else videos
        ok = True
        for k, item in enumerate(items):
            where = (key,) if single else (key, k)
            if type(item) is str and item:
                self.video_ref(item, i, where)
            elif type(item) is list and item and all(type(f) is str and f for f in item):
                for m, frame in enumerate(item):  # frames already sampled: each one is an image
                    self._ref(frame, i, where + (m,))
            else:
                ok = False
                self._field_problem(rec, i, line, col, where, item,
                                    "a video path string (or a list of frame image paths)")
        if items:
            self.video_record(i, with_images)
        return len(items) if ok else -1

    def video_ref(self, path: str, i: int, parts: tuple[Any, ...]) -> None:
        self.video_refs += 1
        if path not in self.videos:
            self.videos[path] = len(self.video_first)
            self.video_first.append(i)
            kid = self._key_ids.get(parts)
            if kid is None:
                kid = self._key_ids[parts] = len(self.keys)
                self.keys.append(parts)
            self.video_key.append(kid)

    def video_record(self, i: int, with_images: bool) -> None:
        """Count record ``i`` as one with videos (``with_images``: it has images too)."""
        self.records_with_videos += 1
        self.video_only_records += not with_images
        if self.video_records_first is None:
            self.video_records_first = i

    def _ref(self, path: str, i: int, parts: tuple[Any, ...]) -> None:
        self.image_refs += 1
        if path not in self.refs:
            self.refs[path] = len(self.ref_first)
            self.ref_first.append(i)
            kid = self._key_ids.get(parts)
            if kid is None:
                kid = self._key_ids[parts] = len(self.keys)
                self.keys.append(parts)
            self.ref_key.append(kid)

    def _multi(self, i: int) -> None:
        self.multi_image += 1
        if self.multi_image_first is None:
            self.multi_image_first = i

    def _field_problem(self, rec: dict, i: int, line: int, col: int, parts: tuple[Any, ...], value: Any,
                       expected: str) -> None:
        name = "/".join(str(p) for p in parts)
        if value is _MISSING:
            self.problems.record(DAT.MISSING_FIELD, i, line, col, parts,
                                 f"{describe(i, rec)} has no \"{parts[-1]}\" (at {name})", fix=DROP)
        else:
            self.problems.record(DAT.WRONG_FIELD_TYPE, i, line, col, parts,
                                 f"{describe(i, rec)}: {name} is {kind(value)}; expected {expected}", fix=DROP)

    def _empty_turn(self, rec: dict, i: int, line: int, col: int, parts: tuple[Any, ...], role: Any) -> None:
        self.problems.record(DAT.EMPTY_TURN, i, line, col, parts,
                             f"{describe(i, rec)}: the {role!s} turn at {'/'.join(map(str, parts[:2]))} is empty "
                             "or whitespace only", fix=DROP)


_IMAGE_KEY = ("image",)
_FRM, _VAL = attrgetter("frm"), attrgetter("value")
_DECODER: Any = None


def llava_decoder() -> Any:
    """A msgspec decoder for a list of LLaVA records whose types are right (turns from "human" or
    "gpt" with string values, a string image, no "images"): a window of records that decodes with
    it goes to ``RecordChecker.llava_window``; one that does not, record by record to ``llava``."""
    global _DECODER
    if _DECODER is None:
        from doctor.checks.dataset.typed import LLAVA

        _DECODER = LLAVA
    return _DECODER


def detect_format(rec: dict) -> str | None:
    """The record format a record is written in: "llava" (``conversations``, also
    LLaMA-Factory's sharegpt), "messages" (TRL, LLaMA-Factory openai and v1) or "alpaca"
    (LLaMA-Factory's ``instruction``/``output``); None when none fits."""
    if "conversations" in rec:
        return "llava"
    if "messages" in rec:
        return "messages"
    if "instruction" in rec or ("output" in rec and "input" in rec):
        return "alpaca"
    return None


__all__ = ["RecordChecker", "IMAGE_TOKEN", "WARNING", "detect_format"]

"""Typed record shapes for the compiled path of the dataset scan (msgspec structs).

A window of records that decodes into ``list[Llava]`` has the right types everywhere (turns
from "human" or "gpt" with string values, a string image, no "images" list); what types cannot
say (alternation, placeholders, empty text) is ``RecordChecker.llava_window``'s job. No
``from __future__ import annotations`` here: msgspec reads these annotations at runtime.
"""

from typing import Any, Literal

import msgspec


class Turn(msgspec.Struct):
    frm: Literal["human", "gpt"] = msgspec.field(name="from")
    value: str


class Llava(msgspec.Struct):
    conversations: list[Turn]
    image: str | msgspec.UnsetType = msgspec.UNSET
    images: Any = msgspec.UNSET
    videos: Any = msgspec.UNSET  # LLaMA-Factory's column: such a record goes to RecordChecker.llava
    id: Any = None


LLAVA = msgspec.json.Decoder(list[Llava])

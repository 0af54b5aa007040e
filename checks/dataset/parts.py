"""Folding the parts of a dataset scan back into one, exactly as one reader of every record would
have filled it: problems in record order under the same cap, image references numbered by first
use. ``--engine ray`` scans parts of a JSON Lines file (``scan.scan_part``) and row groups of a
parquet / Arrow table (``tables.scan_part``) on its workers; both fold with these two functions."""

from __future__ import annotations

from doctor.checks.dataset.common import Problems
from doctor.checks.dataset.records import RecordChecker


def fold_problems(into: Problems, part: Problems) -> None:
    """Add ``part``'s problems after ``into``'s (``part`` holds later records)."""
    for code, count in part.counts.items():
        kept = into.samples.setdefault(code, [])
        kept.extend(part.samples.get(code, [])[: max(into.cap - len(kept), 0)])
        if not kept:
            del into.samples[code]
        into.counts[code] = into.counts.get(code, 0) + count
    for code, fixes in part.fixes.items():
        for applicability, fix in fixes.items():
            into.fixes.setdefault(code, {}).setdefault(applicability, fix)


def fold_checker(into: RecordChecker, part: RecordChecker) -> None:
    """Add what ``part``'s records registered (image references, counts) after ``into``'s; the
    problems fold separately (``fold_problems``), since the checkers share their scan's."""
    _fold_refs(into, part, "refs", "ref_first", "ref_key")
    into.image_refs += part.image_refs
    into.records_with_images += part.records_with_images
    into.multi_image += part.multi_image
    if into.multi_image_first is None:
        into.multi_image_first = part.multi_image_first
    _fold_refs(into, part, "videos", "video_first", "video_key")  # numbered by first use, like the images
    into.video_refs += part.video_refs
    into.records_with_videos += part.records_with_videos
    into.video_only_records += part.video_only_records
    if into.video_records_first is None:
        into.video_records_first = part.video_records_first
    for turns, count in part.turns.items():
        into.turns[turns] = into.turns.get(turns, 0) + count
    into.chars.extend(part.chars)


def _fold_refs(into: RecordChecker, part: RecordChecker, refs: str, first: str, key_of: str) -> None:
    """Add ``part``'s references (``refs``: reference -> local number, ``first``: the record that
    first used it, ``key_of``: its resolution key) after ``into``'s, numbered by first use."""
    into_refs, into_first, into_key = getattr(into, refs), getattr(into, first), getattr(into, key_of)
    part_first, part_key = getattr(part, first), getattr(part, key_of)
    for ref, local in getattr(part, refs).items():
        if ref in into_refs:
            continue
        into_refs[ref] = len(into_first)
        into_first.append(part_first[local])
        key = part.keys[part_key[local]]
        kid = into._key_ids.get(key)
        if kid is None:
            kid = into._key_ids[key] = len(into.keys)
            into.keys.append(key)
        into_key.append(kid)

"""The numbers of a dataset, as a dict (the ``dataset_summary`` fixture, for reporters) and as
the one-line messages of DAT901-DAT903."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from doctor.checks.dataset.scan import DatasetScan


def scan_summary(scan: DatasetScan) -> dict[str, Any]:
    import numpy as np

    checker = scan.checker
    out: dict[str, Any] = {
        "path": scan.path, "format": scan.fmt, "layout": scan.layout, "records": scan.records,
        "objects": scan.objects, "complete": scan.complete, "bytes": scan.bytes,
        "seconds": round(scan.seconds, 3),
        "records_per_second": round(scan.records / scan.seconds) if scan.seconds else None,
    }
    if checker is None:
        return out
    out.update({
        "records_with_images": checker.records_with_images,
        "text_only_records": scan.objects - checker.records_with_images - checker.video_only_records,
        "image_references": checker.image_refs, "distinct_images": len(checker.refs),
        "multi_image_records": checker.multi_image,
    })
    if checker.records_with_videos:
        out.update({"records_with_videos": checker.records_with_videos, "video_references": checker.video_refs,
                    "distinct_videos": len(checker.videos)})
    if checker.turns:
        counts = sorted(checker.turns.items())
        total = sum(n for _, n in counts)
        out["turns"] = {"total": sum(k * n for k, n in counts), "min": counts[0][0], "max": counts[-1][0],
                        "median": _median(counts, total), "mean": round(sum(k * n for k, n in counts) / total, 2)}
    if len(checker.chars):
        values = np.frombuffer(checker.chars, dtype=np.uint32)
        p50, p90, p99 = (int(x) for x in np.percentile(values, [50, 90, 99]))
        out["characters"] = {"p50": p50, "p90": p90, "p99": p99, "max": int(values.max())}
    return out


def _median(counts: list[tuple[int, int]], total: int) -> int:
    seen = 0
    for value, n in counts:
        seen += n
        if seen * 2 >= total:
            return value
    return counts[-1][0]


def scan_sentence(s: dict[str, Any]) -> str:
    parts = [f"{s['records']:,} records"]
    if s.get("format"):
        shape = {"array": "JSON array", "table": "parquet / Arrow table"}.get(s["layout"], "JSON Lines")
        parts[0] += f" ({s['format']} format, {shape})"
    if "records_with_images" in s:
        parts.append(f"{s['records_with_images']:,} with images, {s['text_only_records']:,} text-only")
        parts.append(f"{s['image_references']:,} image references to {s['distinct_images']:,} distinct files")
    if s.get("records_with_videos"):
        parts.append(f"{s['records_with_videos']:,} records with videos, {s['video_references']:,} video "
                     f"references to {s['distinct_videos']:,} distinct files")
    if "turns" in s:
        t = s["turns"]
        parts.append(f"{t['min']}-{t['max']} turns per record (median {t['median']}, {t['total']:,} in all)")
    if "characters" in s:
        c = s["characters"]
        parts.append(f"text characters per record p50 {c['p50']:,}, p99 {c['p99']:,}, max {c['max']:,}")
    speed = f"; read in {s['seconds']:.1f} s"
    if s.get("records_per_second"):
        speed += f" ({s['records_per_second']:,} records/s)"
    if not s.get("complete"):
        speed += "; reading stopped early (see the parse errors)"
    return "; ".join(parts) + speed


def image_sentence(s: dict[str, Any]) -> str:
    text = f"{s['checked']:,} distinct images checked ({s['level']})"
    if "sized" in s:
        w, h, a = s["width"], s["height"], s["aspect_ratio"]
        text += (f"; size median {w['p50']:.0f}x{h['p50']:.0f} px (width {w['min']:.0f}-{w['max']:.0f}, height "
                 f"{h['min']:.0f}-{h['max']:.0f}); aspect ratio w/h {a['min']}-{a['max']} (5%-95%: {a['p5']}-"
                 f"{a['p95']}): {s['portrait']:,} portrait, {s['square']:,} square, {s['landscape']:,} landscape")
    if s.get("formats"):
        text += "; " + ", ".join(f"{k} {v:,}" for k, v in s["formats"].items())
    return text + f"; {s['bytes'] / 1e6:,.1f} MB"


def token_sentence(s: dict[str, Any]) -> str:
    return (f"tokens per record (text, template and images): p50 {s['p50']:,}, p90 {s['p90']:,}, p99 {s['p99']:,}, "
            f"max {s['max']:,}; {s['over_max_length']:,} record(s) over {s['max_length']:,} "
            f"({s['max_length_source']}); image tokens: {s['image_tokens']}; template: {s['template']}"
            + video_sentence(s))


def video_sentence(s: dict[str, Any]) -> str:
    """The video part of the token summary (empty without videos)."""
    if not s.get("videos_counted") and not s.get("videos_not_counted"):
        return ""
    out = f"; video tokens: {s['video_tokens']:,} in {s['videos_counted']:,} video(s) ({s['video_rule']})"
    if s["videos_not_counted"]:
        why = ("by the rule above" if str(s.get("video_rule", "")).startswith("not counted")
               else "not measured, unreadable, or no video input")
        out += f"; {s['videos_not_counted']:,} video(s) not counted ({why})"
    return out

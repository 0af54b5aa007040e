"""The token budget: a second streaming pass that tokenizes every turn and adds the image tokens
the model inserts, against the training length (the ``dataset_tokens`` fixture).

What a too-long record does: haotian-liu/LLaVA truncates ``input_ids`` to ``model_max_length``
in the collator and again after inserting the image features, silently; transformers'
processors expand ``<image>`` first, so ``truncation=True`` can cut inside the image tokens and
the model raises "Image features and image tokens do not match". A record whose answers all
lie past the limit keeps only masked labels: it trains nothing.

Videos count in place, in turn order beside the images (``<video>`` placeholders and typed video
parts): each video's tokens from its container header (``dataset_videos``) by LLaMA-Factory's
sampling (``--video-fps``, ``--video-maxlen``, ``--video-max-pixels``, ``--video-min-pixels``) and
the model's video processor settings (``doctor.families.resize``); a family without the dynamic
rule takes no video in LLaMA-Factory (DAT116), so its videos count 0; a video that was not
measured is not counted, and the report says how many.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import Problem, Problems, describe
from doctor.checks.dataset.template import Overhead, load_lengths, overhead
from doctor.checks.dataset.vision import VisionSpec, max_length_of, vision_spec

from doctor.families.resize import VideoSampling, regularized_size, sampled_frames
from doctor.findings import Applicability, Fix, Location, Severity

if TYPE_CHECKING:
    from doctor.checks.dataset.images.run import ImageReport
    from doctor.checks.dataset.scan import DatasetScan
    from doctor.checks.dataset.videos import VideoReport

BATCH = 1024
TRUNCATED, ANSWERS_CUT, IMAGE_CUT = DAT.RECORD_TRUNCATED, DAT.ANSWERS_TRUNCATED, DAT.IMAGE_TOKENS_TRUNCATED
ASPECT_LIMIT = 200  # transformers' Qwen2-VL smart_resize refuses max(h, w) / min(h, w) above it
_ASSISTANT = frozenset({"gpt", "assistant", "bot", "model", "chatgpt"})
FALLBACK_MAX_LENGTH = 2048


@dataclass
class TokenReport:
    skipped: str | None = None
    problems: Problems = field(default_factory=Problems)
    lengths: array = field(default_factory=lambda: array("I"))
    max_length: int = 0
    max_length_source: str = ""
    spec: VisionSpec | None = None
    template: Overhead | None = None
    tokenizer: str = ""
    drop: dict[int, str] = field(default_factory=dict)  # record -> "CODE why", for the drop fix
    seconds: float = 0.0
    sampling: VideoSampling = field(default_factory=VideoSampling)
    video_tokens: int = 0  # all videos' tokens, every use counted
    videos_counted: int = 0  # video uses counted / not counted (unmeasured, broken, unsupported)
    videos_not_counted: int = 0
    video_rule: str = ""


def count_tokens(scan: DatasetScan, images: ImageReport | None, options: Any,
                 progress: Callable[..., Any] | None = None, videos: VideoReport | None = None) -> TokenReport:
    folder = options.tokenizer or options.model
    if not folder:
        return TokenReport(skipped="no tokenizer: pass --tokenizer DIR or --model DIR for the token budget")
    if scan.fmt is None:
        return TokenReport(skipped="the records are in no known format")
    try:
        lengths = load_lengths(folder)
    except ValueError as e:
        return TokenReport(skipped=str(e))
    report = TokenReport(tokenizer=str(folder), spec=vision_spec(options.model))
    max_length, source = max_length_of(options.model, folder)
    if getattr(options, "max_length", None):
        max_length, source = int(options.max_length), "--max-length"
    if not max_length:
        max_length, source = FALLBACK_MAX_LENGTH, "assumed (LLaVA's scripts pass --model_max_length 2048)"
    report.max_length, report.max_length_source = max_length, source
    report.template = overhead(folder, lengths)
    report.sampling = VideoSampling(float(getattr(options, "video_fps", 2.0)), int(getattr(options, "video_maxlen", 128)),
                                    int(getattr(options, "video_max_pixels", 256 * 256)),
                                    int(getattr(options, "video_min_pixels", 16 * 16)))
    report.video_rule = video_rule(report.spec, report.sampling, bool(options.model))
    started = time.perf_counter()
    _pass(scan, images, report, lengths, progress, videos)
    report.seconds = time.perf_counter() - started
    return report


def _pass(scan: DatasetScan, images: ImageReport | None, report: TokenReport,
          lengths: Callable[[list[str]], list[int]], progress: Callable[..., Any] | None,
          videos: VideoReport | None = None) -> None:
    records: list[tuple[int, dict, int, list[tuple[bool, str]], list[int], list[int]]] = []
    texts: list[str] = []
    bar = progress("Counting tokens", scan.objects) if progress else nullcontext(lambda n=1: None)
    with bar as advance:
        for i, (rec, line, _col, _off) in enumerate(scan.iter_records()):
            if type(rec) is not dict:
                continue
            turns, image_tokens, video_tokens = _turns(rec, scan, images, report.spec, texts, videos, report)
            records.append((i, rec, line, turns, image_tokens, video_tokens))
            if images is not None and report.spec is not None and report.spec.dynamic is not None:
                _aspect(report, scan, images, i, rec, line)
            if len(records) >= BATCH:
                _flush(records, texts, lengths, report, scan)
                advance(len(records))
                records, texts = [], []
        if records:
            _flush(records, texts, lengths, report, scan)
            advance(len(records))


def _turns(rec: dict, scan: DatasetScan, images: ImageReport | None, spec: VisionSpec | None,
           texts: list[str], videos: VideoReport | None = None, report: TokenReport | None = None,
           ) -> tuple[list[tuple[bool, str]], list[int], list[int]]:
    """Per turn (is an answer, its media in order: "i" an image, "v" a video); the turn texts go
    to ``texts``; then the tokens of the record's images and of its videos, in order."""
    llava = scan.fmt == "llava"
    turns_raw = (alpaca_messages(rec) if scan.fmt == "alpaca" else
                 rec.get("conversations" if llava else "messages"))
    out: list[tuple[bool, str]] = []
    if type(turns_raw) is not list:
        return out, [], []
    sharegpt = llava and ("images" in rec or "videos" in rec)
    inline: list[str | None] = []  # per video slot: the file a typed part names, or None
    for turn in turns_raw:
        if type(turn) is not dict:
            continue
        role = turn.get("from" if llava else "role")
        text = _text(turn.get("value" if llava else "content"), inline)
        media = _media(text) if "<" in text else ""
        if llava and not sharegpt and media:
            # LLaVA's preprocess_multimodal keeps one <image> per turn; <video> is plain text to it
            media = "i" if "i" in media else ""
            out.append((isinstance(role, str) and role.strip().lower() in _ASSISTANT, media))
            texts.append(text.replace("<image>", "") if media else text)
            continue
        out.append((isinstance(role, str) and role.strip().lower() in _ASSISTANT, media))
        texts.append(text.replace("<image>", "").replace("<video>", "") if media else text)
    paths = _paths(rec, llava)
    refs = scan.refs
    tokens = []
    for p in paths:
        size = images.size_of(refs[p]) if images is not None and p in refs else None
        tokens.append(spec.tokens(*size) if spec and size else (spec.tokens() if spec else 0))
    video_tokens: list[int] = []
    if inline or "videos" in rec:
        listed = iter(_video_items(rec))
        for path in inline or [None] * sum(m.count("v") for _, m in out):
            item = path if path is not None else next(listed, None)
            video_tokens.append(_video_tokens(item, scan, images, videos, spec, report))
    return out, tokens, video_tokens


def alpaca_messages(rec: dict) -> list[dict[str, Any]]:
    """An alpaca record as the turns ``AlpacaDatasetConverter`` makes of it: ``system``, the
    ``history`` pairs, then ``instruction`` and ``input`` joined with "\\n" as the user turn and
    ``output`` (a string) as the answer. Malformed fields are left out (DAT012/DAT013 report them)."""
    out: list[dict[str, Any]] = []
    system = rec.get("system")
    if type(system) is str and system:
        out.append({"role": "system", "content": system})
    history = rec.get("history")
    for pair in history if type(history) is list else ():
        if type(pair) is list and len(pair) == 2 and all(type(t) is str for t in pair):
            out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    query = [v for v in (rec.get("instruction"), rec.get("input")) if type(v) is str and v]
    out.append({"role": "user", "content": "\n".join(query)})
    if type(rec.get("output")) is str:
        out.append({"role": "assistant", "content": rec["output"]})
    return out


def _aspect(report: TokenReport, scan: DatasetScan, images: ImageReport, i: int, rec: dict, line: int) -> None:
    """DAT304: an image the dynamic-resolution processor refuses for its aspect ratio."""
    refs = scan.refs
    for p in _paths(rec, scan.fmt == "llava"):
        size = images.size_of(refs[p]) if p in refs else None
        if not size or min(size) <= 0 or max(size) <= ASPECT_LIMIT * min(size):
            continue
        w, h = size
        report.drop[i] = f"{DAT.IMAGE_ASPECT_RATIO_REFUSED}: image {p} is {w}x{h}, an aspect ratio over 200"
        report.problems.add(DAT.IMAGE_ASPECT_RATIO_REFUSED, Problem(
            f"{describe(i, rec)}: image {p!r} is {w:,} x {h:,} px, aspect ratio {max(size) / min(size):,.0f}: "
            f"{report.spec.family if report.spec else 'the'} processor's smart_resize raises \"absolute aspect ratio "
            "must be smaller than 200\" (TRL, transformers; LLaMA-Factory squeezes it to 180:1 first)",
            i, f"/{i}", line, fix=Fix("drop the record (it goes to <name>.rejected.jsonl with the reason)",
                                     Applicability.UNSAFE, "dataset", {"records": report.drop})))
        return


def _media(text: str) -> str:
    """The placeholders of ``text`` in order: "i" for <image>, "v" for <video>."""
    out = []
    k = 0
    while True:
        a, b = text.find("<image>", k), text.find("<video>", k)
        if a < 0 and b < 0:
            return "".join(out)
        if b < 0 or 0 <= a < b:
            out.append("i")
            k = a + 7
        else:
            out.append("v")
            k = b + 7


def _video_items(rec: dict) -> list[Any]:
    value = rec.get("videos")
    return [value] if type(value) is str else value if type(value) is list else []


def _video_tokens(item: Any, scan: DatasetScan, images: ImageReport | None, videos: VideoReport | None,
                  spec: VisionSpec | None, report: TokenReport | None) -> int:
    """One video's tokens (0, counted as not counted, when unknown)."""
    info = None
    frames = 0
    if type(item) is str and item:
        checker = scan.checker
        ref = checker.videos.get(item) if checker is not None else None
        info = videos.info_of(ref) if videos is not None and ref is not None else None
    elif type(item) is list and item and type(item[0]) is str:  # frames already sampled: images
        refs = scan.refs
        size = images.size_of(refs[item[0]]) if images is not None and item[0] in refs else None
        if size:
            from doctor.io.video import VideoInfo

            info, frames = VideoInfo(len(item), None, size[0], size[1], "frames"), len(item)
    n = video_tokens_of(info, spec, report.sampling if report else VideoSampling(), frames) if info else None
    if report is not None:
        if n is None:
            report.videos_not_counted += 1
        else:
            report.videos_counted += 1
            report.video_tokens += n
    return n or 0


def video_tokens_of(info: Any, spec: VisionSpec | None, sampling: VideoSampling, sampled: int = 0) -> int | None:
    """Tokens of one measured video (``doctor.io.video.VideoInfo``): LLaMA-Factory's frame
    sampling and regularization, then the model's video processor (``sampled``: frames already
    sampled, as a list of frame images); None when the model family takes no video."""
    geo = spec.video or spec.dynamic if spec is not None else None
    if spec is None or spec.dynamic is None or geo is None or spec.video_not_counted:
        return None
    frames = sampled or sampled_frames(info.frames, info.seconds, sampling)
    width, height = regularized_size(info.width, info.height, sampling)
    grid = geo.video_grid(frames, width, height)
    return grid[0] * grid[1] * grid[2] // (spec.dynamic.merge_size ** 2) + spec.extra


def video_rule(spec: VisionSpec | None, sampling: VideoSampling, model: bool) -> str:
    """How the videos are counted, for the report."""
    s = sampling
    how = (f"LLaMA-Factory's sampling: min(frames, {s.maxlen}, max(1, floor(seconds x {s.fps:g}))), made even; "
           f"frames scaled into {s.min_pixels:,}-{s.max_pixels:,} px (--video-min-pixels / --video-max-pixels)")
    if spec is not None and spec.video_not_counted:
        return f"not counted: {spec.video_not_counted}, which this count does not replay"
    if spec is not None and spec.dynamic is not None:
        geo = spec.video or spec.dynamic
        return (f"{how}; then the video processor's smart_resize ({geo.min_pixels:,}-{geo.max_pixels:,} px, "
                f"factor {geo.factor}) and ceil(frames / {geo.temporal_patch_size}) grids of (h'/{geo.factor}) x "
                f"(w'/{geo.factor}) tokens, + {spec.extra} around each")
    if not model:
        return "not counted: no --model, so the video processor is unknown"
    return (f"not counted: {spec.family if spec else 'this'} model takes no video input in LLaMA-Factory "
            f"({DAT.VIDEOS_NOT_SUPPORTED})")


def _text(content: Any, inline: list[str | None] | None = None) -> str:
    if type(content) is str:
        return content
    if type(content) is list:  # typed parts: text, and one <image> per image part, <video> per video part
        parts = []
        for part in content:
            if type(part) is dict:
                kind = part.get("type")
                if kind in ("image", "image_url"):
                    parts.append("<image>")
                elif kind in ("video", "video_url"):
                    parts.append("<video>")
                    if inline is not None:
                        inline.append(_part_path(part))
                elif type(part.get("text")) is str:
                    parts.append(part["text"])
        return "".join(parts)
    return ""


def _part_path(part: dict) -> str | None:
    """The file a video part names; "" for a part carrying a URL or data (not measured); None
    for a part without either (filled from the record's ``videos``)."""
    from doctor.checks.dataset.messages import inline_path

    path, _key, data = inline_path(part, ("video", "path", "url", "value"), "video_url")
    return path if path else "" if data else None


def _paths(rec: dict, llava: bool) -> list[str]:
    value = rec.get("image", rec.get("images")) if llava else rec.get("images")
    if type(value) is str:
        return [value]
    if type(value) is list:
        return [v if type(v) is str else v.get("path") for v in value
                if type(v) is str or (type(v) is dict and type(v.get("path")) is str)]
    return []


def _flush(records: list, texts: list[str], lengths: Callable[[list[str]], list[int]], report: TokenReport,
           scan: DatasetScan) -> None:
    counts = lengths(texts)
    k = 0
    t = report.template
    assert t is not None
    limit = report.max_length
    for i, rec, line, turns, image_tokens, video_tokens in records:
        pos = t.base
        first_answer: int | None = None
        spans: list[tuple[int, int, str]] = []
        images = list(image_tokens)
        videos = list(video_tokens)
        for answer, media in turns:
            text = counts[k]
            k += 1
            if answer:
                pos += t.assistant_before
                if first_answer is None:
                    first_answer = pos
                pos += text + t.assistant_after
            else:
                pos += t.user
                for m in media:
                    queue = images if m == "i" else videos
                    if queue:
                        size = queue.pop(0)
                        spans.append((pos, pos + size, m))
                        pos += size
                pos += text
        report.lengths.append(pos)
        if pos > limit:
            _judge(report, scan, i, rec, line, pos, first_answer, spans)


def _judge(report: TokenReport, scan: DatasetScan, i: int, rec: dict, line: int, total: int,
           first_answer: int | None, spans: list[tuple[int, int, str]]) -> None:
    limit = report.max_length
    images = sum(e - s for s, e, m in spans if m == "i")
    videos = sum(e - s for s, e, m in spans if m == "v")
    where = Location(pointer=f"/{i}", line=line, record=i)
    drop = Fix("drop the record (it goes to <name>.rejected.jsonl with the reason)", Applicability.UNSAFE,
               "dataset", {"records": report.drop})
    size = (f"about {total:,} tokens ({images:,} of them image tokens" +
            (f", {videos:,} video tokens)" if videos else ")"))
    cut = next(((s, e, m) for s, e, m in spans if e > limit), None)
    if cut is not None:
        what = "video" if cut[2] == "v" else "image"
        report.drop[i] = f"{IMAGE_CUT}: the token budget cuts through its {what} tokens"
        why = ("transformers' processor truncates inside them and the model raises \"Video features and video "
               "tokens do not match\" (LLaMA-Factory's cutoff_len cuts the video's tokens)" if what == "video" else
               "transformers' processor truncates inside them and the model raises \"Image features and image "
               "tokens do not match\" (LLaVA trains on a partial image, or none)")
        report.problems.add(IMAGE_CUT, Problem(
            f"{describe(i, rec)}: {size} > max length {limit:,}; the {what} tokens at {cut[0]:,}-{cut[1]:,} do "
            f"not fit under it: {why}", i, where.pointer, line, fix=drop))
    elif first_answer is not None and first_answer >= limit:
        report.drop[i] = f"{ANSWERS_CUT}: every answer lies past the token budget"
        report.problems.add(ANSWERS_CUT, Problem(
            f"{describe(i, rec)}: {size}; the first answer starts at token {first_answer:,}, past max length "
            f"{limit:,}: every label is masked, the record trains nothing", i, where.pointer, line, fix=drop))
    else:
        report.problems.add(TRUNCATED, Problem(
            f"{describe(i, rec)}: {size} > max length {limit:,}: the last {total - limit:,} tokens are cut",
            i, where.pointer, line, severity=Severity.WARNING))


def token_stats(report: TokenReport) -> dict[str, Any]:
    import numpy as np

    if not len(report.lengths):
        return {}
    values = np.frombuffer(report.lengths, dtype=np.uint32)
    p50, p90, p99 = (int(x) for x in np.percentile(values, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "max": int(values.max()), "mean": round(float(values.mean()), 1),
            "over_max_length": int((values > report.max_length).sum()), "max_length": report.max_length,
            "max_length_source": report.max_length_source,
            "image_tokens": report.spec.description if report.spec else "",
            "template": report.template.source if report.template else "", "tokenizer": report.tokenizer,
            "folder": str(Path(report.tokenizer)),
            **({"video_tokens": report.video_tokens, "videos_counted": report.videos_counted,
                "videos_not_counted": report.videos_not_counted, "video_rule": report.video_rule,
                "video_sampling": {"video_fps": report.sampling.fps, "video_maxlen": report.sampling.maxlen,
                                   "video_max_pixels": report.sampling.max_pixels,
                                   "video_min_pixels": report.sampling.min_pixels}}
               if report.videos_counted or report.videos_not_counted else {})}

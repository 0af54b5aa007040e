"""The token budget: a second streaming pass that tokenizes every turn and adds the image tokens
the model inserts, against the training length (the ``dataset_tokens`` fixture).

What a too-long record does: haotian-liu/LLaVA truncates ``input_ids`` to ``model_max_length``
in the collator and again after inserting the image features, silently; transformers'
processors expand ``<image>`` first, so ``truncation=True`` can cut inside the image tokens and
the model raises "Image features and image tokens do not match". A record whose answers all
lie past the limit keeps only masked labels: it trains nothing.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.checks.dataset.common import Problem, Problems, describe
from doctor.checks.dataset.template import Overhead, load_lengths, overhead
from doctor.checks.dataset.vision import VisionSpec, max_length_of, vision_spec

from doctor.findings import Applicability, Fix, Location, Severity

if TYPE_CHECKING:
    from doctor.checks.dataset.images.run import ImageReport
    from doctor.checks.dataset.scan import DatasetScan

BATCH = 1024
TRUNCATED, ANSWERS_CUT, IMAGE_CUT = "DAT301", "DAT302", "DAT303"
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


def count_tokens(scan: DatasetScan, images: ImageReport | None, options: Any,
                 progress: Callable[..., Any] | None = None) -> TokenReport:
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
    started = time.perf_counter()
    _pass(scan, images, report, lengths, progress)
    report.seconds = time.perf_counter() - started
    return report


def _pass(scan: DatasetScan, images: ImageReport | None, report: TokenReport,
          lengths: Callable[[list[str]], list[int]], progress: Callable[..., Any] | None) -> None:
    records: list[tuple[int, dict, int, list[tuple[bool, int]], list[int]]] = []
    texts: list[str] = []
    bar = progress("Counting tokens", scan.objects) if progress else nullcontext(lambda n=1: None)
    with bar as advance:
        for i, (rec, line, _col, _off) in enumerate(scan.iter_records()):
            if type(rec) is not dict:
                continue
            turns, image_tokens = _turns(rec, scan, images, report.spec, texts)
            records.append((i, rec, line, turns, image_tokens))
            if len(records) >= BATCH:
                _flush(records, texts, lengths, report, scan)
                advance(len(records))
                records, texts = [], []
        if records:
            _flush(records, texts, lengths, report, scan)
            advance(len(records))


def _turns(rec: dict, scan: DatasetScan, images: ImageReport | None, spec: VisionSpec | None,
           texts: list[str]) -> tuple[list[tuple[bool, int]], list[int]]:
    """Per turn (is an answer, images in it); the turn texts go to ``texts``."""
    llava = scan.fmt == "llava"
    turns_raw = rec.get("conversations" if llava else "messages")
    out: list[tuple[bool, int]] = []
    if type(turns_raw) is not list:
        return out, []
    for turn in turns_raw:
        if type(turn) is not dict:
            continue
        role = turn.get("from" if llava else "role")
        text = _text(turn.get("value" if llava else "content"))
        n = text.count("<image>")
        if llava and n:
            n = 1  # LLaVA's preprocess_multimodal keeps one <image> per turn
        out.append((isinstance(role, str) and role.strip().lower() in _ASSISTANT, n))
        texts.append(text.replace("<image>", "") if n else text)
    paths = _paths(rec, llava)
    refs = scan.refs
    tokens = []
    for p in paths:
        size = images.size_of(refs[p]) if images is not None and p in refs else None
        tokens.append(spec.tokens(*size) if spec and size else (spec.tokens() if spec else 0))
    return out, tokens


def _text(content: Any) -> str:
    if type(content) is str:
        return content
    if type(content) is list:  # typed parts: text, and one <image> per image part
        parts = []
        for part in content:
            if type(part) is dict:
                if part.get("type") in ("image", "image_url"):
                    parts.append("<image>")
                elif type(part.get("text")) is str:
                    parts.append(part["text"])
        return "".join(parts)
    return ""


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
    for i, rec, line, turns, image_tokens in records:
        pos = t.base
        first_answer: int | None = None
        spans: list[tuple[int, int]] = []
        queue = list(image_tokens)
        for answer, n_images in turns:
            text = counts[k]
            k += 1
            if answer:
                pos += t.assistant_before
                if first_answer is None:
                    first_answer = pos
                pos += text + t.assistant_after
            else:
                pos += t.user
                for _ in range(n_images):
                    if queue:
                        size = queue.pop(0)
                        spans.append((pos, pos + size))
                        pos += size
                pos += text
        report.lengths.append(pos)
        if pos > limit:
            _judge(report, scan, i, rec, line, pos, first_answer, spans)


def _judge(report: TokenReport, scan: DatasetScan, i: int, rec: dict, line: int, total: int,
           first_answer: int | None, spans: list[tuple[int, int]]) -> None:
    limit = report.max_length
    images = sum(e - s for s, e in spans)
    where = Location(pointer=f"/{i}", line=line, record=i)
    drop = Fix("drop the record (it goes to <name>.rejected.jsonl with the reason)", Applicability.UNSAFE,
               "dataset", {"records": report.drop})
    size = f"about {total:,} tokens ({images:,} of them image tokens)"
    cut = next(((s, e) for s, e in spans if e > limit), None)
    if cut is not None:
        report.drop[i] = f"{IMAGE_CUT}: the token budget cuts through its image tokens"
        report.problems.add(IMAGE_CUT, Problem(
            f"{describe(i, rec)}: {size} > max length {limit:,}; the image tokens at {cut[0]:,}-{cut[1]:,} do "
            "not fit under it: transformers' processor truncates inside them and the model raises \"Image "
            "features and image tokens do not match\" (LLaVA trains on a partial image, or none)", i,
            where.pointer, line, fix=drop))
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
            "folder": str(Path(report.tokenizer))}

"""The run's own record: ``trainer_state.json`` (transformers' ``TrainerState.save_to_json``) and
its ``log_history``, turned into series and judged. Pure Python: no numpy, no torch.

A train log entry is ``{"loss", "grad_norm" (transformers >= 4.38), "learning_rate", "epoch",
"step"}``; an eval entry carries ``eval_loss``; the last entry of a finished run carries
``train_loss`` / ``train_runtime`` (ignored here). Python's json writes NaN and Infinity as bare
``NaN`` / ``Infinity``, which ``json.loads`` reads back as floats.

Note on what the log can show: with ``logging_nan_inf_filter`` (on by default) the Trainer replaces
a NaN/Inf step loss by the mean of the window so far, which is exactly 0.0 when every step since
the last log was NaN/Inf. So a run whose every step is NaN logs ``loss 0.0``, and a logged NaN means
the filter was off (or the whole window had no finite loss before it, in older versions).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.runs.layout import MAX_STATE_BYTES, read_json


@dataclass(frozen=True)
class Point:
    step: int
    value: float
    index: int  # position in log_history, for the JSON pointer

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)


@dataclass
class Record:
    """The series of one trainer_state.json."""

    path: str
    global_step: int = 0
    max_steps: int = 0
    best_model_checkpoint: str | None = None
    best_metric: float | None = None
    loss: list[Point] = field(default_factory=list)
    lr: list[Point] = field(default_factory=list)
    grad_norm: list[Point] = field(default_factory=list)
    eval_loss: list[Point] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.max_steps > 0 and self.global_step >= self.max_steps

    def pointer(self, p: Point, key: str) -> str:
        return f"/log_history/{p.index}/{key}"


class RecordError(ValueError):
    """trainer_state.json cannot be read as a Trainer record; the message says why."""


def load_record(path: Path) -> Record:
    data = read_json(path, limit=MAX_STATE_BYTES)
    if data is None:
        raise RecordError("is not valid JSON (or is larger than 256 MB)")
    if not isinstance(data, dict):
        raise RecordError(f"is a JSON {type(data).__name__}, not the object TrainerState.save_to_json writes")
    history = data.get("log_history")
    if not isinstance(history, list):
        raise RecordError("has no log_history list")
    rec = Record(str(path), _int(data.get("global_step")), _int(data.get("max_steps")))
    best = data.get("best_model_checkpoint")
    rec.best_model_checkpoint = best if isinstance(best, str) else None
    rec.best_metric = _num(data.get("best_metric"))
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            continue
        step = _int(entry.get("step"))
        for key, series in (("loss", rec.loss), ("learning_rate", rec.lr), ("grad_norm", rec.grad_norm),
                            ("eval_loss", rec.eval_loss)):
            value = _num(entry.get(key))
            if value is not None:
                series.append(Point(step, value, i))
    return rec


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


# ---- judgements -------------------------------------------------------------------------------

@dataclass
class Spike:
    point: Point
    baseline: float
    recovered: bool


def non_finite(points: list[Point]) -> list[Point]:
    return [p for p in points if not p.finite]


def exact_zeros(points: list[Point]) -> list[Point]:
    return [p for p in points if p.value == 0.0]


@dataclass
class Trend:
    head: list[Point]
    tail: list[Point]
    head_median: float
    tail_median: float

    @property
    def change(self) -> float:
        """Relative fall from the head to the tail: 0.3 = the loss fell by 30%; negative = it rose."""
        return (self.head_median - self.tail_median) / self.head_median if self.head_median else 0.0


MIN_TREND_POINTS = 10
MIN_FALL = 0.02


def trend(loss: list[Point]) -> Trend | None:
    """Median of the first fifth (at least 3 points) against the median of the last half, over
    finite, non-zero losses. Medians shrug off spikes and the per-batch noise of logging_steps=1."""
    pts = [p for p in loss if p.finite and p.value != 0.0]
    if len(pts) < MIN_TREND_POINTS:
        return None
    head = pts[: max(3, len(pts) // 5)]
    tail = pts[len(pts) // 2:]
    return Trend(head, tail, statistics.median(p.value for p in head), statistics.median(p.value for p in tail))


SPIKE_WINDOW = 20
SPIKE_MIN_HISTORY = 5


def spikes(loss: list[Point]) -> list[Spike]:
    """A point above twice the median of the previous 20 finite losses and above it by 6 robust
    standard deviations (1.4826 x MAD, floored at 1% of the median)."""
    pts = [p for p in loss if p.finite and p.value != 0.0]
    found: list[Spike] = []
    for i, p in enumerate(pts):
        if i < SPIKE_MIN_HISTORY:
            continue
        window = [q.value for q in pts[max(0, i - SPIKE_WINDOW):i]]
        med = statistics.median(window)
        sigma = max(1.4826 * statistics.median(abs(v - med) for v in window), 0.01 * abs(med))
        if med > 0 and p.value > 2 * med and p.value > med + 6 * sigma:
            after = [q.value for q in pts[i + 1:i + 6]]
            recovered = bool(after) and statistics.median(after) <= 1.25 * med
            found.append(Spike(p, med, recovered))
    return found


def all_zero(points: list[Point]) -> bool:
    finite = [p for p in points if p.finite]
    return bool(finite) and all(p.value == 0.0 for p in finite)


def warmup_unfinished(lr: list[Point]) -> bool:
    """The learning rate never fell and was still rising over the last quarter of the logs (a
    constant schedule after a finished warmup is flat there)."""
    pts = [p for p in lr if p.finite]
    if len(pts) < 5:
        return False
    rising_at_end = pts[-1].value > pts[(3 * (len(pts) - 1)) // 4].value
    return rising_at_end and all(b.value >= a.value for a, b in zip(pts, pts[1:], strict=False))


def first_bad_step(rec: Record) -> int | None:
    """The first step whose logged loss is NaN/Inf or exactly 0.0 (a window of NaN steps)."""
    bad = [p.step for p in rec.loss if not p.finite or p.value == 0.0]
    return min(bad) if bad else None


def value_at(points: list[Point], step: int | None) -> float | None:
    if step is None:
        return None
    for p in reversed(points):
        if p.step == step:
            return p.value
    return None


def fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}"


def steps_text(points: list[Point], limit: int = 5) -> str:
    shown = ", ".join(str(p.step) for p in points[:limit])
    return shown + (f" and {len(points) - limit} more" if len(points) > limit else "")

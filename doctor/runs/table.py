"""The triage table, as data: columns and rows for any renderer (``vlm-doctor triage`` draws it
with rich; the JSON report carries ``RunAnalysis.to_dict``). Each save gets two verdicts side by
side: usable for inference (weights + config load) and resumable (the Trainer's resume restores
everything this run writes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from doctor.runs.layout import human_size

COLUMNS: tuple[tuple[str, str], ...] = (
    ("save", "left"), ("step", "right"), ("inference", "left"), ("resume", "left"), ("size", "right"),
    ("train loss", "right"), ("eval loss", "right"), ("adapter delta", "right"),
)


@dataclass
class Cell:
    text: str
    style: str | None = None  # "good" | "bad" | "warn" | None


def triage_rows(analysis: Any) -> list[list[Cell]]:
    """One row per save, cells in ``COLUMNS`` order."""
    from doctor.runs.record import fmt

    def num(v: float | None) -> Cell:
        return Cell("-" if v is None else fmt(v))

    resume = analysis.check_weights()
    r = analysis.recommendation
    rows = []
    for st in analysis.states:
        d = analysis.deltas.get(st.save.name)
        delta = "-" if d is None else ("0 (unchanged)" if d.unchanged else f"{d.relative:.2e}")
        if d is not None and d.sampled:
            delta += "*"
        name = Cell("final output" if st.save.is_final else st.save.name)
        keep = st.save.name == r.keep
        usable = Cell(st.status + (" (keep)" if keep else ""), "good" if keep else (None if st.complete else "warn"))
        res = resume[st.save.name]
        here = st.save.name == r.resume_from
        style = None if not res.applicable else ("good" if res.resumable else ("bad" if res.raises or (
            res.dropped and res.dropped.count) else "warn"))
        rows.append([name, Cell("-" if st.save.step is None else str(st.save.step)), usable,
                     Cell(res.verdict + (" (resume)" if here else ""), style),
                     Cell(human_size(st.save.size)), num(analysis.train_loss(st)), num(analysis.eval_loss(st)),
                     Cell(delta)])
    return rows


def recommendation_lines(analysis: Any) -> list[tuple[str, str | None]]:
    """The recommendation as (text, style) lines: keep, resume, each folder safe to delete, notes."""
    r = analysis.recommendation
    root = analysis.layout.root
    lines: list[tuple[str, str | None]] = []
    if r.keep:
        lines.append((f"keep {r.keep_label} for inference: {'; '.join(r.reasons)}", "good"))
    else:
        lines.append((f"nothing to keep for inference: {'; '.join(r.reasons)}", "warn"))
    if r.resume_from and r.resume_from != r.keep:
        lines.append((f"keep {r.resume_from} to resume training from", "good"))
    for name, size in r.delete:
        lines.append((f"  safe to delete {root / name}  ({human_size(size)})", None))
    if r.delete:
        lines.append((f"  {human_size(r.reclaim)} in all", None))
    for note in r.notes:
        lines.append((f"  note: {note}", None))
    return lines

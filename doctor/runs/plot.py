"""``vlm-doctor triage --plot``: the loss and learning-rate curves with the findings marked.
matplotlib is an optional extra, imported only here (the Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from doctor.runs.record import exact_zeros, non_finite, spikes

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".jpg": "jpg", ".jpeg": "jpg"}


def plot_run(analysis: Any, findings: Iterable[Any], out: str | Path) -> Path:
    """Draw the run's curves to ``out`` (written atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from doctor.atomic import atomic_file
    from doctor.errors import UsageError

    out = Path(out)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise UsageError(f"--plot {out}: use a .png, .svg or .pdf file name")
    codes = {f.code for f in findings}
    rec = analysis.record
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=(3, 1.4))
    fig.suptitle(f"{analysis.layout.root.name}: training record", fontsize=11)
    if rec is None or not (rec.loss or rec.eval_loss):
        ax_loss.text(0.5, 0.5, "no trainer_state.json log_history in this run", ha="center", va="center",
                     transform=ax_loss.transAxes)
    else:
        _draw_loss(ax_loss, rec, codes)
        _draw_lr(ax_lr, rec, codes)
    _draw_saves(ax_loss, ax_lr, analysis, "RUN202" in codes)
    ax_lr.set_xlabel("step")
    fig.tight_layout()
    with atomic_file(out, "wb") as fh:
        fig.savefig(fh, format=fmt, dpi=120)
    plt.close(fig)
    return out


def _finite(points: list[Any]) -> tuple[list[int], list[float]]:
    return [p.step for p in points], [p.value if math.isfinite(p.value) else math.nan for p in points]


def _draw_loss(ax: Any, rec: Any, codes: set[str]) -> None:
    steps, values = _finite(rec.loss)
    ax.plot(steps, values, color="tab:blue", lw=1.2, label="train loss")
    if rec.eval_loss:
        es, ev = _finite(rec.eval_loss)
        ax.plot(es, ev, "o-", color="tab:purple", ms=4, lw=1, label="eval loss")
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite) * 1.08 if finite else 1.0
    if "RUN101" in codes:
        bad = non_finite(rec.loss) + non_finite(rec.eval_loss)
        ax.scatter([p.step for p in bad], [top] * len(bad), marker="x", color="red", zorder=5,
                   label="RUN101 NaN/Inf loss")
    if "RUN102" in codes:
        zeros = exact_zeros(rec.loss)
        ax.scatter([p.step for p in zeros], [0.0] * len(zeros), marker="v", color="darkorange", zorder=5,
                   label="RUN102 loss exactly 0.0")
    if "RUN104" in codes:
        sp = spikes(rec.loss)
        ax.scatter([s.point.step for s in sp], [s.point.value for s in sp], marker="^", s=60, color="red",
                   zorder=5, label="RUN104 spike")
    if "RUN103" in codes:
        ax.text(0.99, 0.97, "RUN103: the loss did not fall", ha="right", va="top", color="darkred",
                transform=ax.transAxes)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def _draw_lr(ax: Any, rec: Any, codes: set[str]) -> None:
    steps, values = _finite(rec.lr)
    ax.plot(steps, values, color="tab:green", lw=1.2, label="learning rate")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    notes = [text for code, text in (("RUN106", "RUN106: learning rate 0 throughout"),
                                     ("RUN107", "RUN107: still warming up at the end"),
                                     ("RUN109", "RUN109: grad norm 0 throughout")) if code in codes]
    if rec.grad_norm:
        twin = ax.twinx()
        gs, gv = _finite(rec.grad_norm)
        twin.plot(gs, gv, color="tab:gray", lw=0.8, ls="--", label="grad norm")
        twin.set_ylabel("grad norm", color="tab:gray")
        bad = non_finite(rec.grad_norm)
        if bad and "RUN105" in codes:
            finite = [v for v in gv if math.isfinite(v)]
            y = max(finite) if finite else 1.0
            twin.scatter([p.step for p in bad], [y] * len(bad), marker="x", color="red", label="RUN105 NaN grad norm")
    if notes:
        ax.text(0.01, 0.95, "\n".join(notes), ha="left", va="top", color="darkred", fontsize=8, transform=ax.transAxes)


def _draw_saves(ax_loss: Any, ax_lr: Any, analysis: Any, mark_unchanged: bool) -> None:
    keep = analysis.recommendation.keep
    deltas = analysis.deltas if mark_unchanged else {}
    for st in analysis.states:
        if st.save.step is None:
            continue
        kept = st.save.name == keep
        for ax in (ax_loss, ax_lr):
            ax.axvline(st.save.step, color="green" if kept else "gray", lw=1.6 if kept else 0.6,
                       ls="-" if kept else ":", alpha=0.8)
        d = deltas.get(st.save.name)
        label = st.save.label + (" (keep)" if kept else "") + ("" if st.complete else f" [{st.status}]") \
            + (" RUN202 unchanged" if d is not None and d.unchanged else "")
        ax_loss.annotate(label, (st.save.step, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                         va="top", ha="right", color="green" if kept else "dimgray")

"""Quiet library calls: transformers' progress bars and load report, bitsandbytes' per-call notices
and stray prints stay out of the sanity report (the findings carry what matters)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(keep_warnings: bool = False) -> Iterator[None]:
    """Silence transformers' progress bars, load report and stray prints while loading."""
    from transformers.utils import logging as tlog

    level = tlog.get_verbosity()
    bars = tlog.is_progress_bar_enabled()
    bnb = logging.getLogger("bitsandbytes")
    bnb_level = bnb.level
    bnb.setLevel(logging.ERROR)
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if keep_warnings:
                yield
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    yield
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()
        bnb.setLevel(bnb_level)


def short(e: object, n: int = 300) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[: n - 3] + "..."

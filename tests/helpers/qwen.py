"""Helpers of the Qwen2-VL / Qwen2.5-VL tests (tests/qwen/): run a family on a path, read findings,
show a planted failure is real with the installed transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctor.findings import Status
from doctor.report import Report
from doctor.runner import check

from tests.helpers.checkpoint import assert_fails, by_code


def run(path: str | Path, select: str, **options: Any) -> Report:
    """Run one family (``"CKP"``, ``"ADP"``, ``"DAT"``) on ``path``; an internal error fails the test."""
    report = check(str(path), select=[select], **options)
    assert not report.internal_errors, [f.message for f in report.internal_errors]
    return report


# The CKP helpers' readers, under the names the Qwen tests use.
fails = assert_fails


def passes(report: Report, code: str) -> None:
    found = by_code(report).get(code, [])
    assert not found, [f.message for f in found]
    statuses = {r.status for r in report.results if r.code == code and r.path != "<environment>"}
    assert statuses == {Status.PASS}, f"{code} ended {statuses}"


def codes(report: Report) -> set[str]:
    return {f.code for f in report.findings if f.path != "<environment>" and not f.code.startswith("ENV")}


def forward_error(info: Any, image_shape: tuple[int, int] = (56, 84)) -> str | None:
    """Load the folder with transformers and run one image forward; the error text, or None."""
    import torch
    import transformers

    from doctor.testing.qwen import qwen_inputs
    from doctor.testing.torch_context import single_thread

    try:
        with single_thread():
            model = transformers.AutoModelForImageTextToText.from_pretrained(info.path)
            inputs = qwen_inputs(info, image_shape)
            with torch.no_grad():
                model(**inputs)
    except Exception as e:  # noqa: BLE001 - any failure is the evidence
        return f"{type(e).__name__}: {e}"
    return None

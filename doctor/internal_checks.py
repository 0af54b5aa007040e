"""The engine's own finding codes, documented like any check (``vlm-doctor rule DOC001``)."""

from __future__ import annotations

from doctor.findings import Severity
from doctor.registry import Check, register


@register
class InternalError(Check):
    """A check crashed while inspecting this artifact.

    ## What it does
    Reports a check that raised an unexpected exception. The run goes on with the other checks
    and artifacts, and the command exits with code 2 (even with `--exit-zero`).

    ## Why is this bad?
    The artifact was not fully checked, so a clean report for it would be a lie.

    ## Example
    `DOC001 check ADP010 (target-modules-not-found) crashed: ValueError: ...`

    ## How to fix
    Report the message as a bug with a description of the artifact's layout. Meanwhile, skip the
    crashing check with `--ignore CODE`.
    """

    code = "DOC001"
    name = "internal-error"
    severity = Severity.ERROR
    artifacts = frozenset()  # emitted by the runner, never run as a check

    def run(self):  # pragma: no cover - never scheduled
        return None

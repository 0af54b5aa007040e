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


@register
class NothingRecognized(Check):
    """Nothing vlm-doctor checks was found at a path given on the command line.

    ## What it does
    Reports a file or folder given on the command line under which discovery found no dataset,
    adapter, model, run, XTuner release, weights or pickle file, and says what it did see: for a
    folder the number of files and folders, what kind of files (images, text, configs without a
    model) and their first names; for a file what its first bytes say it is (text, an image, an
    HTML page, a Git-LFS pointer, an empty file). Files are classified by name first and by
    content (magic bytes) second, so a text file is never taken for weights.

    ## Why is this bad?
    A gate over an empty or mistyped output folder would otherwise pass with "0 artifacts": the
    training wrote nowhere, the download failed, or the path points one level off. Like pytest,
    which exits non-zero when it collects nothing, vlm-doctor fails here rather than pass silently.

    ## Example
    `vlm-doctor check outputs/` on an empty folder: `DOC002 the folder is empty`;
    `vlm-doctor check notes.txt`: `notes.txt is a text file (120 bytes): not a dataset, model, ...`.

    ## How to fix
    Point vlm-doctor at the artifact itself (the dataset file, the adapter or model folder, the
    training output folder), or fix the step that should have written it. If the path is meant to
    be empty, leave it out of the command.
    """

    code = "DOC002"
    name = "nothing-recognized"
    severity = Severity.ERROR
    artifacts = frozenset({"unrecognized"})

    def run(self, artifact):
        yield self.finding(artifact.meta.get("message") or "nothing vlm-doctor checks was found here")

"""The runner: which checks apply to which artifact, in dependency order, with shared inputs
(fixtures) computed once per artifact and handed to checks by parameter name."""

from __future__ import annotations

import contextlib
import graphlib
import importlib.util
import inspect
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from doctor.artifacts import Artifact, discover, environment_artifact
from doctor.errors import Skip, UsageError
from doctor.findings import CheckResult, Finding, Location, Severity, Status
from doctor.options import Options
from doctor.registry import FIXTURES, REGISTRY, Check, families_for, load_family
from doctor.report import Report
from doctor.selection import Selection

ProgressFactory = Callable[[str, "int | None"], contextlib.AbstractContextManager[Callable[[int], None]]]


@contextlib.contextmanager
def _no_progress(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    yield lambda n=1: None


class Context:
    """Per-artifact fixture cache. Built-in fixtures: ``artifact``, ``options``, ``path``,
    ``artifacts`` (everything discovered in this run), ``progress`` (a factory of progress bars:
    ``with progress("Reading records", total) as advance: advance(1)``), ``report`` (the report
    so far, read-only: the sanity pass reads earlier findings to skip hopeless loads)."""

    def __init__(self, artifact: Artifact, options: Options, artifacts: list[Artifact], progress: ProgressFactory,
                 report: Report | None = None) -> None:
        self.values: dict[str, Any] = {
            "artifact": artifact,
            "options": options,
            "path": artifact.path,
            "artifacts": artifacts,
            "progress": progress,
            "report": report,
        }
        self.failures: dict[str, Skip] = {}

    def get(self, name: str, stack: tuple[str, ...] = ()) -> Any:
        if name in self.values:
            return self.values[name]
        if name in self.failures:
            raise self.failures[name]
        func = FIXTURES.get(name)
        if func is None:
            raise LookupError(f"no fixture named {name!r}")
        if name in stack:
            raise LookupError(f"fixture cycle: {' -> '.join(stack + (name,))}")
        kwargs = {p: self.get(p, stack + (name,)) for p in inspect.signature(func).parameters}
        try:
            value = func(**kwargs)
        except Skip as s:
            self.failures[name] = s
            raise
        self.values[name] = value
        return value


def check(
    paths: Iterable[str] | str,
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    base: str | None = None,
    **options: Any,
) -> Report:
    """Python API for pre-training checks: ``doctor.check("data.json").raise_for_errors()``."""
    if isinstance(paths, str):
        paths = [paths]
    known = {f for f in Options.__dataclass_fields__}
    extra = {k: v for k, v in options.items() if k not in known}
    opts = Options(base=base, **{k: v for k, v in options.items() if k in known})
    opts.extra.update(extra)
    selection = Selection.from_lists(select=list(select) if select else None, ignore=list(ignore or []))
    return run(list(paths), opts, selection)


def run(
    paths: list[str],
    options: Options,
    selection: Selection,
    progress: ProgressFactory = _no_progress,
    artifacts: list[Artifact] | None = None,
) -> Report:
    """Discover the artifacts under ``paths`` and run every selected check that applies."""
    if artifacts is None:
        artifacts = discover(paths)
    all_artifacts = [environment_artifact(), *artifacts]
    if options.sanity:
        all_artifacts += [Artifact(a.path, frozenset({"sanity"}), a.meta) for a in artifacts
                          if a.kinds & {"model", "adapter"}]
    report = Report(artifacts=artifacts)
    for artifact in all_artifacts:
        ctx = Context(artifact, options, artifacts, progress, report)
        for family in families_for(artifact.kinds):
            load_family(family)
        applicable = [c for c in REGISTRY.values() if c.artifacts & artifact.kinds]
        checks, hidden = plan(applicable, selection)
        _run_artifact(artifact, checks, hidden, ctx, report)
        report.collect(ctx.values)  # what the report shows beside findings (a sanity pass's stages)
    if options.fix or options.diff:
        from doctor.fixing import apply_fixes

        apply_fixes(report, options)
    return report


def plan(applicable: Iterable[type[Check]], selection: Selection) -> tuple[list[type[Check]], set[str]]:
    """The checks to run on one artifact, in dependency order, and the codes among them that run
    hidden.

    Selection only hides findings; it never changes what a check sees. A check that is not
    selected but that a selected check requires (directly or through another requirement) still
    runs, silently: its findings are dropped, but whether it passed decides, exactly as without the
    selection, whether its dependents run. Without this, ``--ignore CKP406`` would let CKP407 run
    on a folder with no processor files and report a false error."""
    by_code = {c.code: c for c in applicable}
    wanted = {c.code for c in applicable if selection.matches(c.code)}
    needed = set(wanted)
    stack = list(wanted)
    while stack:
        for req in by_code[stack.pop()].requires:
            if req in by_code and req not in needed:
                needed.add(req)
                stack.append(req)
    return _ordered(by_code[c] for c in needed), needed - wanted


def _ordered(checks: Iterable[type[Check]]) -> list[type[Check]]:
    checks = list(checks)
    codes = {c.code for c in checks}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for c in sorted(checks, key=lambda c: c.code):
        sorter.add(c.code, *[r for r in c.requires if r in codes])
    by_code = {c.code: c for c in checks}
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as e:  # a programming error in a family: fail loudly
        raise UsageError(f"check requirements form a cycle: {e.args[1]}") from None
    return [by_code[c] for c in order]


def _run_artifact(artifact: Artifact, checks: list[type[Check]], hidden: set[str], ctx: Context,
                  report: Report) -> None:
    status: dict[str, Status] = {}
    for cls in checks:
        started = time.perf_counter()
        result_status, reason, findings = _run_one(cls, artifact, ctx, status, hidden)
        status[cls.code] = result_status
        if cls.code in hidden:
            # Deselected prerequisite: its outcome gates its dependents, its findings stay hidden.
            # A crash is still the engine's own finding (DOC001), never hidden.
            report.findings.extend(f for f in findings if f.code == "DOC001")
            continue
        report.results.append(
            CheckResult(cls.code, cls.name, artifact.path, result_status, reason, time.perf_counter() - started)
        )
        report.findings.extend(findings)


def _run_one(cls: type[Check], artifact: Artifact, ctx: Context, status: dict[str, Status],
             hidden: Collection[str] = ()) -> tuple[Status, str | None, list[Finding]]:
    for req in cls.requires:
        if req in status and status[req] is not Status.PASS:
            note = " (its findings are hidden by the rule selection)" if req in hidden else ""
            return Status.SKIP, f"requires {req} ({REGISTRY[req].name}), which did not pass{note}", []
    for pkg in cls.packages:
        if importlib.util.find_spec(pkg) is None:
            return Status.SKIP, f"needs the Python package {pkg!r}: pip install 'vlm-doctor[ml]'", []
    check = cls(artifact.path)
    try:
        kwargs = {name: ctx.get(name) for name in cls.fixture_names()}
        produced = check.run(**kwargs)
        findings = list(produced) if produced is not None else []
    except Skip as s:
        return Status.SKIP, s.reason, []
    except Exception as e:  # noqa: BLE001 - a crashing check must not stop the run
        return Status.FAIL, "internal error", [internal_error(cls, artifact, e)]
    return (Status.FAIL if findings else Status.PASS), None, findings


def internal_error(cls: type[Check], artifact: Artifact, exc: BaseException) -> Finding:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
    return Finding(
        code="DOC001",
        name="internal-error",
        severity=Severity.ERROR,
        message=f"check {cls.code} ({cls.name}) crashed: {type(exc).__name__}: {exc} (at {where})",
        path=artifact.path,
        location=None,
        why="vlm-doctor could not finish this check, so this artifact is not fully checked.",
        hint=f"Report this as a bug with the artifact's layout; meanwhile run with --ignore {cls.code}.",
        fix=None,
    )


__all__ = ["Options", "Context", "check", "run", "Location"]

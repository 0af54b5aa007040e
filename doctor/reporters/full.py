"""``--output-format full``: the rich report for people, grouped by artifact (the default on a
terminal)."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import TYPE_CHECKING

from doctor.findings import Status

if TYPE_CHECKING:
    from doctor.report import Report
    from doctor.reporters import RenderContext

STYLES = {"error": "bold red", "warning": "bold yellow", "info": "bold cyan"}


def render(report: Report, ctx: RenderContext) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.text import Text

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=ctx.color, color_system="auto" if ctx.color else None,
                      width=ctx.width or 100, highlight=False, soft_wrap=False)
    groups: dict[str, list] = defaultdict(list)
    for f in report.sorted_findings():
        groups[_owner(f.path, report)].append(f)

    kinds = {a.path: a.kind for a in report.artifacts}
    explained: set[str] = set()
    for owner, findings in groups.items():
        kind = kinds.get(owner, "environment" if owner.startswith("<") else "")
        console.print(Text.assemble((owner, "bold"), (f"  ({kind})" if kind else "", "dim")))
        for f in findings:
            where = f.location.render() if f.location else ""
            sub = f.path[len(owner):].lstrip("/") if f.path != owner else ""
            loc = ":".join(x for x in (sub, where) if x)
            line = Text("  ")
            line.append(f"{f.severity.value:<7}", style=STYLES[f.severity.value])
            line.append(f" {f.code} ", style="bold")
            line.append(f"{f.name}", style="magenta")
            if loc:
                line.append(f"  {loc}", style="dim")
            console.print(line)
            console.print("    " + escape(f.message), soft_wrap=True)
            if f.why and f.code not in explained:  # once per code: repeats add nothing
                explained.add(f.code)
                console.print(Text.assemble(("    why: ", "dim"), (f.why, "dim")), soft_wrap=True)
            if f.hint:
                console.print(Text.assemble(("    fix: ", "green"), f.hint), soft_wrap=True)
            if f.fix and f.fix.fixer:
                console.print(Text.assemble(("    auto-fix: ", "green"), f"{f.fix.description} ",
                                            (f"({f.fix.applicability.value}; --fix"
                                             + (" --unsafe-fixes" if f.fix.applicability.value == "unsafe" else "") + ")", "dim")),
                              soft_wrap=True)
        console.print()

    for fix in report.fixes:
        if fix.error:
            console.print(Text.assemble(("fix failed ", "bold red"), f"{fix.fixer} on {fix.path}: {fix.error}"))
        else:
            console.print(Text.assemble(("fixed ", "bold green"), f"{fix.path} -> {', '.join(fix.written) or '(nothing written)'}: {fix.summary}"))
        if fix.diff:
            console.print(fix.diff, markup=False, highlight=False)

    for entry in report.sections.get("sanity", {}).get("models", []):
        console.print(sanity_table(entry))
        console.print()

    if ctx.verbose:
        skipped = [r for r in report.results if r.status is Status.SKIP]
        for r in skipped:
            console.print(Text.assemble(("skipped ", "dim"), f"{r.code} {r.name} on {r.path}: {r.reason}"))

    counts = report.counts()
    checks = {s: sum(r.status is s for r in report.results) for s in Status}
    parts = [f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}" for s in ("error", "warning", "info")]
    summary = Text()
    style = "bold red" if counts["error"] else "bold yellow" if counts["warning"] else "bold green"
    summary.append("Found " + ", ".join(parts), style=style)
    summary.append(f" in {len(report.artifacts)} artifact{'s' if len(report.artifacts) != 1 else ''}"
                   f" ({checks[Status.PASS]} checks passed, {checks[Status.FAIL]} failed, {checks[Status.SKIP]} skipped"
                   + ("; --verbose lists skips" if checks[Status.SKIP] and not ctx.verbose else "") + ").")
    console.print(summary)
    return buf.getvalue()


def _owner(path: str, report: Report) -> str:
    paths = [a.path for a in report.artifacts]
    if path in paths or path.startswith("<"):
        return path
    candidates = [p for p in paths if path.startswith(p.rstrip("/") + "/")]
    return max(candidates, key=len) if candidates else path


def sanity_table(entry: dict | str, stages: list[dict] | None = None):
    """The stage table of one model's sanity pass: an entry of the report's ``sanity`` section
    (or a model path and its stage dicts)."""
    if isinstance(entry, str):
        entry = {"model": entry, "stages": stages or [], "ok": all(st["status"] != "fail" for st in stages or [])}
    from rich.markup import escape
    from rich.table import Table

    what = entry["model"] + (f" + adapter {entry['adapter']}" if entry.get("adapter") else "")
    setup = ", ".join(str(x) for x in (entry.get("family"), entry.get("device"), entry.get("dtype"),
                                        entry.get("quantization")) if x)
    table = Table(title=f"Sanity pass {escape(what)}" + (f"  ({escape(setup)})" if setup else ""),
                  title_justify="left", show_edge=False, header_style="bold")
    for col, kw in (("stage", {}), ("status", {}), ("time", {"justify": "right"}),
                    ("peak mem", {"justify": "right"}), ("detail", {"overflow": "fold"})):
        table.add_column(col, **kw)
    colors = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
    counts: dict[str, int] = {}
    for st in entry.get("stages", []):
        counts[st["status"]] = counts.get(st["status"], 0) + 1
        mem = st.get("peak_memory_bytes")
        kind = "gpu" if st.get("memory_kind") == "cuda" else "rss"
        mem_text = f"{mem / 2**30:.2f} GiB {kind}" if mem else ""
        time_text = "" if st["status"] == "skip" else f"{st['seconds']:.2f}s"
        table.add_row(f"{st['stage']} {st['name']}", f"[{colors.get(st['status'], '')}]{st['status']}[/]",
                      time_text, mem_text, escape(st.get("detail") or ""))
    verdict = "[bold green]OK[/]" if entry.get("ok", True) else "[bold red]FAILED[/]"
    table.caption = f"{verdict}: " + ", ".join(f"{counts[s]} {s}" for s in ("pass", "warn", "fail", "skip") if counts.get(s))
    table.caption_justify = "left"
    return table

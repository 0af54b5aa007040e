"""Render a ``SanityResult`` as a compact rich table for people (machines read the report's
``sanity`` section, written by ``doctor.report``)."""

from __future__ import annotations

import io

from doctor.sanity.memory import gib
from doctor.sanity.results import FAIL, PASS, SKIP, WARN, SanityResult

_STYLE = {PASS: "green", WARN: "yellow", FAIL: "bold red", SKIP: "dim"}


def to_text(result: SanityResult, color: bool = False, width: int | None = None) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=color, color_system="auto" if color else None,
                      width=width or 120, highlight=False, soft_wrap=False)
    what = result.model + (f" + adapter {result.adapter}" if result.adapter else "")
    quant = f", {result.quantization}" if result.quantization else ""
    gpu = f" ({result.environment['gpu']})" if "gpu" in result.environment else ""
    console.print(f"[bold]Sanity pass[/bold] {escape(what)}  [dim]{result.family} on {result.device}{gpu}, "
                  f"{result.dtype}{quant}[/dim]")
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for col, kw in (("stage", {}), ("status", {}), ("time", {"justify": "right"}),
                    ("peak mem", {"justify": "right"}), ("detail", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for st in sorted(result.stages, key=lambda s: s.number):
        mem = "" if st.peak_memory_bytes is None else f"{gib(st.peak_memory_bytes)} {'gpu' if st.memory_kind == 'cuda' else 'rss'}"
        time = "" if st.status == SKIP else f"{st.seconds:.2f}s"
        table.add_row(f"{st.number} {st.info.title}", f"[{_STYLE[st.status]}]{st.status}[/]", time, mem,
                      escape(st.detail))
    console.print(table)
    for f in result.findings:
        style = "red" if f.severity.value == "error" else "yellow"
        loc = f" {f.location.render()}" if f.location else ""
        console.print(f"[{style}]{f.code}[/] [bold]{f.name}[/bold] {escape(f.path)}{escape(loc)}")
        console.print(f"  {escape(f.message)}", soft_wrap=True)
        if f.hint:
            console.print(f"  [cyan]fix:[/cyan] {escape(f.hint)}", soft_wrap=True)
    counts = {s: sum(st.status == s for st in result.stages) for s in (PASS, WARN, FAIL, SKIP)}
    verdict = "[bold red]FAILED[/]" if not result.ok else "[bold green]OK[/]"
    console.print(f"{verdict}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return buf.getvalue()

"""``--output-format junit``: a testcase per check and artifact (per sanity stage, per save of a
triaged run), a failure per finding. A finding is a failure of the testcase of its own check on
the artifact it lies in."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import TYPE_CHECKING

from doctor.findings import CheckResult, Status

if TYPE_CHECKING:
    from doctor.report import Report
    from doctor.reporters import RenderContext


def render(report: Report, ctx: RenderContext) -> str:
    paths: dict[str, list[str]] = defaultdict(list)  # code -> the paths its results are about
    for r in report.results:
        paths[r.code].append(r.path)
    by_case = defaultdict(list)
    for f in report.findings:
        code = f.code
        if code == "DOC001":  # an internal error belongs to the check that crashed
            m = re.match(r"check (\w+) ", f.message)
            code = m.group(1) if m else code
        by_case[(code, _owner(f.path, paths.get(code, [])))].append(f)
    results = list(report.results)
    seen = {(r.code, r.path) for r in results}
    for code, path in by_case:  # a finding no result accounts for still gets a testcase
        if (code, path) not in seen:
            seen.add((code, path))
            results.append(CheckResult(code, by_case[(code, path)][0].name, path, Status.FAIL))
    suite = ET.Element("testsuite", name="vlm-doctor")
    tests = failures = skipped = errors = 0
    total_time = 0.0
    for r in results:
        tests += 1
        total_time += r.seconds
        case = ET.SubElement(suite, "testcase", classname=r.path, name=f"{r.code} {r.name}", time=f"{r.seconds:.3f}")
        if r.status is Status.SKIP:
            skipped += 1
            ET.SubElement(case, "skipped", message=r.reason or "skipped")
            continue
        for f in by_case.get((r.code, r.path), []):
            where = f.location.render() if f.location else ""
            text = f"{f.path}{':' + where if where else ''}: {f.message}\nwhy: {f.why or '-'}\nfix: {f.hint or '-'}"
            if f.code == "DOC001":
                errors += 1
                ET.SubElement(case, "error", message=f.message, type="internal-error").text = text
            else:
                failures += 1
                ET.SubElement(case, "failure", message=f.message, type=f.severity.value).text = text
    for key, value in (("tests", tests), ("failures", failures), ("errors", errors), ("skipped", skipped)):
        suite.set(key, str(value))
    suite.set("time", f"{total_time:.3f}")
    root = ET.Element("testsuites", name="vlm-doctor", tests=str(tests), failures=str(failures),
                      errors=str(errors), skipped=str(skipped), time=f"{total_time:.3f}")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _owner(path: str, paths: list[str]) -> str:
    """The path of the result a finding belongs to: its own, else the closest folder above it
    among the results of the same check."""
    if path in paths:
        return path
    candidates = [p for p in paths if path.startswith(p.rstrip("/") + "/")]
    return max(candidates, key=len) if candidates else path

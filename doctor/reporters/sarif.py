"""``--output-format sarif``: SARIF 2.1.0 for GitHub code scanning and other CI viewers.

Every rule that ran (or produced a result) is described in ``tool.driver.rules``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from doctor.registry import REGISTRY

if TYPE_CHECKING:
    from doctor.report import Report
    from doctor.reporters import RenderContext

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {"error": "error", "warning": "warning", "info": "note"}
INFO_URI = "https://github.com/vlm-doctor/vlm-doctor"


def render(report: Report, ctx: RenderContext) -> str:
    codes = sorted({r.code for r in report.results} | {f.code for f in report.findings})
    rules = [_rule(code) for code in codes]
    index = {code: i for i, code in enumerate(codes)}
    results = [_result(f, index, ctx) for f in report.sorted_findings()]
    doc = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "vlm-doctor", "version": ctx.version, "informationUri": INFO_URI, "rules": rules}},
                "results": results,
                "columnKind": "unicodeCodePoints",
            }
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _rule(code: str) -> dict[str, Any]:
    cls = REGISTRY.get(code)
    if cls is None:
        return {"id": code, "shortDescription": {"text": code}}
    explanation = cls.explanation()
    return {
        "id": code,
        "name": cls.name,
        "shortDescription": {"text": cls.summary() or cls.name},
        "fullDescription": {"text": explanation or cls.name},
        "help": {"text": explanation or cls.name, "markdown": explanation or cls.name},
        "defaultConfiguration": {"level": LEVELS[cls.severity.value]},
        "properties": {"family": code[:3]},
    }


def _result(f, index: dict[str, int], ctx: RenderContext) -> dict[str, Any]:
    text = f.message + (f" Why: {f.why}" if f.why else "") + (f" Fix: {f.hint}" if f.hint else "")
    result: dict[str, Any] = {
        "ruleId": f.code,
        "ruleIndex": index[f.code],
        "level": LEVELS[f.severity.value],
        "message": {"text": text},
    }
    if not f.path.startswith("<"):
        physical: dict[str, Any] = {"artifactLocation": {"uri": _uri(f.path, ctx.cwd)}}
        if f.location and f.location.line is not None:
            physical["region"] = {"startLine": max(1, f.location.line), "startColumn": max(1, f.location.column or 1)}
        location: dict[str, Any] = {"physicalLocation": physical}
        logical = _logical(f)
        if logical:
            location["logicalLocations"] = [logical]
        result["locations"] = [location]
    return result


def _logical(f) -> dict[str, Any] | None:
    loc = f.location
    if loc is None:
        return None
    if loc.tensor is not None:
        return {"fullyQualifiedName": loc.tensor, "kind": "member"}
    if loc.pointer is not None:
        return {"fullyQualifiedName": loc.pointer, "kind": "element"}
    if loc.key is not None:
        return {"fullyQualifiedName": loc.key, "kind": "member"}
    if loc.record is not None:
        return {"fullyQualifiedName": f"record {loc.record}", "kind": "element"}
    return None


def _uri(path: str, cwd: str | None) -> str:
    if "://" in path:  # a dataset given as a URL (s3://bucket/train.jsonl) is its own URI
        return path
    p = Path(path)
    base = Path(cwd or os.getcwd())
    try:
        rel = p.resolve().relative_to(base.resolve())
        return quote(rel.as_posix())
    except ValueError:
        return p.resolve().as_uri()

"""``vlm-doctor rule CODE`` / ``vlm-doctor rule --all``: explain finding codes."""

from __future__ import annotations

import argparse
import json
import sys

from doctor.errors import UsageError

HELP = "explain a finding code, or list every check"
EPILOG = """\
examples:
  vlm-doctor rule LLV003
  vlm-doctor rule --all
  vlm-doctor rule --all --output-format json > rules.json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("code", nargs="?", help="a finding code such as ADP010")
    p.add_argument("--all", action="store_true", help="list every check")
    p.add_argument("--output-format", choices=("text", "json"), default="text", help="text (default) or json")


def rule_dict(cls) -> dict:
    from doctor.registry import FAMILIES

    family = FAMILIES.get(cls.code[:3])
    return {
        "code": cls.code,
        "name": cls.name,
        "family": cls.code[:3],
        "family_title": family.title if family else None,
        "severity": cls.severity.value,
        "artifacts": sorted(cls.artifacts),
        "requires": list(cls.requires),
        "packages": list(cls.packages),
        "summary": cls.summary(),
        "explanation": cls.explanation(),
    }


def run(args: argparse.Namespace) -> int:
    from doctor.registry import REGISTRY, iter_checks, load_all

    if not args.all and not args.code:
        raise UsageError("give a code (vlm-doctor rule ADP010) or --all")
    load_all()
    if args.all:
        rules = [rule_dict(c) for c in iter_checks()]
    else:
        code = args.code.upper()
        if code not in REGISTRY:
            import difflib

            close = difflib.get_close_matches(code, REGISTRY, n=3)
            raise UsageError(f"unknown code {args.code!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        rules = [rule_dict(REGISTRY[code])]
    if args.output_format == "json":
        json.dump(rules if args.all else rules[0], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for r in rules:
        if args.all:
            print(f"{r['code']}  {r['name']:<40} {r['severity']:<8} {r['summary']}")
        else:
            print(f"# {r['name']} ({r['code']})\n")
            print(f"Family: {r['family']} ({r['family_title']}). Default severity: {r['severity']}. "
                  f"Applies to: {', '.join(r['artifacts']) or 'the engine'}.\n")
            body = r["explanation"].split("\n", 1)
            print(body[0] + "\n" + (body[1] if len(body) > 1 else ""))
    return 0

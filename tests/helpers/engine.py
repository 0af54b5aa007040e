"""Test-only checks registered into the engine for the duration of one test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from doctor.findings import Applicability, Fix, Location, Severity
from doctor.registry import REGISTRY, Check


class PlantedFinding(Check):
    """Reports every record whose ``id`` is "bad".

    ## What it does
    Test check.

    ## Why is this bad?
    It is planted.

    ## Example
    `{"id": "bad"}`

    ## How to fix
    Remove the record.
    """

    code = "DAT990"
    name = "planted-finding"
    severity = Severity.ERROR
    artifacts = frozenset({"dataset"})

    def run(self, path):
        import json

        for i, rec in enumerate(json.load(open(path))):
            if rec.get("id") == "bad":
                yield self.finding("record is bad", location=Location(pointer=f"/{i}/id", line=i + 1, column=2),
                                   fix=Fix("drop it", Applicability.UNSAFE, fixer=None))


class PlantedWarning(PlantedFinding):
    """Warns on every record whose ``id`` is "meh".

    ## What it does
    Test check.

    ## Why is this bad?
    It is planted.

    ## Example
    `{"id": "meh"}`

    ## How to fix
    Nothing.
    """

    code = "DAT991"
    name = "planted-warning"
    severity = Severity.WARNING

    def run(self, path):
        import json

        for i, rec in enumerate(json.load(open(path))):
            if rec.get("id") == "meh":
                yield self.finding("record is meh", location=Location(pointer=f"/{i}/id"))


class Crashing(PlantedFinding):
    """Always crashes.

    ## What it does
    Test check.

    ## Why is this bad?
    It is planted.

    ## Example
    -

    ## How to fix
    -
    """

    code = "DAT992"
    name = "always-crashes"

    def run(self, path):
        raise RuntimeError("planted crash")


class NeedsCrashing(PlantedFinding):
    """Requires the crashing check.

    ## What it does
    Test check.

    ## Why is this bad?
    It is planted.

    ## Example
    -

    ## How to fix
    -
    """

    code = "DAT993"
    name = "needs-crashing"
    requires = ("DAT992",)

    def run(self, path):
        return None


@contextlib.contextmanager
def planted(*checks: type[Check]) -> Iterator[None]:
    from doctor.registry import load_family

    load_family("DAT")  # the real family first, so ours are added beside it
    for c in checks:
        REGISTRY[c.code] = c
    try:
        yield
    finally:
        for c in checks:
            REGISTRY.pop(c.code, None)

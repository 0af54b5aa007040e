"""Checks, fixtures and families: how a check declares itself and how the engine finds it.

A check is one small class::

    @register
    class ProjectorMissing(Check):
        '''Projector weights are missing from the checkpoint.

        ## What it does
        ...
        ## Why is this bad?
        ...
        ## Example
        ...
        ## How to fix
        ...
        '''

        code = "CKP010"
        name = "projector-missing"
        severity = Severity.ERROR
        artifacts = {"model"}
        requires = ("CKP001",)

        def run(self, config, tensor_index):   # fixtures, injected by parameter name
            if not any(...):
                yield self.finding("...", location=Location(tensor="..."), hint="...")

Families are imported lazily, only when one of their checks can apply (sqlfluff does this to
keep start-up fast): a dataset check never imports torch.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from doctor.findings import Finding, Fix, Location, Severity
from doctor.kinds import KINDS

DOC_SECTIONS = ("What it does", "Why is this bad?", "Example", "How to fix")


@dataclass(frozen=True)
class Family:
    prefix: str
    module: str
    title: str
    artifacts: frozenset[str]


# Every family the engine knows. A family's module registers its checks on import.
FAMILIES: dict[str, Family] = {
    f.prefix: f
    for f in (
        Family("DOC", "doctor.internal_checks", "vlm-doctor itself", frozenset({"*"})),
        Family("ENV", "doctor.checks.environment", "Library versions", frozenset({"environment"})),
        Family("DAT", "doctor.checks.dataset", "Training data", frozenset({"dataset"})),
        Family("ADP", "doctor.checks.adapter", "PEFT adapters", frozenset({"adapter"})),
        Family("LLV", "doctor.checks.llava", "Original LLaVA outputs", frozenset({"llava-lora", "llava-original"})),
        Family("XTN", "doctor.checks.xtuner", "XTuner releases", frozenset({"xtuner"})),
        Family("CKP", "doctor.checks.checkpoint", "Model checkpoints", frozenset({"model", "weights"})),
        Family("SEC", "doctor.checks.security", "Untrusted files", frozenset({"model", "adapter", "llava-lora", "llava-original", "xtuner", "weights", "pickle", "run"})),
        Family("RUN", "doctor.checks.run", "Training runs", frozenset({"run"})),
        Family("SAN", "doctor.checks.sanity", "Inference sanity pass", frozenset({"sanity"})),
    )
}

REGISTRY: dict[str, type[Check]] = {}
FIXTURES: dict[str, Callable[..., Any]] = {}
_loaded: set[str] = set()


def register(cls: type[Check]) -> type[Check]:
    """Class decorator: add a check to the registry. Codes are never reused."""
    code = cls.code
    if not re.fullmatch(r"[A-Z]{3}\d{3}", code):
        raise ValueError(f"{cls.__name__}: code {code!r} is not of the form ABC123")
    if code in REGISTRY and REGISTRY[code] is not cls:
        raise ValueError(f"check code {code} registered twice ({REGISTRY[code].__name__}, {cls.__name__})")
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", cls.name):
        raise ValueError(f"{cls.__name__}: name {cls.name!r} is not kebab-case")
    unknown = set(cls.artifacts) - KINDS
    if unknown:
        raise ValueError(f"{cls.__name__}: artifact kinds {sorted(unknown)} are not ArtifactKind values")
    REGISTRY[code] = cls
    return cls


def fixture(func: Callable[..., Any]) -> Callable[..., Any]:
    """Register a shared input, computed once per artifact and handed to checks by name.

    A fixture's own parameters are fixtures too. Raise ``doctor.errors.Skip`` when the input is
    unavailable: every check that needs it is then skipped with that reason."""
    name = func.__name__
    known = FIXTURES.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (func.__module__, func.__qualname__):
        raise ValueError(f"fixture {name!r} registered twice ({known.__module__}, {func.__module__}): "
                         "fixtures are handed to checks by name, so each name must be unique")
    FIXTURES[name] = func
    return func


def load_family(prefix: str) -> None:
    if prefix in _loaded:
        return
    family = FAMILIES[prefix]
    # A family whose module is missing is a broken install, not a family with zero checks: the
    # ModuleNotFoundError propagates (start-up fails loudly; tests/engine/test_house.py holds it).
    importlib.import_module(family.module)
    _loaded.add(prefix)


def load_all() -> None:
    for prefix in FAMILIES:
        load_family(prefix)


def families_for(kinds: Iterable[str]) -> list[str]:
    kinds = set(kinds)
    return [p for p, f in FAMILIES.items() if "*" in f.artifacts or f.artifacts & kinds]


class Check:
    """Base of every check. Subclasses set the class attributes and implement ``run``."""

    code: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity] = Severity.ERROR
    #: artifact kinds this check applies to (see ``doctor.artifacts``)
    artifacts: ClassVar[frozenset[str] | set[str]] = frozenset()
    #: codes of checks that must pass first; if one fails or is skipped, this one is skipped.
    #: A prerequisite the rule selection leaves out still runs, hidden (``doctor.runner.plan``):
    #: selection only hides findings, it never lets a dependent run on input its prerequisite
    #: found broken.
    requires: ClassVar[tuple[str, ...]] = ()
    #: import names this check needs beyond the light core, e.g. ("torch", "transformers")
    packages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def family(self) -> str:
        return self.code[:3]

    # ``run`` takes fixtures by parameter name and yields findings (or returns an iterable/None).
    def run(self, *args: Any, **kwargs: Any) -> Iterable[Finding] | None:  # pragma: no cover
        raise NotImplementedError

    def finding(
        self,
        message: str,
        *,
        path: str | None = None,
        location: Location | None = None,
        hint: str | None = None,
        fix: Fix | None = None,
        severity: Severity | None = None,
        why: str | None = None,
    ) -> Finding:
        """Build a finding of this check. ``hint`` defaults to the doc's How to fix section."""
        return Finding(
            code=self.code,
            name=self.name,
            severity=severity or self.severity,
            message=message,
            path=path or self.path,
            location=location,
            hint=hint or type(self).doc_section("How to fix"),
            why=why or type(self).doc_section("Why is this bad?"),
            fix=fix,
        )

    # ---- documentation -------------------------------------------------------------------
    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @classmethod
    def explanation(cls) -> str:
        return inspect.getdoc(cls) or ""

    @classmethod
    def doc_section(cls, title: str) -> str | None:
        """The first paragraph of a ``## Title`` section of the docstring, joined to one line."""
        sections = parse_sections(cls.explanation())
        body = sections.get(title)
        if not body:
            return None
        para = body.strip().split("\n\n")[0]
        return " ".join(line.strip() for line in para.splitlines()).strip() or None

    @classmethod
    def missing_sections(cls) -> list[str]:
        sections = parse_sections(cls.explanation())
        return [s for s in DOC_SECTIONS if not sections.get(s, "").strip()]

    @classmethod
    def fixture_names(cls) -> list[str]:
        params = inspect.signature(cls.run).parameters
        return [n for n in params if n != "self"]


def parse_sections(doc: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    current: str | None = None
    for line in doc.splitlines():
        m = re.match(r"^##\s+(.*?)\s*$", line)
        if m:
            current = m.group(1)
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def iter_checks(prefixes: Iterable[str] | None = None) -> Iterator[type[Check]]:
    """All registered checks (of the given families), sorted by code."""
    if prefixes is None:
        load_all()
    else:
        for p in prefixes:
            load_family(p)
    wanted = set(prefixes) if prefixes is not None else None
    for code in sorted(REGISTRY):
        if wanted is None or code[:3] in wanted:
            yield REGISTRY[code]

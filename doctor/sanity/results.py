"""The results of a sanity pass: one ``StageResult`` per stage, gathered in a ``SanityResult``.

Nothing here imports torch: the command's reporters and the checks read these plain objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from doctor.findings import Finding, Location, Severity

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass(frozen=True)
class StageInfo:
    number: int
    code: str
    name: str
    title: str
    why: str


STAGES: tuple[StageInfo, ...] = (
    StageInfo(1, "SAN001", "model-does-not-load", "load",
              "A weight that is missing or has the wrong shape is randomly initialised by transformers, "
              "which only logs a warning; the model then answers, but wrongly."),
    StageInfo(2, "SAN002", "forward-pass-broken", "forward",
              "If one forward pass with an image raises or gives NaN/inf logits, every answer the model "
              "gives is garbage or an exception at serving time."),
    StageInfo(3, "SAN003", "generation-degenerate", "generate",
              "An empty answer or one token repeated points to a wrong chat template, stop token or base "
              "model; it is what users see first."),
    StageInfo(4, "SAN004", "image-ignored", "image-matters",
              "When the logits do not change with the image, the vision path is cut: the model answers "
              "from the text alone and every image benchmark measures a text-only model."),
    StageInfo(5, "SAN005", "adapter-merge-disagrees", "adapter-vs-merged",
              "The merged model is what gets deployed; if it disagrees with base + adapter, the merge lost "
              "or corrupted the fine-tuning."),
    StageInfo(6, "SAN006", "probe-accuracy-low", "probe",
              "Yes/no questions about images (POPE) are the cheapest behavioural test that the model looks "
              "at the image; chance level (50%) means it does not."),
)
BY_NUMBER = {s.number: s for s in STAGES}


@dataclass
class StageResult:
    """One stage: pass, warn (findings of warning severity only), fail or skip."""

    number: int
    status: str = PASS
    seconds: float = 0.0
    peak_memory_bytes: int | None = None
    memory_kind: str = "rss"  # "cuda" (torch.cuda.max_memory_allocated) or "rss" (peak RSS)
    detail: str = ""
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> StageInfo:
        return BY_NUMBER[self.number]

    def add(
        self,
        message: str,
        *,
        path: str,
        severity: Severity = Severity.ERROR,
        hint: str,
        tensor: str | None = None,
        key: str | None = None,
        record: int | None = None,
    ) -> None:
        """Record a finding and move the status to warn/fail accordingly."""
        loc = Location(tensor=tensor, key=key, record=record) if (tensor or key or record is not None) else None
        self.findings.append(
            Finding(code=self.info.code, name=self.info.name, severity=severity, message=message, path=path,
                    location=loc, hint=hint, why=self.info.why)
        )
        if severity is Severity.ERROR:
            self.status = FAIL
        elif self.status == PASS:
            self.status = WARN

    def skip(self, reason: str) -> StageResult:
        self.status = SKIP
        self.detail = reason
        return self

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.number,
            "code": self.info.code,
            "name": self.info.title,
            "status": self.status,
            "seconds": round(self.seconds, 4),
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory_kind": self.memory_kind,
            "detail": self.detail,
            "metrics": self.metrics,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class SanityResult:
    """Everything a sanity pass found. ``ok`` is False when a stage failed."""

    model: str
    adapter: str | None = None
    base: str | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    quantization: str | None = None
    family: str | None = None
    stages: list[StageResult] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)

    def stage(self, number: int) -> StageResult:
        for s in self.stages:
            if s.number == number:
                return s
        raise KeyError(number)

    @property
    def ok(self) -> bool:
        return not any(s.failed for s in self.stages)

    @property
    def findings(self) -> list[Finding]:
        return [f for s in sorted(self.stages, key=lambda s: s.number) for f in s.findings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "adapter": self.adapter,
            "base": self.base,
            "family": self.family,
            "device": self.device,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "environment": self.environment,
            "ok": self.ok,
            "stages": [s.to_dict() for s in sorted(self.stages, key=lambda s: s.number)],
        }

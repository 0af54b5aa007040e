"""What is installed, read from package metadata and files, never by importing the packages.

A probe that fails is recorded as a probe error; it never crashes the report."""

from __future__ import annotations

import functools
import importlib.metadata as md
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

# display name -> distribution names to try (the first one installed wins)
PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "peft": ("peft",),
    "safetensors": ("safetensors",),
    "accelerate": ("accelerate",),
    "bitsandbytes": ("bitsandbytes",),
    "tokenizers": ("tokenizers",),
    "pillow": ("pillow", "Pillow"),
    "flash-attn": ("flash-attn", "flash_attn"),
    "deepspeed": ("deepspeed",),
    "numpy": ("numpy",),
    "huggingface-hub": ("huggingface-hub", "huggingface_hub"),
}


@dataclass
class Environment:
    python: str
    platform: str
    versions: dict[str, str | None] = field(default_factory=dict)
    gpus: list[str] = field(default_factory=list)
    torch_cuda: str | None = None  # the CUDA the torch wheel was built for ("cpu" for CPU wheels)
    probe_errors: dict[str, str] = field(default_factory=dict)

    def version(self, name: str) -> Version | None:
        raw = self.versions.get(name)
        if not raw:
            return None
        try:
            return Version(raw)
        except InvalidVersion:
            return None

    @property
    def cuda_usable(self) -> bool:
        return bool(self.gpus) and self.torch_cuda not in (None, "cpu")

    def to_dict(self) -> dict[str, Any]:
        return {
            "python": self.python,
            "platform": self.platform,
            "packages": self.versions,
            "gpus": self.gpus,
            "torch_cuda": self.torch_cuda,
            "probe_errors": self.probe_errors,
        }


@functools.lru_cache(maxsize=1)
def probe() -> Environment:
    env = Environment(python=platform.python_version(), platform=f"{platform.system()} {platform.machine()}")
    for name, dists in PACKAGES.items():
        env.versions[name] = None
        for dist in dists:
            try:
                env.versions[name] = md.version(dist)
                break
            except md.PackageNotFoundError:
                continue
            except Exception as e:  # noqa: BLE001 - broken metadata is reported, not raised
                env.probe_errors[name] = f"{type(e).__name__}: {e}"
                break
    torch_v = env.versions.get("torch")
    if torch_v:
        m = re.search(r"\+(cu\d+|rocm[\d.]+|cpu)", torch_v)
        env.torch_cuda = m.group(1) if m else _torch_cuda_from_files()
    try:
        env.gpus = _gpus()
    except Exception as e:  # noqa: BLE001
        env.probe_errors["gpu"] = f"{type(e).__name__}: {e}"
    return env


def _torch_cuda_from_files() -> str | None:
    """A torch without a local version tag: a CUDA build ships libcudart / nvidia wheels."""
    try:
        dist = md.distribution("torch")
        reqs = dist.requires or []
    except Exception:  # noqa: BLE001
        return None
    return "cuda" if any(r.startswith("nvidia-") for r in reqs) else "cpu"


def _gpus() -> list[str]:
    if not (Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi")):
        return []
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ["NVIDIA GPU (nvidia-smi not found)"]
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def version_tuple(version: str) -> tuple[int, ...]:
    """``4.37.2`` -> (4, 37, 2); ``5.0.0.dev0`` -> (5, 0, 0); junk -> (). Comparable, never raises."""
    parts: list[int] = []
    for piece in version.split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def package_file(dist: str, relative: str) -> Path | None:
    """A file inside an installed distribution, found from its metadata (no import)."""
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        return None
    path = Path(str(d.locate_file(relative)))
    return path if path.is_file() else None


def transformers_min_peft() -> str | None:
    """MIN_PEFT_VERSION of the installed transformers' peft integration (read as text)."""
    path = package_file("transformers", "transformers/integrations/peft.py")
    if path is None:
        return None
    try:
        m = re.search(r'^MIN_PEFT_VERSION\s*=\s*["\']([^"\']+)["\']', path.read_text(encoding="utf-8"), re.M)
    except OSError:
        return None
    return m.group(1) if m else None


def declared_requirements(dist: str) -> list[str]:
    """Requires-Dist of an installed distribution, without extras-only requirements."""
    try:
        reqs = md.requires(dist) or []
    except md.PackageNotFoundError:
        return []
    return [r for r in reqs if "extra ==" not in r]


def markdown(env: Environment) -> str:
    lines = ["| | |", "|---|---|", f"| python | {env.python} |", f"| platform | {env.platform} |"]
    for name, v in env.versions.items():
        lines.append(f"| {name} | {v or 'not installed'} |")
    lines.append(f"| torch build | {env.torch_cuda or '-'} |")
    lines.append(f"| GPUs | {'; '.join(env.gpus) or 'none'} |")
    for name, err in env.probe_errors.items():
        lines.append(f"| probe {name} | failed: {err} |")
    return "\n".join(lines) + "\n"

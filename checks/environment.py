"""ENV: the installed libraries against what the artifacts being checked need.

Versions come from package metadata (``doctor.envprobe``), never from importing the packages,
so these checks cost milliseconds. The rules are data with their sources (CATALOGUE section E).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from doctor.artifacts import Artifact, read_json_small
from doctor.envprobe import Environment, declared_requirements, probe, transformers_min_peft
from doctor.findings import Location, Severity
from doctor.registry import Check, fixture, register


@dataclass(frozen=True)
class Pin:
    package: str
    version: str
    source: str


# haotian-liu/LLaVA pyproject.toml (v1.2.2.post1): the versions its training and builder code
# were written against. transformers and tokenizers matter most (L#1103, L#1558).
LLAVA_PINS = (
    Pin("transformers", "4.37.2", "haotian-liu/LLaVA pyproject.toml"),
    Pin("tokenizers", "0.15.1", "haotian-liu/LLaVA pyproject.toml"),
    Pin("torch", "2.1.2", "haotian-liu/LLaVA pyproject.toml"),
    Pin("accelerate", "0.21.0", "haotian-liu/LLaVA pyproject.toml"),
    Pin("bitsandbytes", "0.41.0", "haotian-liu/LLaVA pyproject.toml"),
    Pin("deepspeed", "0.12.6", "haotian-liu/LLaVA pyproject.toml"),
)
# transformers PR #37785 (v4.52): torch.load needs torch >= 2.6 (CVE-2025-32434)
TORCH_LOAD_GATE = Version("2.6")
TRANSFORMERS_WITH_GATE = Version("4.52")
WATCHED = ("torch", "transformers", "peft", "safetensors", "accelerate", "tokenizers", "bitsandbytes", "huggingface-hub")


@fixture
def environment() -> Environment:
    return probe()


def _llava_codebase(artifacts: list[Artifact]) -> list[Artifact]:
    return [a for a in artifacts if a.kinds & {"llava-lora", "llava-original"}]


def _v(raw: str | None) -> Version | None:
    try:
        return Version(raw) if raw else None
    except InvalidVersion:
        return None


@register
class LlavaCodebasePins(Check):
    """The installed libraries differ from the LLaVA codebase's pinned versions.

    ## What it does
    When an original-LLaVA artifact (`llava_llama`, `llava_mistral`, a LLaVA LoRA output) is
    checked, compares the installed transformers, tokenizers, torch, accelerate, bitsandbytes and
    deepspeed with the versions haotian-liu/LLaVA pins in its pyproject.toml.

    ## Why is this bad?
    LLaVA's training and loading code (`llava/model/builder.py`, `llava/train/train.py`) was written
    against transformers 4.37.2 and tokenizers 0.15.1. Other versions fail with errors such as
    `__init__() got an unexpected keyword argument 'attn_implementation'` or tokenize prompts
    differently ("tokenization mismatch", loss 0.0).

    ## Example
    Checking `llava-v1.5-7b-lora/` with transformers 4.46.0 installed.

    ## How to fix
    Run the LLaVA codebase in its own environment with its pins
    (`pip install transformers==4.37.2 tokenizers==0.15.1`), or leave the LLaVA codebase behind:
    `vlm-doctor merge` / `vlm-doctor convert` produce a transformers-native checkpoint.
    """

    code = "ENV001"
    name = "llava-codebase-pins"
    severity = Severity.WARNING
    artifacts = frozenset({"environment"})

    def run(self, environment: Environment, artifacts: list[Artifact]) -> Iterator:
        llava = _llava_codebase(artifacts)
        if not llava:
            return
        for pin in LLAVA_PINS:
            installed = environment.versions.get(pin.package)
            if installed is None or _v(installed) == _v(pin.version):
                continue
            severity = Severity.WARNING if pin.package in ("transformers", "tokenizers") else Severity.INFO
            yield self.finding(
                f"{pin.package} {installed} is installed; the LLaVA codebase pins {pin.package}=={pin.version} "
                f"(needed for {llava[0].path})",
                location=Location(key=pin.package),
                severity=severity,
                hint=f"In the environment that runs the LLaVA code: pip install {pin.package}=={pin.version}. "
                     "Or convert the checkpoint with `vlm-doctor convert` / `vlm-doctor merge` and use plain transformers.",
            )


@register
class TransformersV5WithLlavaCodebase(Check):
    """transformers >= 5 is installed while checking original-LLaVA artifacts.

    ## What it does
    Flags transformers 5.x when an artifact needs the original LLaVA codebase.

    ## Why is this bad?
    transformers 5 removed the `load_in_4bit`/`load_in_8bit` keyword arguments, the
    `model.language_model` shortcut and generation parameters in `config.json`, all of which
    LLaVA's `load_pretrained_model` relies on: the builder fails before any weight loads.

    ## Example
    `config.json` says `"model_type": "llava_llama"` and `pip show transformers` says 5.2.0.

    ## How to fix
    Pin `transformers<5` (LLaVA pins 4.37.2) where the LLaVA code runs, or convert the checkpoint
    to transformers' native llava format with `vlm-doctor merge` / `vlm-doctor convert`.
    """

    code = "ENV002"
    name = "transformers-v5-with-llava-codebase"
    severity = Severity.ERROR
    artifacts = frozenset({"environment"})

    def run(self, environment: Environment, artifacts: list[Artifact]) -> Iterator:
        llava = _llava_codebase(artifacts)
        tf = environment.version("transformers")
        if llava and tf is not None and tf.major >= 5:
            yield self.finding(
                f"transformers {tf} cannot run the LLaVA codebase that {llava[0].path} needs "
                f"(model_type {llava[0].meta.get('model_type') or 'llava_*'})",
                location=Location(key="transformers"),
            )


@register
class TorchTooOldForBinWeights(Check):
    """torch < 2.6 with `.bin` (pickle) weights: transformers refuses to load them.

    ## What it does
    Looks for `.bin`/`.pt`/`.pth` weights among the artifacts and compares the installed torch with
    2.6 and transformers with 4.52.

    ## Why is this bad?
    Since transformers 4.52 `torch.load` is refused on torch < 2.6: "Due to a serious
    vulnerability issue in torch.load ... we now require users to upgrade torch to at least v2.6"
    (CVE-2025-32434 is a code-execution bug even with `weights_only=True`).

    ## Example
    `non_lora_trainables.bin` with torch 2.1.2 and transformers 4.53.

    This check owns "torch < 2.6 with pickle weights": one finding for the environment, naming the
    files. SEC008 adds a finding only for a LLaVA pickle that also FAILED the security scan (LLaVA's
    builder would run its content); a clean file is reported here alone.

    ## How to fix
    Convert the pickles to safetensors (`vlm-doctor check PATH --fix` offers it after a clean
    security scan), or upgrade torch to 2.6 or newer.
    """

    code = "ENV003"
    name = "torch-too-old-for-bin-weights"
    severity = Severity.ERROR
    artifacts = frozenset({"environment"})

    def run(self, environment: Environment, artifacts: list[Artifact]) -> Iterator:
        torch_v, tf = environment.version("torch"), environment.version("transformers")
        if torch_v is None or Version(torch_v.base_version) >= TORCH_LOAD_GATE:
            return
        pickles = [p for a in artifacts for p in _pickle_weights(Path(a.path))]
        if not pickles:
            return
        gated = tf is not None and tf >= TRANSFORMERS_WITH_GATE
        yield self.finding(
            f"torch {torch_v} with {len(pickles)} pickle weight file(s) (e.g. {pickles[0]}): "
            + ("transformers " + str(tf) + " refuses torch.load below torch 2.6" if gated
               else "torch.load below 2.6 is open to CVE-2025-32434 even with weights_only=True"),
            location=Location(key="torch"),
            severity=Severity.ERROR if gated else Severity.WARNING,
        )


def _pickle_weights(path: Path) -> list[str]:
    if path.is_file():
        return [str(path)] if path.suffix in (".bin", ".pt", ".pth") else []
    if not path.is_dir():
        return []
    return sorted(str(p) for p in path.glob("*") if p.suffix in (".bin", ".pt", ".pth") and p.name != "training_args.bin")


@register
class DependencyConflict(Check):
    """Installed ML libraries do not satisfy each other's declared requirements.

    ## What it does
    Reads the requirements transformers, peft, accelerate and torch declare in their metadata,
    plus the minimum peft version transformers' PEFT integration enforces (`MIN_PEFT_VERSION`),
    and compares them with what is installed. Like `pip check`, for the libraries that matter here.

    ## Why is this bad?
    A pair that does not work together fails late: `model.load_adapter()` raises in
    `check_peft_version`, or peft imports a transformers symbol that moved.

    ## Example
    transformers 5.24 (its PEFT integration needs peft >= 0.22.0) with peft 0.21.2.

    ## How to fix
    Install the versions the message names (`pip install "peft>=0.22.0"`), or pin the other side.
    """

    code = "ENV004"
    name = "dependency-conflict"
    severity = Severity.WARNING
    artifacts = frozenset({"environment"})

    def run(self, environment: Environment) -> Iterator:
        for dist in ("transformers", "peft", "accelerate", "torch"):
            if environment.versions.get(dist) is None:
                continue
            for raw in declared_requirements(dist):
                try:
                    req = Requirement(raw)
                except InvalidRequirement:
                    continue
                name = req.name.lower().replace("_", "-")
                if name not in WATCHED or (req.marker and not req.marker.evaluate()):
                    continue
                have = environment.version(name)
                if have is not None and req.specifier and not req.specifier.contains(have, prereleases=True):
                    yield self.finding(
                        f"{dist} {environment.versions[dist]} requires {req}, but {name} {have} is installed",
                        location=Location(key=name),
                        hint=f'pip install "{req.name}{req.specifier}"',
                    )
        min_peft, peft_v = transformers_min_peft(), environment.version("peft")
        if min_peft and peft_v is not None and peft_v < Version(min_peft):
            yield self.finding(
                f"transformers {environment.versions['transformers']} needs peft >= {min_peft} for its PEFT "
                f"integration (model.load_adapter, from_pretrained on an adapter folder); peft {peft_v} is installed",
                location=Location(key="peft"),
                hint=f'pip install "peft>={min_peft}"; PeftModel.from_pretrained still works with the installed peft.',
            )


@register
class ArtifactNewerThanLibrary(Check):
    """An artifact was written by a newer transformers or peft than the one installed.

    ## What it does
    Compares `transformers_version` in config.json and `peft_version` in adapter_config.json
    (written since peft 0.18) with the installed versions.

    ## Why is this bad?
    A newer writer may use config fields, module names or adapter options the installed library
    does not know: older peft raises `TypeError: LoraConfig.__init__() got an unexpected keyword
    argument` (or, from 0.14, silently drops the option), older transformers mis-reads renamed
    sub-configs.

    ## Example
    `"transformers_version": "5.2.0"` in config.json with transformers 4.46 installed.

    ## How to fix
    Upgrade the library to at least the version that wrote the artifact, or re-save the artifact
    with the installed version.
    """

    code = "ENV005"
    name = "artifact-newer-than-library"
    severity = Severity.WARNING
    artifacts = frozenset({"environment"})

    def run(self, environment: Environment, artifacts: list[Artifact]) -> Iterator:
        for art in artifacts:
            root = Path(art.path)
            if not root.is_dir():
                continue
            for fname, key, lib in (("config.json", "transformers_version", "transformers"),
                                    ("adapter_config.json", "peft_version", "peft")):
                data = read_json_small(root / fname) if (root / fname).is_file() else None
                wrote = _v(data.get(key)) if isinstance(data, dict) and isinstance(data.get(key), str) else None
                have = environment.version(lib)
                if wrote is None or have is None:
                    continue
                if Version(wrote.base_version) > Version(have.base_version):
                    yield self.finding(
                        f"{fname} was written by {lib} {wrote}; {lib} {have} is installed",
                        path=str(root / fname),
                        location=Location(key=key),
                        hint=f'pip install "{lib}>={wrote.base_version}"',
                    )


@register
class QuantizationWithoutBitsandbytes(Check):
    """A checkpoint asks for 4-bit/8-bit loading but bitsandbytes is missing or has no GPU.

    ## What it does
    Looks for a `quantization_config` with `load_in_4bit`/`load_in_8bit` (bitsandbytes) in the
    checked config.json files and checks that bitsandbytes is installed and a CUDA GPU with a CUDA
    build of torch is present.

    ## Why is this bad?
    `from_pretrained` fails with "Using `bitsandbytes` 4-bit quantization requires the latest
    version of bitsandbytes" or a CUDA error, after minutes of downloading.

    ## Example
    A QLoRA-merged config with `"quantization_config": {"load_in_4bit": true}` on a CPU machine.

    ## How to fix
    `pip install bitsandbytes` on a CUDA machine, or merge the adapter into an fp16/bf16 base and
    drop the quantization_config (merging into a 4-bit base rounds the weights: peft warns about it).
    """

    code = "ENV006"
    name = "quantization-without-bitsandbytes"
    severity = Severity.ERROR
    artifacts = frozenset({"environment"})

    def run(self, environment: Environment, artifacts: list[Artifact]) -> Iterator:
        for art in artifacts:
            cfg_path = Path(art.path) / "config.json"
            data = read_json_small(cfg_path) if cfg_path.is_file() else None
            q = data.get("quantization_config") if isinstance(data, dict) else None
            if not isinstance(q, dict) or not (q.get("load_in_4bit") or q.get("load_in_8bit") or q.get("quant_method") == "bitsandbytes"):
                continue
            if environment.versions.get("bitsandbytes") is None:
                problem = "bitsandbytes is not installed"
            elif not environment.cuda_usable:
                problem = f"no usable CUDA GPU (GPUs: {len(environment.gpus)}, torch build: {environment.torch_cuda})"
            else:
                continue
            yield self.finding(f"{cfg_path.name} asks for bitsandbytes quantization but {problem}",
                               path=str(cfg_path), location=Location(key="quantization_config"))


@register
class NoCudaForGpuPass(Check):
    """A GPU sanity pass was asked for, but no usable CUDA GPU is present.

    ## What it does
    With `--sanity --device cuda`, checks for an NVIDIA GPU and a CUDA build of torch; with
    `--device auto` it reports, as information, that the pass will run on the CPU.

    ## Why is this bad?
    A CPU build of torch (`2.x+cpu`) never sees the GPU; the pass would fail, or take far longer.

    ## Example
    `vlm-doctor check merged/ --sanity --device cuda` with `torch 2.13.0+cpu`.

    ## How to fix
    Install a CUDA build of torch on a GPU machine, or run with `--device cpu` (small models only).
    """

    code = "ENV007"
    name = "no-cuda-for-gpu-pass"
    severity = Severity.ERROR
    artifacts = frozenset({"environment"})

    def run(self, environment: Environment, options) -> Iterator:
        if not options.sanity or options.device == "cpu" or environment.cuda_usable:
            return
        detail = f"GPUs found: {len(environment.gpus)}; torch build: {environment.torch_cuda or 'not installed'}"
        if options.device == "cuda":
            yield self.finding(f"--device cuda was asked for, but CUDA is not usable ({detail})", location=Location(key="torch"))
        else:
            yield self.finding(f"the sanity pass will run on the CPU ({detail})", location=Location(key="torch"),
                               severity=Severity.INFO)


@register
class DatasetReaderMissing(Check):
    """A parquet or Arrow dataset was given, but pyarrow is not installed: its rows go unchecked.

    ## What it does
    For each dataset given as a `.parquet` / `.arrow` file (Hugging Face shards, `save_to_disk`
    files), checks that pyarrow, which vlm-doctor reads them with, is installed.

    ## Why is this bad?
    Without pyarrow every dataset check on that file is skipped: a gate would pass data it never
    read. A warning, not an error: the trainer's own loader (`datasets`, which depends on pyarrow)
    still reads the file; it is vlm-doctor that cannot.

    ## Example
    `vlm-doctor check data/train-00000-of-00004.parquet` after `pip install vlm-doctor` (the light
    core, no extras).

    ## How to fix
    `pip install 'vlm-doctor[datasets]'` (pyarrow), then check again.
    """

    code = "ENV009"
    name = "dataset-reader-missing"
    severity = Severity.WARNING
    artifacts = frozenset({"environment"})

    def run(self, artifacts: list[Artifact]) -> Iterator:
        import importlib.util

        tables = [a.path for a in artifacts if "dataset" in a.kinds and a.meta.get("format") in ("parquet", "arrow")]
        if not tables or importlib.util.find_spec("pyarrow") is not None:
            return
        shown = ", ".join(tables[:3]) + (f" and {len(tables) - 3} more" if len(tables) > 3 else "")
        yield self.finding(f"{len(tables)} parquet / Arrow dataset file(s) were not checked: pyarrow is not installed "
                           f"({shown})", location=Location(key="pyarrow"),
                           hint="pip install 'vlm-doctor[datasets]' (pyarrow), then check again")


@register
class ProbeFailed(Check):
    """Reading an installed package's metadata failed.

    ## What it does
    Reports packages whose metadata could not be read while probing the environment.

    ## Why is this bad?
    A half-installed or broken package (an interrupted `pip install`, two copies on sys.path)
    fails at import time in ways that look like model bugs.

    ## Example
    `transformers: ValueError: invalid version`.

    ## How to fix
    Reinstall the package: `pip install --force-reinstall --no-deps NAME`.
    """

    code = "ENV008"
    name = "probe-failed"
    severity = Severity.WARNING
    artifacts = frozenset({"environment"})

    def run(self, environment: Environment) -> Iterator:
        for name, error in environment.probe_errors.items():
            yield self.finding(f"probing {name} failed: {error}", location=Location(key=name))


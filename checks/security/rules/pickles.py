"""SEC001-SEC007 and the shared inputs of the family: which files an artifact holds and what the static pickle scan found in each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doctor.artifacts import Artifact
from doctor.files import (
    DISTCP_SUFFIX,
    LLAVA_PLAIN_LOAD,
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIX,
    WEIGHT_SUFFIXES,
    is_dcp_metadata,
)
from doctor.findings import Severity
from doctor.registry import Check, fixture, register

ARTIFACTS = frozenset({"model", "adapter", "llava-lora", "llava-original", "xtuner", "weights", "pickle", "run"})
SUFFIXES = (*PICKLE_SUFFIXES, SAFETENSORS_SUFFIX, DISTCP_SUFFIX)
# how deep a folder artifact is walked: run/checkpoint-N/global_stepN/*.pt, XTuner
# work_dirs/<config>/iter_N.pth/global_stepN/*.pt
WALK_DEPTH = 5
_SEVERITY = {"error": Severity.ERROR, "warning": Severity.WARNING, "info": Severity.INFO}


@fixture
def sec_files(artifact: Artifact, path: str, artifacts: list[Artifact]) -> list[str]:
    """Every pickle-bearing or safetensors file of an artifact, whatever the layout: the file
    itself, or a bounded walk of the folder (optimizer and scheduler states, ``rng_state*.pth``,
    DeepSpeed ``global_stepN/``, mmengine ``iter_N.pth/`` folders, FSDP's torch.distributed.checkpoint
    ``*.distcp`` shards and their ``.metadata`` pickle, sub-folders of a run), leaving
    out sub-folders that are artifacts of their own in this run (they are scanned there)."""
    root = Path(path)
    if root.is_file():
        return [str(root)]
    others = {Path(a.path) for a in artifacts if a.path != path}
    found: list[str] = []
    _walk(root, WALK_DEPTH, found, others)
    return sorted(found)


def _walk(folder: Path, depth: int, found: list[str], others: set[Path]) -> None:
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return
    for child in children:
        if child in others or child.name.startswith(".") and not is_dcp_metadata(child):
            continue
        if is_dcp_metadata(child):
            found.append(str(child))  # pickle.load()ed by torch.distributed.checkpoint on resume
            continue
        if child.name.lower().endswith(SUFFIXES) and (child.is_file() or child.is_symlink() and not child.exists()):
            found.append(str(child))  # a dangling link (a Hub cache blob gone missing) is reported as unreadable
        elif depth > 1 and child.is_dir() and not child.is_symlink():
            _walk(child, depth - 1, found, others)


def _looks_pickled(path: str) -> bool:
    """A .safetensors file that starts like a zip or a pickle is scanned as one."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head.startswith(b"PK") or (head[:1] == b"\x80" and len(head) == 2 and 2 <= head[1] <= 5)


@fixture
def sec_pickle_scans(sec_files: list[str], progress: Any) -> dict[str, Any]:
    from doctor.io.pickle_scan import scan

    targets = [p for p in sec_files if not p.lower().endswith(".safetensors") or _looks_pickled(p)]
    results = {}
    with progress("Scanning pickles", len(targets)) as advance:
        for p in targets:
            results[p] = scan(p)
            advance(1)
    return results


def ckp_owns_lfs_pointer(path: str, artifact: Artifact) -> bool:
    """A Git-LFS pointer among a model folder's own weight files is CKP203's (one finding for the
    folder: the clone skipped LFS); everywhere else SEC103 (.safetensors) / SEC005 (pickles) own it."""
    return ("model" in artifact.kinds and Path(path).parent == Path(artifact.path)
            and Path(path).name.lower().endswith(WEIGHT_SUFFIXES))


class _ScanIssueCheck(Check):
    """Base: report the scan issues of the kinds in ``kinds``, one finding each."""

    kinds: tuple[str, ...] = ()
    artifacts = ARTIFACTS

    def run(self, sec_pickle_scans: dict[str, Any], artifact: Artifact) -> Iterator:
        for path, result in sec_pickle_scans.items():
            ckp_owned = result.format == "lfs-pointer" and ckp_owns_lfs_pointer(path, artifact)
            issues = [i for i in result.issues
                      if i.kind in self.kinds and not (ckp_owned and i.kind == "wrong-format")]
            # one cause, once per file: the same import in several pickles of a file is one finding
            groups: dict[object, list[Any]] = {}
            for issue in issues:
                groups.setdefault((issue.kind, issue.global_name) if issue.global_name else id(issue), []).append(issue)
            for same in groups.values():
                issue = same[0]
                where = f" [{issue.where}]" if issue.where else ""
                also = ""
                if len(same) > 1:
                    places = [i.where for i in same[1:] if i.where]
                    also = f"; also in {len(same) - 1} more place(s) of this file" + (
                        f" ({'; '.join(places[:3])}{', ...' if len(places) > 3 else ''})" if places else "")
                yield self.finding(f"{Path(path).name}: {issue.message}{where}{also}", path=path,
                                   severity=_SEVERITY[issue.severity], hint=self.hint_for(path, issue))

    def hint_for(self, path: str, issue: Any) -> str | None:
        return None


@register
class DisallowedGlobal(_ScanIssueCheck):
    """A pickle imports a name that is not on the allow-list.

    ## What it does
    Walks every pickle opcode in the file (torch zip entries, the five pickles of torch's legacy
    format, concatenated pickles, old tar members) without executing anything, resolves every
    import (`GLOBAL`, `INST`, `STACK_GLOBAL` including strings fetched back from the memo) and
    compares it with an allow-list: what `torch.load(weights_only=True)` accepts, plus vetted
    extras for `training_args.bin`, `rng_state*.pth` and DeepSpeed files, each only in its own file.

    ## Why is this bad?
    Unpickling calls whatever the pickle imports: `builtins.exec`, `os.system`, or a bypass such
    as `functools.partial`, `pkgutil.resolve_name` or `operator.attrgetter` that deny-list scanners
    miss. `torch.load(weights_only=False)`, `pickle.load`, and the LLaVA builder's plain
    `torch.load` of `non_lora_trainables.bin` / `mm_projector.bin` under its pinned torch 2.1.2
    all run it. Resuming an FSDP sharded checkpoint (`pytorch_model_fsdp_0/`, `optimizer_0/`) runs
    it too: torch.distributed.checkpoint `pickle.load`s `.metadata` and `torch.load`s every
    non-tensor item of the `*.distcp` shards with `weights_only=False` (each item is scanned).

    ## Example
    `non_lora_trainables.bin: pickle #1 imports builtins.exec (STACK_GLOBAL; called)`.

    ## How to fix
    Do not load this file. Get the weights from a trusted source, preferably as .safetensors;
    if you produced it yourself, re-save the state dict from a trusted process.
    """

    code = "SEC001"
    name = "disallowed-global"
    kinds = ("disallowed-global", "misused-global")

    def hint_for(self, path: str, issue: Any) -> str | None:
        if Path(path).name in LLAVA_PLAIN_LOAD:
            return ("Do not load this folder with LLaVA's builder: it calls torch.load on this file without "
                    "weights_only. Get the file from a trusted source, or re-create it by re-running training.")
        if path.endswith(DISTCP_SUFFIX) or is_dcp_metadata(path):
            return ("Do not resume from or load this torch.distributed.checkpoint folder: its .metadata is read "
                    "with pickle.load and its non-tensor items with torch.load(weights_only=False). Re-create it "
                    "by re-running training from a trusted checkpoint.")
        return None


@register
class UnresolvableGlobal(_ScanIssueCheck):
    """A pickle imports a name that can only be known by running it.

    ## What it does
    Reports `STACK_GLOBAL` whose module or name is not a constant string (for example one
    computed by calling `_codecs.encode(..., "rot13")`, which torch's allow-list accepts), and
    `EXT1/EXT2/EXT4` extension codes resolved through copyreg's registry at load time.

    ## Why is this bad?
    A static reader cannot tell what will be imported, so it cannot tell that the file is safe.
    No `torch.save` output ever does this: it is a way to hide an import from scanners.

    ## Example
    `STACK_GLOBAL imports module the result of calling _codecs.encode, name ...`.

    ## How to fix
    Treat the file as hostile: do not load it; obtain the weights from a trusted source.
    """

    code = "SEC002"
    name = "unresolvable-global"
    kinds = ("unresolved-global",)


@register
class ComputedCallable(_ScanIssueCheck):
    """A pickle calls something that is not an imported name.

    ## What it does
    Reports `REDUCE`, `NEWOBJ` or `OBJ` whose callable is the result of an earlier call, such as
    `functools.partial(exec, ...)()` or the function `pkgutil.resolve_name("builtins:exec")` returns.

    ## Why is this bad?
    Chaining calls is how pickle payloads reach `exec` or `os.system` without naming them;
    `torch.load(weights_only=True)` refuses it, and no checkpoint writer produces it.

    ## Example
    `REDUCE calls the result of calling pkgutil.resolve_name`.

    ## How to fix
    Treat the file as hostile: do not load it; obtain the weights from a trusted source.
    """

    code = "SEC003"
    name = "computed-callable"
    kinds = ("indirect-call",)


@register
class MalformedPickle(_ScanIssueCheck):
    """A pickle file is malformed, truncated or unreadable.

    ## What it does
    Reports pickles that end early, use unknown opcodes or impossible lengths, legacy torch files
    whose storages run past the end, zip archives that cannot be read or have encrypted entries,
    and (as a warning) bytes after the last pickle that are not a pickle.

    ## Why is this bad?
    A file that cannot be parsed cannot be shown to be safe, and a loader fails on it with
    `UnpicklingError`, `EOFError` or `PytorchStreamReader failed reading zip archive`; truncation
    usually means an interrupted download or save.

    ## Example
    `pytorch_model.bin: not a well-formed pickle: length 1048576 runs past the end of the data`.

    ## How to fix
    Download or save the file again and compare its size (or sha256) with the source.
    """

    code = "SEC004"
    name = "malformed-pickle"
    kinds = ("malformed", "trailing-data", "unreadable")


@register
class NotWhatItsNameSays(_ScanIssueCheck):
    """A weights file is not in the format its extension says.

    ## What it does
    Identifies what a `.bin` / `.pt` / `.pth` / `.ckpt` / `.pkl` file really is (safetensors, a
    zip without pickles, an HTML error page, JSON, text, a Git-LFS pointer, GGUF, numpy, empty)
    and flags a `.safetensors` file that is really a pickle or zip.

    ## Why is this bad?
    Loaders pick the reader from the name: `torch.load` on a safetensors or HTML file fails with
    `UnpicklingError: invalid load key`; a pickle named `.safetensors` is a disguise that runs
    code if someone "fixes" the error by calling `torch.load` on it.

    ## Example
    `pytorch_model.bin: named .bin but it is an HTML/XML page (a failed download ...)`. A Git-LFS
    pointer directly inside a model folder is reported once for the folder by CKP203 instead.

    ## How to fix
    Download the real file (`git lfs pull` for pointers), or rename a safetensors file to
    `.safetensors`; never rename a pickle to `.safetensors`.
    """

    code = "SEC005"
    name = "not-what-its-name-says"
    kinds = ("wrong-format",)


@register
class PolyglotContainer(_ScanIssueCheck):
    """A file reads differently depending on the reader (a polyglot).

    ## What it does
    Flags a zip archive preceded by other bytes (torch.load only treats a file as a zip when it
    starts with `PK\\x03\\x04`, so it unpickles the prefix instead), and zip archives holding two
    entries with the same name.

    ## Why is this bad?
    Scanners that open the zip see a clean `data.pkl` while `torch.load` runs the prefix; with
    duplicate names, different zip readers load different copies.

    ## Example
    `1,234 bytes precede the zip archive: torch.load ... unpickles the prefix instead`.

    ## How to fix
    Treat the file as hostile: do not load it; obtain the weights from a trusted source.
    """

    code = "SEC006"
    name = "polyglot-container"
    kinds = ("polyglot",)


@register
class UnvettedTrainerClass(_ScanIssueCheck):
    """training_args.bin instantiates an argument class that is not on the vetted list.

    ## What it does
    In `training_args.bin` only, a class named like `...TrainingArguments` / `...Config` / `...Arguments`
    that the pickle only instantiates (NEWOBJ + state, never calls) is reported as a warning
    instead of an error: trainers built on transformers (axolotl, LLaMA-Factory, ...) subclass
    `TrainingArguments`.

    ## Why is this bad?
    Loading it imports that class's module and sets its state; that is only as safe as the
    installed module. Trainer itself never loads `training_args.bin`.

    ## Example
    `training_args.bin: pickle #1 instantiates axolotl.core.training_args.AxolotlTrainingArguments`.

    ## How to fix
    Nothing, if you trust the training code that wrote it; otherwise delete the file (it is not
    needed to load or resume the model).
    """

    code = "SEC007"
    name = "unvetted-trainer-class"
    severity = Severity.WARNING
    kinds = ("unvetted-global",)

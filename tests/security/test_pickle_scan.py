"""doctor.io.pickle_scan: the static scanner flags every malicious sample without running it,
passes real torch / Trainer pickles, and reads tensor metadata exactly as torch.load sees it."""

from __future__ import annotations

import io
import pickle
import random
import struct
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from doctor.io.pickle_scan import (  # noqa: E402
    UnsafePickleError,
    safe_load,
    scan,
    tensor_infos,
    torch_load_is_safe,
)

from tests.helpers.pickle_corpus import Sample, build_corpus, exec_reduce, not_what_it_says  # noqa: E402

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real torch.save outputs and the pickles a Trainer run writes."""
    import os

    import numpy as np

    root = tmp_path_factory.mktemp("benign")
    g = torch.Generator().manual_seed(0)
    state = {
        "model.embed_tokens.weight": torch.randn(11, 4, generator=g).half(),
        "model.mm_projector.0.weight": torch.randn(8, 4, generator=g).bfloat16(),
        "model.mm_projector.0.bias": torch.zeros(8, dtype=torch.bfloat16),
        "steps": torch.arange(5),
        "mask": torch.ones(3, dtype=torch.bool),
        "scalar": torch.tensor(2.5),
        "param": torch.nn.Parameter(torch.ones(2, 2)),
    }
    state["lm_head.weight"] = state["model.embed_tokens.weight"]  # tied: shares storage
    state["view"] = state["steps"][1:4]  # a view with a storage offset
    out = {"zip": root / "pytorch_model.bin", "legacy": root / "legacy.bin"}
    torch.save(state, out["zip"])
    torch.save(state, out["legacy"], _use_new_zipfile_serialization=False)
    torch.save({"w": torch.zeros(2).to(torch.float8_e4m3fn)}, root / "fp8.bin")
    out["fp8"] = root / "fp8.bin"

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import TrainingArguments, get_linear_schedule_with_warmup

    run = root / "checkpoint-2"
    run.mkdir()
    args = TrainingArguments(output_dir=str(root / "out"), report_to=[], bf16=False)
    torch.save(args, run / "training_args.bin")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()},
               run / "rng_state.pth")  # what Trainer._save_rng_state writes on CPU
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched = get_linear_schedule_with_warmup(opt, 2, 10)
    torch.save(opt.state_dict(), run / "optimizer.pt")
    torch.save(sched.state_dict(), run / "scheduler.pt")
    torch.save({"step": 3, "random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state()}, run / "random_states_0.pkl")  # accelerate save_state
    for name in ("training_args.bin", "rng_state.pth", "optimizer.pt", "scheduler.pt", "random_states_0.pkl"):
        out[name] = run / name
    return out


# ---- malicious samples ----------------------------------------------------------------------
def test_every_malicious_sample_is_flagged_with_the_global_it_names(corpus: list[Sample]) -> None:
    for sample in corpus:
        result = scan(sample.path)
        assert not result.ok, sample.name
        if sample.expect == "<unresolved>":
            assert any(i.kind == "unresolved-global" for i in result.issues), sample.name
        else:
            named = {i.global_name for i in result.issues if i.kind == "disallowed-global"}
            assert sample.expect in named, (sample.name, named)
            issue = next(i for i in result.issues if i.global_name == sample.expect)
            assert sample.expect in issue.message
    assert not [s.name for s in corpus if s.marker.exists()], "a payload ran while scanning"


def test_findings_say_where(corpus: list[Sample]) -> None:
    by_name = {s.name: s for s in corpus}
    second = scan(by_name["zip-second-pkl"].path)
    assert any(i.entry == "archive/constants.pkl" and i.global_name == "builtins.exec" for i in second.issues)
    folder = scan(by_name["zip-folder-name"].path)
    assert any(i.entry == "x9/data.pkl" for i in folder.issues)
    legacy = scan(by_name["legacy-sysinfo"].path)
    assert legacy.format == "torch-legacy"
    assert any("pickle #3" in i.message for i in legacy.issues)
    concat = scan(by_name["concatenated"].path)
    assert any("pickle #2" in i.message for i in concat.issues)
    poly = scan(by_name["zip-prefix-polyglot"].path)
    assert {"polyglot", "disallowed-global"} <= {i.kind for i in poly.issues}
    dup = scan(by_name["zip-duplicate-entry"].path)
    assert any(i.kind == "polyglot" for i in dup.issues)
    disguise = scan(by_name["safetensors-extension"].path)
    assert disguise.issues[0].kind == "wrong-format"


def test_chained_bypasses_are_reported_as_computed_calls(corpus: list[Sample]) -> None:
    for name in ("pkgutil-resolve-name", "operator-attrgetter", "functools-partial", "newobj-partial"):
        result = scan(next(s for s in corpus if s.name == name).path)
        assert any(i.kind == "indirect-call" for i in result.issues), name


def test_every_opcode_of_every_protocol_is_understood() -> None:
    import pickletools

    from doctor.io.pickle.vm import OPS

    assert {op.code.encode("latin-1")[0] for op in pickletools.opcodes} == set(OPS)


def test_extension_codes_are_unresolvable(tmp_path: Path) -> None:
    path = tmp_path / "ext.pkl"
    path.write_bytes(b"\x80\x02\x82\x07)R.")
    assert [i.kind for i in scan(path).issues] == ["unresolved-global"]


def test_stack_global_of_memoized_strings_is_resolved_not_guessed(tmp_path: Path) -> None:
    """Strings put in the memo with BINPUT / LONG_BINPUT and fetched with GET variants."""
    data = (b"\x80\x04" + b"\x8c\x05torch" + b"r\x07\x00\x00\x00" + b"0" + b"\x8c\x04Size" + b"q\x03" + b"0"
            + b"j\x07\x00\x00\x00" + b"h\x03" + b"\x93" + b")R.")
    path = tmp_path / "size.pkl"
    path.write_bytes(data)
    result = scan(path)
    assert result.ok and result.globals == ["torch.Size"]


def test_wrong_formats_are_named(tmp_path: Path) -> None:
    for name, (path, fmt) in not_what_it_says(tmp_path).items():
        result = scan(path)
        assert result.format == fmt, name
        assert result.issues[0].kind == "wrong-format", name
        assert result.issues[0].severity == ("warning" if fmt == "safetensors" else "error")


def test_deep_nesting_does_not_crash_the_scanner(tmp_path: Path) -> None:
    """CPython hashes tuples recursively with no depth guard: a 200,000-deep tuple used as a
    dict key segfaults a naive simulator (and pickle.load itself)."""
    path = tmp_path / "deep.pkl"
    path.write_bytes(b"\x80\x02}" + b")" + b"\x85" * 200_000 + b"Ns" + b"(" + b")" + b"\x85" * 200_000 + b"\x91.")
    result = scan(path)
    assert result.format == "pickle" and result.globals == []
    assert tensor_infos(path) == {}


def test_hostile_lengths_do_not_allocate(tmp_path: Path) -> None:
    path = tmp_path / "huge.pkl"
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"xx.")
    result = scan(path)
    assert [i.kind for i in result.issues] == ["malformed"]
    assert "runs past the end" in result.issues[0].message


# ---- benign files ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["zip", "legacy", "fp8", "training_args.bin", "rng_state.pth", "optimizer.pt",
                                 "scheduler.pt", "random_states_0.pkl"])
def test_real_torch_and_trainer_pickles_pass(benign: dict[str, Path], key: str) -> None:
    result = scan(benign[key])
    assert result.ok and not result.issues, result.issues
    assert result.format == ("torch-legacy" if key == "legacy" else "torch-zip")


def test_inert_object_of_training_args(benign: dict[str, Path]) -> None:
    from doctor.io.pickle_scan import inert_object

    obj = inert_object(benign["training_args.bin"])
    assert obj.func.full == "transformers.training_args.TrainingArguments"
    assert obj.state["learning_rate"] == 5e-05
    assert obj.state["lr_scheduler_type"].func.name == "SchedulerType"
    assert obj.state["lr_scheduler_type"].args == ("linear",)


def test_trainer_extras_only_in_their_own_file(benign: dict[str, Path], tmp_path: Path) -> None:
    renamed = tmp_path / "pytorch_model.bin"
    renamed.write_bytes(benign["training_args.bin"].read_bytes())
    result = scan(renamed)
    assert "transformers.training_args.TrainingArguments" in {i.global_name for i in result.issues}
    rng = tmp_path / "adapter_model.bin"
    rng.write_bytes(benign["rng_state.pth"].read_bytes())
    assert not scan(rng).ok


def test_trainer_file_cannot_call_a_class_it_only_instantiates(tmp_path: Path) -> None:
    path = tmp_path / "training_args.bin"
    path.write_bytes(b"\x80\x02ctransformers.training_args\nTrainingArguments\n)R.")
    assert [i.kind for i in scan(path).issues] == ["misused-global"]
    path.write_bytes(b"\x80\x02caxolotl.core.training_args\nAxolotlTrainingArguments\n)\x81}b.")
    assert [(i.kind, i.severity) for i in scan(path).issues] == [("unvetted-global", "warning")]
    path.write_bytes(b"\x80\x02cos\nSystemConfig\n)\x81.")
    assert [i.kind for i in scan(path).issues] == ["disallowed-global"]


@pytest.mark.parametrize("key", ["zip", "legacy", "fp8"])
def test_tensor_infos_agree_with_torch_load(benign: dict[str, Path], key: str) -> None:
    from doctor.io.safetensors_header import DTYPE_BITS

    loaded = torch.load(benign[key], weights_only=True)
    infos = tensor_infos(benign[key])
    assert list(infos) == list(loaded)
    names = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.int64: "I64",
             torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3"}
    for name, tensor in loaded.items():
        assert infos[name].shape == tuple(tensor.shape), name
        assert infos[name].dtype == names[tensor.dtype], name
        assert infos[name].dtype in DTYPE_BITS


def test_scanning_never_imports_torch(benign: dict[str, Path]) -> None:
    import subprocess

    code = ("import sys; from doctor.io.pickle_scan import scan, tensor_infos; "
            f"scan({str(benign['zip'])!r}); tensor_infos({str(benign['legacy'])!r}); "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tensor_infos_of_the_old_tar_format(tmp_path: Path) -> None:
    path = _old_tar(tmp_path / "old.pt")
    loaded = torch.load(path, weights_only=False)  # proves the hand-built file is a real torch tar
    assert tensor_infos(path) == {"w": ("F32", tuple(loaded["w"].shape))}
    assert scan(path).ok


def _old_tar(path: Path) -> Path:
    class Key:
        def __init__(self, key: str) -> None:
            self.key = key

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> str | None:
            return obj.key if isinstance(obj, Key) else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"w": Key("7")})
    storages, tensors = io.BytesIO(), io.BytesIO()
    for item in (1, ("5", "cpu", torch.FloatStorage)):
        pickle.dump(item, storages, protocol=2)
    storages.write(struct.pack("<q", 6) + struct.pack("<f", 1.5) * 6)
    pickle.dump([], storages, protocol=2)
    for item in (1, (7, "5", torch.FloatTensor)):
        pickle.dump(item, tensors, protocol=2)
    tensors.write(struct.pack("<i", 2) + b"\0" * 4 + struct.pack("<5q", 2, 3, 3, 1, 0))
    members = {"sys_info": pickle.dumps({"protocol_version": 1001}, protocol=2), "pickle": buf.getvalue(),
               "storages": storages.getvalue(), "tensors": tensors.getvalue()}
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_allow_list_is_torch_weights_only_list() -> None:
    from torch._weights_only_unpickler import _get_allowed_globals

    from doctor.io.pickle.allow import TORCH_ALLOWED

    assert TORCH_ALLOWED == set(_get_allowed_globals())


# ---- safe_load ------------------------------------------------------------------------------
def test_safe_load_loads_clean_files(benign: dict[str, Path]) -> None:
    for key in ("zip", "legacy"):
        state = safe_load(benign[key])
        reference = torch.load(benign[key], weights_only=True)
        assert set(state) == set(reference)
        assert all(torch.equal(state[k], reference[k]) for k in state)


def test_safe_load_refuses_without_running_anything(corpus: list[Sample]) -> None:
    for sample in corpus:
        with pytest.raises(UnsafePickleError, match="refusing|not a pickle"):
            safe_load(sample.path)
    assert not [s.name for s in corpus if s.marker.exists()]


def test_safe_load_refuses_torch_before_2_6(benign: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.1.2")
    with pytest.raises(UnsafePickleError, match="CVE-2025-32434"):
        safe_load(benign["zip"])
    assert torch_load_is_safe("2.5.1")[0] is False
    assert torch_load_is_safe("2.6.0+cpu") == (True, None)


def test_safe_load_refuses_trainer_extras(benign: dict[str, Path]) -> None:
    with pytest.raises(UnsafePickleError, match="TrainingArguments"):
        safe_load(benign["training_args.bin"])


# ---- robustness -----------------------------------------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=512))
def test_random_bytes_never_raise(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    scan(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 8), prefix=st.booleans())
def test_mutated_pickles_never_raise(tmp_path: Path, seed: int, flips: int, prefix: bool) -> None:
    rng = random.Random(seed)
    data = bytearray(pickle.dumps({"a": [1, "x", b"y", (2.5, None)], "b": {1, 2}}, protocol=rng.choice([0, 2, 4, 5])))
    if prefix:
        data = bytearray(exec_reduce(Path("/nonexistent/marker"), 2)) + data
    for _ in range(flips):
        data[rng.randrange(len(data))] = rng.randrange(256)
    path = tmp_path / "mutated.pkl"
    path.write_bytes(bytes(data))
    scan(path)
    try:
        tensor_infos(path)
    except Exception as e:  # noqa: BLE001
        assert type(e).__name__ == "ArtifactError"

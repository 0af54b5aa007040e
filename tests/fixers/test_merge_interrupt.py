"""A merge that dies midway leaves nothing that looks like a finished checkpoint: an injected
fault in the tensor writer, and a real SIGKILL of a merging process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from doctor.fixers.merge import merge  # noqa: E402
from doctor.fixers.merge import tensor_io as _merge_io  # noqa: E402

from doctor.testing.adapters import make_lora_adapter  # noqa: E402
from doctor.testing.models import make_llava_model  # noqa: E402


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    info = make_llava_model(root / "base", family="llava", seed=31)
    adapter = make_lora_adapter(info, root / "ad", seed=32)
    return info, adapter


def looks_finished(folder: Path) -> bool:
    return folder.is_dir() and (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def test_injected_fault_leaves_no_output(pair, tmp_path, monkeypatch):
    info, adapter = pair
    real = _merge_io.write_tensor
    calls = {"n": 0}

    def failing(f, t, name, dtype, shape):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError(28, "No space left on device")
        real(f, t, name, dtype, shape)

    monkeypatch.setattr(_merge_io, "write_tensor", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        merge(adapter, base=info.path, out=out, max_shard_size="50KB")
    assert calls["n"] == 20
    assert not out.exists()
    assert not list(tmp_path.glob(".out.partial-*"))  # the temporary folder is removed


def test_injected_fault_keeps_the_previous_output(pair, tmp_path, monkeypatch):
    """With --force, the old OUT is replaced only after the new one is complete."""
    info, adapter = pair
    out = tmp_path / "out"
    merge(adapter, base=info.path, out=out, check=False)
    before = (out / "model.safetensors").read_bytes()

    def failing(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(_merge_io, "write_tensor", failing)
    with pytest.raises(RuntimeError):
        merge(adapter, base=info.path, out=out, dtype="bf16", force=True)
    assert (out / "model.safetensors").read_bytes() == before and looks_finished(out)


def test_cli_reports_a_write_error_without_traceback(pair, tmp_path, monkeypatch, capsys):
    from doctor.cli import main

    info, adapter = pair

    def failing(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_merge_io, "write_tensor", failing)
    assert main(["merge", str(adapter), "--base", str(info.path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_midway_leaves_only_a_partial_folder(pair, tmp_path):
    info, adapter = pair
    out = tmp_path / "out"
    marker = tmp_path / "started"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from doctor.fixers.merge import tensor_io as _merge_io
        from doctor.fixers.merge import merge

        real = _merge_io.write_tensor
        count = [0]

        def slow(*args, **kwargs):
            real(*args, **kwargs)
            count[0] += 1
            if count[0] == 10:
                Path({str(marker)!r}).write_text("writing")
            if count[0] >= 10:
                time.sleep(0.5)  # let the parent kill us halfway through the shards

        _merge_io.write_tensor = slow
        merge({str(adapter)!r}, base={str(info.path)!r}, out={str(out)!r}, max_shard_size="50KB", check=False)
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the merge exited early: {proc.communicate()[1].decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the merge never started writing")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    partial = list(tmp_path.glob(".out.partial-*"))
    assert len(partial) == 1  # hidden, named partial, and missing what makes a checkpoint
    assert any(partial[0].glob("model-*.safetensors")) and not (partial[0] / "config.json").exists()
    assert not looks_finished(partial[0])

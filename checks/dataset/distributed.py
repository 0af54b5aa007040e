"""The dataset pass on a Ray cluster: ``vlm-doctor check DATA --engine ray [--ray-address ADDR]``.

The work is cut into blocks that Ray Data maps over the cluster, and the results are folded back
in block order by the same code the single process uses, so the report is the same (codes,
locations, order):

- distinct image paths, in batches (``Prober.batch``, the function the local thread pool runs):
  every ``--images`` level; at ``decode`` this is where the time goes (~2 ms an image);
- parquet row groups / Arrow record batches (``tables.scan_part``: the record rules and the
  embedded images of those rows), folded by ``tables.merge_parts``;
- byte ranges of a JSON Lines file, cut at line starts (``scan.scan_part``: the record rules on
  the values of those lines, numbered and positioned as in the whole file), folded by
  ``scan.fold_parts``. The driver counts the lines before each cut (a memchr pass) and finds the
  file's format in its first records; a part in which a value spans lines, two values share a
  line or the reading stops (invalid UTF-8) cannot be placed exactly, and then the file is read
  by one process, as without Ray;
- byte ranges of a JSON array (LLaVA's format, often one line), in two passes: each worker
  guesses where the first element at or after its cut starts (``jsonstream.find_array_start``) and
  counts the elements that start before its end (``scan.count_array_part``); the driver verifies
  the chain (part 0 starts at the array's first element; part k+1 is right when its guess is where
  part k's last element ended, else it is counted again from there, ``cut_array``), then the
  workers check their elements, numbered and positioned (line and column, from each range's
  newlines and characters) as in the whole file (``scan.scan_array_part``), folded by
  ``scan.fold_array_parts``. A parse error anywhere, a BOM, or no known format in the first
  records: one process reads the file.

A dataset given as a URL (``s3://bucket/train.jsonl``) is read by the workers through fsspec, each
its own ranges or row groups; the driver reads its head and a few bytes at each cut. A worker that
cannot read it returns ``Unreadable`` and the driver reads the file itself; ``memory://`` (one
process's storage) never leaves the driver.

Without ``--ray-address`` a local Ray instance starts on the loopback interface (Ray's embedded
default), so the same command runs on a laptop; with one, it joins that cluster (every node needs
vlm-doctor installed, and the paths must be readable there: a shared file system, or the images
are reported missing by the worker that could not read them, never a crash). A block whose worker
dies is retried by Ray (map tasks retry without limit); its result is taken once.

Ray is an optional extra (``pip install 'vlm-doctor[ray]'``); the core never imports it.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import signal
from collections.abc import Callable, Sequence
from typing import Any

from doctor.errors import UsageError
from doctor.io.jsonstream import is_url

RAY_HINT = "pip install 'vlm-doctor[ray]'"
IMAGE_BATCH = 256
# Fault injection for the tests (Options.extra): a path; the first worker to find that file
# missing creates it and kills itself (SIGKILL) after computing its block's result, before
# returning it, so a lost worker and Ray's retry of its block are exercised for real.
KILL_ONCE = "ray_test_kill_once"

_session: dict[str, Any] = {}


def ray_ready(options: Any) -> Any:
    """The ``ray`` module, initialised once per process (joined or started), shut down at exit."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--engine ray needs Ray, which is not installed: {RAY_HINT}") from None
    address = getattr(options, "ray_address", None)
    if address:
        _reachable(address)  # even when this process already runs Ray: the address given must answer
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                jobs = getattr(options, "jobs", 0) or None
                ray.init(num_cpus=jobs, _node_ip_address="127.0.0.1", **kwargs)
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError from ray.init
            raise UsageError(f"--engine ray: cannot {'join ' + address if address else 'start Ray'}: "
                             f"{type(e).__name__}: {e}") from None
        _session["owner"] = True
        atexit.register(_shutdown)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = bool(getattr(options, "progress", False))
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data"):  # findings go to the report; Ray's own chatter stays in its logs
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``host:port`` (or ``ray://host:port``) nobody answers: ``ray.init`` would
    retry for minutes. ``auto`` and other forms are left to Ray."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise UsageError(f"--ray-address {address}: nothing answers there ({e.strerror or e}); start the cluster "
                         "(ray start --head) or leave --ray-address out to start Ray on this machine") from None


def _shutdown() -> None:
    if _session.pop("owner", False):
        import ray

        ray.shutdown()


def map_blocks(options: Any, fn: Callable[[Any], Any], blocks: Sequence[Any]) -> list[Any]:
    """``[fn(b) for b in blocks]`` on the cluster, one Ray Data block per item, results in order."""
    if not blocks:
        return []
    ray = ray_ready(options)
    items = [{"k": k, "payload": pickle.dumps(b)} for k, b in enumerate(blocks)]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # Ray Data retries a map task whose worker died without limit (its remote_fn default,
    # max_retries=-1); a block's result is taken once, whichever attempt delivered it.
    kill_once = (getattr(options, "extra", None) or {}).get(KILL_ONCE)
    rows = ds.map_batches(_Apply(fn, kill_once), batch_size=1, batch_format="numpy").take_all()
    results: dict[int, Any] = {}
    for row in rows:
        results.setdefault(int(row["k"]), pickle.loads(row["result"]))  # a retried block counts once
    missing = [k for k in range(len(blocks)) if k not in results]
    if missing:  # Ray gave up on a block (its retries spent): nothing may be lost silently
        raise RuntimeError(f"Ray returned no result for {len(missing)} block(s), first {missing[:5]}")
    return [results[k] for k in range(len(blocks))]


class _Apply:
    """The per-block function Ray ships to the workers (a picklable callable)."""

    def __init__(self, fn: Callable[[Any], Any], kill_once: str | None = None) -> None:
        self.fn = fn
        self.kill_once = kill_once

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = []
        for payload in batch["payload"]:
            result = self.fn(pickle.loads(payload))
            if self.kill_once:
                _die_once(self.kill_once)
            out.append(pickle.dumps(result))
        return {"k": batch["k"], "result": out}


def _die_once(marker: str) -> None:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


class Unreadable:
    """A block's result when its worker could not read the dataset (a URL it cannot reach, a path
    not mounted there): the driver then reads the file itself, as without Ray."""

    def __init__(self, error: str) -> None:
        self.error = error


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    from doctor.checks.dataset.tables import TableUnavailable  # pyarrow's "cannot open" on a worker

    try:
        return fn(*args)
    except (OSError, TableUnavailable) as e:
        return Unreadable(f"{type(e).__name__}: {e}")


def _any_unreadable(results: list[Any]) -> bool:
    return any(isinstance(r, Unreadable) for r in results)


def _process_local(path: str) -> bool:
    """A URL only this process can read (fsspec's memory:// lives in one process's memory)."""
    return str(path).startswith("memory://")


# ---- images -------------------------------------------------------------------------------------
class ProbeBatch:
    """One batch of distinct image paths, probed on a worker as the thread pool does locally (with
    a ``Prober`` for a folder, a ``RemoteProber`` for an object-storage URL; each is picklable)."""

    def __init__(self, prober: Any) -> None:
        self.prober = prober

    def __call__(self, refs: list[str]) -> list[tuple]:
        return self.prober.batch(refs)


def probe_images(options: Any, prober: Any, refs: list[str]) -> list[tuple]:
    if _process_local(getattr(prober, "root", "")):
        return prober.batch(refs)  # storage only this process sees: its workers would find nothing
    batches = [refs[k:k + IMAGE_BATCH] for k in range(0, len(refs), IMAGE_BATCH)]
    out: list[tuple] = []
    for result in map_blocks(options, ProbeBatch(prober), batches):
        out.extend(result)
    return out


# ---- parquet / Arrow ----------------------------------------------------------------------------
class ScanGroups:
    """One block of row groups of a table, scanned on a worker."""

    def __init__(self, path: str, options: Any) -> None:
        self.path = path
        self.options = {k: getattr(options, k, None) for k in ("images", "image_folder", "decode_sample")}

    def __call__(self, block: tuple[list[int], int]) -> Any:
        return _guarded(self.local, block)

    def local(self, block: tuple[list[int], int]) -> Any:
        from types import SimpleNamespace

        from doctor.checks.dataset.tables import scan_part

        groups, first_row = block
        return scan_part(self.path, SimpleNamespace(**self.options), groups, first_row)


# ---- JSON Lines ---------------------------------------------------------------------------------
PART_BYTES = 64 << 20  # a JSON Lines file is cut into parts of about this size (at least 2 parts)
MIN_PART_BYTES = 1 << 20  # smaller files are read by the driver: a task costs more than reading


class ScanLines:
    """One byte range of a JSON Lines file, scanned on a worker."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.fmt = fmt

    def __call__(self, block: tuple[int, int, int, int, int]) -> Any:
        from doctor.checks.dataset.scan import scan_part

        start, end, first, first_line, nonblank = block
        return _guarded(scan_part, self.path, self.fmt, start, end, first, first_line, nonblank)


class CountLines:
    """Pass 1 over one byte range of a JSON Lines file given as a URL, on a worker: its newlines
    and blank lines (for a local file the driver counts them itself, memory-mapped)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, block: tuple[int, int]) -> Any:
        return _guarded(_count_lines, self.path, *block)


def _count_lines(path: str, start: int, end: int) -> tuple[int, int]:
    from doctor.io.jsonstream import open_binary

    with open_binary(path) as f:
        f.seek(start)
        chunk = f.read(end - start)
    return chunk.count(b"\n"), _line_pieces(chunk)


def _line_pieces(chunk: bytes) -> int:
    """Non-blank lines of ``chunk`` (the records a part holds when each is on its own line)."""
    newlines = chunk.count(b"\n")
    return newlines + (0 if chunk.endswith(b"\n") else 1) - _blank_lines(chunk)


def scan_json_lines(path: str, options: Any) -> Any:
    """``scan.scan_dataset`` of a JSON Lines file with its byte ranges scanned across the cluster;
    None when the file is not one to cut (an array, too small, no known format in its first
    records, a BOM) or a part could not be placed exactly: the caller reads it in one process."""
    import mmap
    import time

    from doctor.checks.dataset.scan import DETECT_WITHIN, fold_parts

    started = time.perf_counter()
    if _process_local(path):
        return None
    if is_url(path):
        return _scan_json_url(path, options, started)
    size = os.path.getsize(path)
    if size < 2 * MIN_PART_BYTES:
        return None
    array = False
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        head = mm[:3]
        if head.startswith(b"\xef\xbb\xbf") or mm[:4096].lstrip()[:1] == b"":
            return None
        if mm[:4096].lstrip()[:1] == b"[":
            array = True
        fmt = None if array else _format_of(path, DETECT_WITHIN)
        if fmt is None:
            return None if not array else scan_json_array(path, options)
        count = max(2, min(size // MIN_PART_BYTES, -(-size // PART_BYTES)))
        cuts = [0]
        for k in range(1, count):
            nl = mm.find(b"\n", k * size // count)
            if nl < 0 or nl + 1 >= size:
                break
            if nl + 1 > cuts[-1]:
                cuts.append(nl + 1)
        cuts.append(size)
        blocks, first, line = [], 0, 1
        for a, b in zip(cuts, cuts[1:], strict=False):
            chunk = mm[a:b]
            newlines = chunk.count(b"\n")
            pieces = newlines + (0 if chunk.endswith(b"\n") else 1)
            nonblank = pieces - _blank_lines(chunk)
            blocks.append((a, b, first, line, nonblank))
            first += nonblank
            line += newlines
    parts = map_blocks(options, ScanLines(path, fmt), blocks)
    if _any_unreadable(parts):
        return None
    return fold_parts(path, fmt, parts, started)


def _scan_json_url(path: str, options: Any, started: float) -> Any:
    """``scan_json_lines`` of a dataset given as a URL: the driver reads only the head and a few
    bytes at each cut; the workers count the lines of their ranges, then check them."""
    from doctor.checks.dataset.scan import DETECT_WITHIN, fold_parts

    from doctor.io.jsonstream import file_size, open_binary

    size = file_size(path)
    if size < 2 * MIN_PART_BYTES:
        return None
    with open_binary(path) as f:
        head = f.read(4096)
        if head.startswith(b"\xef\xbb\xbf") or head.lstrip()[:1] == b"":
            return None
        if head.lstrip()[:1] == b"[":
            return scan_json_array(path, options)
        fmt = _format_of(path, DETECT_WITHIN)
        if fmt is None:
            return None
        count = max(2, min(size // MIN_PART_BYTES, -(-size // PART_BYTES)))
        cuts = [0]
        for k in range(1, count):
            nl = _find_newline(f, k * size // count, size)
            if nl is None or nl + 1 >= size:
                break
            if nl + 1 > cuts[-1]:
                cuts.append(nl + 1)
        cuts.append(size)
    ranges = list(zip(cuts, cuts[1:], strict=False))
    counts = map_blocks(options, CountLines(path), ranges)
    if _any_unreadable(counts):
        return None
    blocks, first, line = [], 0, 1
    for (a, b), (newlines, nonblank) in zip(ranges, counts, strict=True):
        blocks.append((a, b, first, line, nonblank))
        first += nonblank
        line += newlines
    parts = map_blocks(options, ScanLines(path, fmt), blocks)
    if _any_unreadable(parts):
        return None
    return fold_parts(path, fmt, parts, started)


def _find_newline(f: Any, at: int, size: int) -> int | None:
    """The offset of the first newline at or after ``at`` (read in small steps)."""
    f.seek(at)
    while at < size:
        chunk = f.read(64 << 10)
        if not chunk:
            return None
        k = chunk.find(b"\n")
        if k >= 0:
            return at + k
        at += len(chunk)
    return None


def _blank_lines(chunk: bytes) -> int:
    """Lines of ``chunk`` holding only whitespace (JSON Lines readers skip them; no record)."""
    import re

    n = len(re.findall(rb"(?m)^[ \t\r]*$", chunk))
    return n - (1 if chunk.endswith(b"\n") else 0)  # the empty match after the last newline


def _format_of(path: str, within: int) -> str | None:
    """The records' format, decided as the single-process scan decides it: by the first record
    (of the first ``within``) whose keys name one."""
    from doctor.checks.dataset.records import detect_format

    from doctor.io.jsonstream import JsonStream

    seen = values = 0
    for rec, _line, _col, _off in JsonStream(path, fast=False):
        values += 1
        if type(rec) is dict:
            fmt = detect_format(rec)
            if fmt is not None:
                return fmt
            seen += 1
        if seen >= within or values >= 10 * within:
            return None  # undecided (or no format): one process reads it and says so
    return None


# ---- JSON arrays --------------------------------------------------------------------------------
class CountArray:
    """Pass 1 over one byte range of a JSON array, on a worker: where its first element starts and
    how many start in it (``scan.count_array_part``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, block: tuple[int, int, int | None]) -> Any:
        from doctor.checks.dataset.scan import count_array_part

        return _guarded(count_array_part, self.path, *block)


class ScanArray:
    """Pass 2 over one byte range of a JSON array, on a worker: the record rules on its elements,
    numbered and positioned as in the whole file (``scan.scan_array_part``)."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.fmt = fmt

    def __call__(self, block: tuple[int, int, int, int, int, int]) -> Any:
        from doctor.checks.dataset.scan import scan_array_part

        return _guarded(scan_array_part, self.path, self.fmt, *block)


def array_start(path: str) -> int | None:
    """The byte offset of a JSON array's first element; None when the file is not an array with
    one (a BOM, another top level, an empty array), which one process reads."""
    from doctor.io.jsonstream import open_binary

    with open_binary(path) as f:
        head = f.read(64 << 10)
    if head.startswith(b"\xef\xbb\xbf"):
        return None
    body = head.lstrip(b" \t\n\r")
    if body[:1] != b"[":
        return None
    at = len(head) - len(body) + 1
    rest = head[at:].lstrip(b" \t\n\r")
    if rest[:1] in (b"]", b""):
        return None
    return len(head) - len(rest)


def cut_array(size: int, first: int, parts: list[Any], recount: Callable[..., Any]) -> list[tuple] | None:
    """Verify the chain of pass 1's parts and give pass 2's blocks ((start, end, first record, cut,
    line and column at the cut), elements in it); None when the array cannot be placed exactly (a parse error: one
    process reads it and reports what it reports).

    Part 0 starts at the array's first element (found by the driver). If part k is right, the
    element after its last one starts where it says (``next``); part k+1 is right when its guess
    is that offset. A part whose guess differs (inside a string, a nested object, after an
    element that is not an object) is counted again from the known offset (``recount``, on the
    driver); a part in which no element starts (one element spans it) is skipped."""
    cuts = [b.cut for b in parts] + [size]
    blocks = []
    expected: int | None = first
    index, line, column = 0, 1, 1
    from doctor.io.jsonstream import advance

    for k, part in enumerate(parts):
        cut, end = cuts[k], cuts[k + 1]
        if expected is not None and expected < end:
            result = part.result
            if result.start != expected or result.error:
                result = recount(cut, end, expected)
            if result.error or result.start != expected:
                return None
            blocks.append(((expected, end, index, cut, line, column), result.records))
            index += result.records
            expected = result.next
        line, column = advance(line, column, part.result.stats)
    return blocks if expected is None else None


def scan_json_array(path: str, options: Any, run: Callable[[Any, list], list] | None = None,
                    part_bytes: int | None = None) -> Any:
    """``scan.scan_dataset`` of a JSON array with its byte ranges read across the cluster, in two
    passes (find and count the elements of each range, verified as a chain on the driver; then
    check them, numbered and positioned as in the whole file); None when one process must read it
    (too small, no known format in the first records, a BOM, a parse error anywhere). ``run``
    maps a block function over blocks (default: on the cluster, ``map_blocks``; the property
    tests pass a plain loop), ``part_bytes`` sets the part size (tests: tiny parts)."""
    import time
    from types import SimpleNamespace

    from doctor.checks.dataset.scan import DETECT_WITHIN, count_array_part, fold_array_parts

    from doctor.io.jsonstream import file_size

    started = time.perf_counter()
    if run is None:
        def run(fn: Any, blocks: list) -> list:
            return map_blocks(options, fn, blocks)
    size = file_size(path)
    if part_bytes is None and size < 2 * MIN_PART_BYTES:
        return None
    first = array_start(path)
    if first is None:
        return None
    fmt = _format_of(path, DETECT_WITHIN)
    if fmt is None:
        return None
    if part_bytes is None:
        count = max(2, min(size // MIN_PART_BYTES, -(-size // PART_BYTES)))
    else:
        count = max(1, -(-size // part_bytes))
    cuts = [k * size // count for k in range(count)] + [size]
    blocks = [(a, b, first if k == 0 else None) for k, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))]
    counted = run(CountArray(path), blocks)
    if _any_unreadable(counted):
        return None
    parts = [SimpleNamespace(cut=a, result=r) for (a, _b, _s), r in zip(blocks, counted, strict=True)]
    plan = cut_array(size, first, parts, lambda cut, end, start: count_array_part(path, cut, end, start))
    if plan is None:
        return None
    scanned = run(ScanArray(path, fmt), [block for block, _n in plan])
    if _any_unreadable(scanned):
        return None
    if [p.records for p in scanned] != [n for _block, n in plan]:
        return None  # pass 2 read other elements than pass 1 counted: never fold those
    return fold_array_parts(path, fmt, scanned, started, size)


def scan_table(path: str, options: Any) -> Any:
    """``tables.scan_table`` with one block per row group, scanned across the cluster."""
    import time

    from doctor.checks.dataset.tables import finish, group_rows, merge_parts, new_scan

    started = time.perf_counter()
    scan = new_scan(path, options)
    if scan.fmt is not None:
        blocks = [([g], first) for g, first in enumerate(group_rows(path))]
        if _process_local(path):
            parts = [ScanGroups(path, options)(block) for block in blocks]
        else:
            parts = map_blocks(options, ScanGroups(path, options), blocks)
        # a block its worker could not read (the URL unreachable there): read here, as without Ray
        parts = [ScanGroups(path, options).local(block) if isinstance(p, Unreadable) else p
                 for p, block in zip(parts, blocks, strict=True)]
        merge_parts(scan, parts)
    return finish(scan, options, started)

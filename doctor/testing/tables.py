"""Hugging Face datasets on disk for tests: parquet shards and Arrow files whose ``images`` column
holds ``{"bytes": ..., "path": ...}`` structs, the storage ``datasets.Image`` writes (and what
TRL's vision examples load). Written with pyarrow alone, with the ``huggingface`` schema metadata
``datasets`` itself adds, so ``datasets.load_dataset("parquet", ...)`` would read the same files.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from doctor.testing.images import pil_image

# Planted problems, one row each (the rest of the rows are clean).
TABLE_PROBLEMS = ("empty-bytes", "truncated-jpeg", "not-an-image", "count-mismatch", "no-image-for-placeholder")


def image_bytes(size: tuple[int, int] = (48, 40), fmt: str = "PNG", seed: int = 0) -> bytes:
    buf = io.BytesIO()
    pil_image(size, seed=seed).save(buf, format=fmt)
    return buf.getvalue()


def messages_row(images: list[bytes], question: str = "What is shown?", answer: str = "A test pattern.",
                 placeholders: int | None = None) -> dict[str, Any]:
    """One TRL-style row: typed content parts, one ``{"type": "image"}`` per image."""
    n = len(images) if placeholders is None else placeholders
    content = [{"type": "image", "text": None} for _ in range(n)] + [{"type": "text", "text": question}]
    return {
        "messages": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "images": [{"bytes": b, "path": None} for b in images],
    }


def make_rows(n: int, problems: Iterable[str] = (), seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``n`` rows alternating JPEG and PNG images of several aspect ratios; each planted problem
    replaces one row (spread over the table). Returns (rows, {problem: row})."""
    sizes = [(48, 40), (40, 64), (64, 32), (32, 32)]
    rows = [messages_row([image_bytes(sizes[i % 4], "JPEG" if i % 2 else "PNG", seed + i)]) for i in range(n)]
    planted: dict[str, int] = {}
    problems = list(problems)
    for k, problem in enumerate(problems):
        if problem not in TABLE_PROBLEMS:
            raise ValueError(f"unknown problem {problem!r}; known: {TABLE_PROBLEMS}")
        row = (k + 1) * n // (len(problems) + 1)
        planted[problem] = row
        if problem == "empty-bytes":
            rows[row]["images"] = [{"bytes": b"", "path": None}]
        elif problem == "truncated-jpeg":
            data = image_bytes((64, 64), "JPEG", seed + row)
            rows[row]["images"] = [{"bytes": data[: len(data) // 2], "path": None}]
        elif problem == "not-an-image":
            rows[row]["images"] = [{"bytes": b"<html>404 Not Found</html>", "path": None}]
        elif problem == "count-mismatch":
            rows[row] = messages_row([image_bytes(seed=row), image_bytes(seed=row + 1)], placeholders=1)
        elif problem == "no-image-for-placeholder":
            rows[row] = messages_row([], placeholders=1)
    return rows, planted


def _table(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    part = pa.struct([("type", pa.string()), ("text", pa.string())])
    message = pa.struct([("role", pa.string()), ("content", pa.list_(part))])
    schema = pa.schema([("messages", pa.list_(message)), ("images", pa.list_(image))])
    features = {"messages": [{"role": {"dtype": "string", "_type": "Value"},
                              "content": [{"type": {"dtype": "string", "_type": "Value"},
                                           "text": {"dtype": "string", "_type": "Value"}}]}],
                "images": [{"_type": "Image"}]}
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    return pa.Table.from_pylist(rows, schema=schema)


def write_parquet(path: str | Path, rows: list[dict[str, Any]], row_group_size: int = 256) -> Path:
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_table(rows), path, row_group_size=row_group_size)
    return path


def write_arrow(path: str | Path, rows: list[dict[str, Any]], batch_size: int = 256, stream: bool = True) -> Path:
    """An Arrow IPC file; ``stream=True`` is the format ``Dataset.save_to_disk`` writes."""
    import pyarrow as pa

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = _table(rows)
    with pa.OSFile(str(path), "wb") as sink:
        opener = pa.ipc.new_stream if stream else pa.ipc.new_file
        with opener(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=batch_size):
                writer.write_batch(batch)
    return path


def make_save_to_disk(folder: str | Path, rows: list[dict[str, Any]], shards: int = 2) -> Path:
    """A ``Dataset.save_to_disk`` folder: data-0000N-of-0000M.arrow, dataset_info.json, state.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    per = (len(rows) + shards - 1) // shards
    names = []
    for s in range(shards):
        name = f"data-{s:05d}-of-{shards:05d}.arrow"
        write_arrow(folder / name, rows[s * per:(s + 1) * per])
        names.append({"filename": name})
    (folder / "dataset_info.json").write_text(json.dumps({"features": {"images": [{"_type": "Image"}]}}))
    (folder / "state.json").write_text(json.dumps({"_data_files": names, "_fingerprint": "0", "_split": None}))
    return folder

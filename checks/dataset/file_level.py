"""File-level problems of a dataset, decided after the streaming pass: how the top level looks
compared with what the loaders read. haotian-liu/LLaVA's ``LazySupervisedDataset`` does
``json.load(open(data_path))`` (one JSON array); JSON Lines readers (HF ``datasets``,
LLaMA-Factory, LLaVA-NeXT for ``.jsonl``) read one value per line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import Problem, kind, repair

from doctor.findings import Severity

if TYPE_CHECKING:
    from doctor.checks.dataset.scan import DatasetScan


def file_problems(scan: DatasetScan) -> None:
    P = scan.problems
    ext = scan.extension
    if scan.bom:
        P.add(DAT.UTF8_BOM, Problem(
            "the file starts with a UTF-8 byte-order mark: json.load(open(path)) and json.loads on the first "
            "line raise \"Unexpected UTF-8 BOM (decode using utf-8-sig)\"", None, None, 1, 1,
            fix=repair("write the file without the byte-order mark")))
    if scan.trailing_comma:
        line, column = scan.trailing_comma
        P.add(DAT.TRAILING_COMMA, Problem(
            "a comma after the last record (\"},\" before \"]\"): json.load raises \"Expecting value\" "
            "(the sample in LLaVA's docs/Finetune_Custom_Data.md has this mistake)", None, None, line, column,
            fix=repair("remove the trailing comma")))
    if scan.layout == "values":
        if ext == ".jsonl":
            _jsonl(scan)
        else:
            _values_in_json(scan)
    elif scan.layout == "array" and ext == ".jsonl":
        P.add(DAT.ARRAY_IN_JSON_LINES_FILE, Problem(
            "the file is named .jsonl but holds one JSON array: datasets' json builder (LLaMA-Factory, TRL) "
            "and LLaVA's json.load still load it, whole, into memory; line-by-line JSON Lines readers "
            "(pandas.read_json(lines=True), `json.loads` per line) fail on the first line", None, None, 1, 1,
            severity=Severity.WARNING, fix=repair("write one record per line (.fixed.jsonl)")))
    if scan.records == 0 and scan.stopped_at is None:
        what = "no records: the file is empty" if scan.layout == "empty" else "no records: the array is empty"
        P.add(DAT.EMPTY_DATASET, Problem(f"{what}; the trainer stops with \"num_samples=0\"", None, None, 1, 1))
    checker = scan.checker
    if scan.fmt == "llava" and checker is not None and checker.multi_image:
        first = checker.multi_image_first
        P.add(DAT.MULTI_IMAGE_RECORDS, Problem(
            f"{checker.multi_image:,} record(s) have a list of images under \"image\", first "
            f"record {first}: haotian-liu/LLaVA's train.py opens record[\"image\"] as one path (a list raises "
            "TypeError); LLaVA-NeXT and transformers' processors take lists (records with \"images\" are "
            "LLaMA-Factory sharegpt records, which take lists)", first, f"/{first}", scan.line_of(first) if first is not None else None,
            severity=Severity.INFO))


def _jsonl(scan: DatasetScan) -> None:
    P = scan.problems
    if scan.multiline_values or scan.shared_lines:
        parts = []
        if scan.multiline_values:
            parts.append(f"{scan.multiline_values:,} record(s) span several lines")
        if scan.shared_lines:
            parts.append(f"{scan.shared_lines:,} record(s) share a line with the one before")
        P.add(DAT.NOT_ONE_RECORD_PER_LINE, Problem(
            f"not JSON Lines: {' and '.join(parts)}; JSON Lines readers parse one record per line and fail",
            None, None, None, None, fix=repair("write one record per line")))
    if scan.fmt == "llava":
        P.add(DAT.JSON_LINES_FOR_LLAVA, Problem(
            "LLaVA-format records in JSON Lines: haotian-liu/LLaVA's train.py reads the data with json.load "
            "and fails with \"Extra data\" (LLaVA-NeXT and LLaMA-Factory read .jsonl)", None, None, 1, 1,
            severity=Severity.INFO, fix=repair("write a JSON array copy (.fixed.json)")))


def _values_in_json(scan: DatasetScan) -> None:
    P = scan.problems
    if scan.records > 1:
        # LLaVA's train.py json.loads the file; datasets' "json" builder (LLaMA-Factory, TRL) reads
        # JSON Lines whatever the extension, so for their formats it is only a warning.
        datasets_format = scan.fmt in ("messages", "alpaca")
        P.add(DAT.JSON_LINES_IN_JSON_FILE, Problem(
            f"the file holds {scan.records:,} top-level values (JSON Lines), not one array: json.load raises "
            "\"Extra data\" after the first record"
            + ("; datasets' json loader (LLaMA-Factory, TRL) reads JSON Lines in a .json file" if datasets_format
               else ""), None, None, 1, 1, severity=Severity.WARNING if datasets_format else None,
            fix=repair("write the records as one JSON array")))
        return
    value = scan.first_value
    if scan.records != 1 or scan.stopped_at is not None and scan.stopped_at.kind != "too-large":
        return
    if isinstance(value, dict) and ("conversations" in value or "messages" in value):
        P.add(DAT.TOP_LEVEL_NOT_ARRAY, Problem(
            "the top level is one record, not an array of records: LLaVA's dataset indexes the loaded value "
            "(data[i]) and gets the record's keys instead of records", None, None, 1, 1,
            fix=repair("wrap the record in an array")))
        return
    key = wrapped_records_key(value)
    if key is not None:
        P.add(DAT.TOP_LEVEL_NOT_ARRAY, Problem(
            f"the top level is an object; the records are under \"{key}\" ({len(value[key]):,} of them, not "
            "checked): LLaVA's json.load gets a dict, and len()/indexing do not give records", None, None, 1, 1,
            fix=repair(f"write the array under \"{key}\" as the dataset")))
        return
    what = "one JSON value larger than the streaming limit" if scan.stopped_at else kind(value)
    P.add(DAT.TOP_LEVEL_NOT_ARRAY, Problem(f"the top level is {what}, not an array of records", None, None, 1, 1))


def wrapped_records_key(value: Any) -> str | None:
    """The key of an object whose value is the list of records (``{"data": [{...}, ...]}``)."""
    if not isinstance(value, dict):
        return None
    for key, inner in value.items():
        if isinstance(inner, list) and inner and all(isinstance(r, dict) for r in inner[:100]):
            return key
    return None

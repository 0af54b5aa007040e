"""DAT001-DAT009, DAT017, DAT018: can the loaders read the file at all?"""

from __future__ import annotations

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DatasetCheck

from doctor.findings import Severity
from doctor.registry import register


@register
class InvalidJson(DatasetCheck):
    """The file is not valid JSON (in JSON Lines: a line is not).

    ## What it does
    Streams the file and reports a syntax error with its line and column: the first one in a JSON
    array (nothing after it is reachable), every bad line in a JSON Lines file.

    ## Why is this bad?
    LLaVA's train.py loads the whole file with `json.load`: one error and training does not start
    (`json.decoder.JSONDecodeError: Expecting ',' delimiter`). JSON Lines readers stop at the line.

    Severity: error, because `json.load` (LLaVA) and JSON Lines readers (datasets, LLaMA-Factory, TRL)
    raise.

    ## Example
    `[{"id": "1", ...} {"id": "2", ...}]` (a missing comma between two records).

    ## How to fix
    Edit the file at the reported line and column. In JSON Lines, `--fix --unsafe-fixes` moves the
    bad lines to `<name>.rejected.jsonl`.
    """

    code = DAT.INVALID_JSON
    name = "invalid-json"
    unit = "lines"


@register
class NotUtf8(DatasetCheck):
    """The file is not valid UTF-8.

    ## What it does
    Decodes the file as UTF-8 while streaming it and reports the first invalid byte: its offset,
    line and column.

    ## Why is this bad?
    `json.load(open(path))` decodes UTF-8 (on Linux) and raises `UnicodeDecodeError`; `datasets`
    refuses the file too. Nothing after the bad byte is checked.

    Severity: error, because the UTF-8 decode raises in every loader.

    ## Example
    A file saved as Latin-1 or GBK: `"value": "caf\\xe9"`.

    ## How to fix
    Re-encode the file as UTF-8 (`iconv -f GBK -t UTF-8 in.json > out.json`), or fix the bytes at the
    reported offset.
    """

    code = DAT.NOT_UTF8
    name = "not-utf8"


@register
class Utf8Bom(DatasetCheck):
    """The file starts with a UTF-8 byte-order mark.

    ## What it does
    Looks at the first three bytes of the file.

    ## Why is this bad?
    Python's `json` refuses text that starts with U+FEFF: `json.load(open(path))` raises
    "Unexpected UTF-8 BOM (decode using utf-8-sig)". Windows editors add the mark silently.

    Severity: error, because `json.load`(open(path)) raises "Unexpected UTF-8 BOM".

    ## Example
    The bytes `EF BB BF` before `[`.

    ## How to fix
    Save without the mark; `--fix` writes a copy without it.
    """

    code = DAT.UTF8_BOM
    name = "utf8-bom"


@register
class TrailingComma(DatasetCheck):
    """A comma after the last record of the array.

    ## What it does
    Reports `},` followed by `]`, with the comma's line and column.

    ## Why is this bad?
    JSON has no trailing commas: `json.load` raises "Expecting value" at the `]`. The sample in
    LLaVA's docs/Finetune_Custom_Data.md has this mistake, so hand-made files copy it.

    Severity: error, because `json.load` raises "Expecting value".

    ## Example
    `[{"id": "1", "conversations": [...]},\\n]`

    ## How to fix
    Delete the comma; `--fix` writes a copy without it.
    """

    code = DAT.TRAILING_COMMA
    name = "trailing-comma"


@register
class JsonLinesInJsonFile(DatasetCheck):
    """A `.json` file holds JSON Lines (several top-level values), not one array.

    ## What it does
    Counts the top-level values of a file that does not start with `[`.

    ## Why is this bad?
    LLaVA's train.py calls `json.load`, which raises "Extra data" after the first record.

    Severity: error for LLaVA records, because `json.load` raises "Extra data"; a warning for
    messages and alpaca records, which LLaMA-Factory and TRL load with datasets' "json" builder, which
    reads JSON Lines whatever the file is called.

    ## Example
    `{"id": "1", ...}\\n{"id": "2", ...}` saved as `data.json`.

    ## How to fix
    Wrap the records in one array, or rename the file to `.jsonl` for a loader that reads JSON Lines;
    `--fix` writes the records as one JSON array.
    """

    code = DAT.JSON_LINES_IN_JSON_FILE
    name = "json-lines-in-json-file"


@register
class JsonLinesForLlava(DatasetCheck):
    """LLaVA-format records in a JSON Lines file.

    ## What it does
    Notes a `.jsonl` file whose records use LLaVA's `conversations` format.

    ## Why is this bad?
    haotian-liu/LLaVA's train.py reads its data with `json.load` and fails with "Extra data" on JSON
    Lines. LLaVA-NeXT and LLaMA-Factory read `.jsonl`, so this is only information for them.

    Severity: info, because LLaVA-NeXT and LLaMA-Factory read it; only haotian-liu/LLaVA does not,
    and DAT005 covers a `.json` file.

    ## Example
    `train.jsonl` with `{"id": ..., "image": ..., "conversations": [...]}` per line, passed to
    `llava/train/train_mem.py --data_path`.

    ## How to fix
    For haotian-liu/LLaVA, convert to one JSON array; `--fix` writes `<name>.fixed.json`.
    """

    code = DAT.JSON_LINES_FOR_LLAVA
    name = "json-lines-for-llava"
    severity = Severity.INFO


@register
class ArrayInJsonLinesFile(DatasetCheck):
    """A `.jsonl` file holds one JSON array.

    ## What it does
    Reports a `.jsonl` file whose content starts with `[`.

    ## Why is this bad?
    The name promises one record per line and the content breaks that promise. `datasets`'
    json builder (what LLaMA-Factory and TRL load with; tested with datasets 3.6, 4.0 and 5.2)
    falls back to `json.load` of the whole file when pyarrow's line reader refuses it, and LLaVA
    `json.load`s any file: both load it, into memory at once, so no streaming. Readers that really
    go line by line (`pandas.read_json(lines=True)`, `for line in f: json.loads(line)`, shell
    tools that split or shuffle lines) fail on the first line, `[`.

    Severity: warning, because the loaders of LLaMA-Factory, TRL and LLaVA read it; only
    line-by-line readers fail.

    ## Example
    `json.dump(records, open("train.jsonl", "w"), indent=2)`

    ## How to fix
    Write one record per line, or rename the file to `.json`; `--fix` writes `<name>.fixed.jsonl`.
    """

    code = DAT.ARRAY_IN_JSON_LINES_FILE
    name = "array-in-json-lines-file"
    severity = Severity.WARNING


@register
class TopLevelNotArray(DatasetCheck):
    """The top level is one object or value, not an array of records.

    ## What it does
    Reports a `.json` file holding a single record, an object that wraps the records
    (`{"data": [...]}`), a scalar, or one value too large to stream.

    ## Why is this bad?
    LLaVA's dataset takes `len()` of the loaded value and indexes it: a dict gives its keys (or a
    KeyError), never records.

    Severity: error, because LLaVA's dataset indexes the loaded value as a list of records and
    fails.

    ## Example
    `{"data": [{"id": "1", "conversations": [...]}, ...]}`

    ## How to fix
    Store the records as the top-level array; `--fix` wraps a single record or unwraps the key that
    holds the records.
    """

    code = DAT.TOP_LEVEL_NOT_ARRAY
    name = "top-level-not-array"


@register
class EmptyDataset(DatasetCheck):
    """The dataset has no records.

    ## What it does
    Reports an empty file, a file of whitespace, or `[]`.

    ## Why is this bad?
    The trainer stops with "num_samples should be a positive integer value, but got num_samples=0",
    after the model has loaded, minutes into the job.

    Severity: error, because the trainer raises on zero samples.

    ## Example
    A conversion script that wrote `[]` because its filter matched nothing.

    ## How to fix
    Regenerate the file; check the conversion script's filters and paths.
    """

    code = DAT.EMPTY_DATASET
    name = "empty-dataset"


@register
class NestingTooDeep(DatasetCheck):
    """A record is nested deeper than Python's json module can parse.

    ## What it does
    Reports a value on which `json` raises RecursionError (about 1000 nested arrays or objects).

    ## Why is this bad?
    `json.load` crashes with "RecursionError: maximum recursion depth exceeded while decoding a
    JSON array", and other tools on the pipeline (older orjson) crash harder. Real records never
    nest this deep: the file is damaged or hostile.

    Severity: error, because json raises RecursionError.

    ## Example
    `[[[[[[...` repeated thousands of times.

    ## How to fix
    Regenerate the record or remove it; `--fix --unsafe-fixes` drops it in JSON Lines.
    """

    code = DAT.NESTING_TOO_DEEP
    name = "nesting-too-deep"


@register
class NotOneRecordPerLine(DatasetCheck):
    """A `.jsonl` file whose records span lines or share them.

    ## What it does
    Counts records spread over several lines (pretty-printed) and records that start on the line
    where the previous one ended.

    ## Why is this bad?
    JSON Lines readers take exactly one record per line; a pretty-printed record is split into
    invalid pieces and loading fails.

    Severity: error, because JSON Lines readers fail on the split record.

    ## Example
    `json.dump(record, f, indent=2)` once per record into `train.jsonl`.

    ## How to fix
    Write each record with `json.dumps(record)` (no indent) plus a newline; `--fix` rewrites the file.
    """

    code = DAT.NOT_ONE_RECORD_PER_LINE
    name = "not-one-record-per-line"

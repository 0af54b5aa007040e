"""DAT010-DAT016: records and their fields."""

from __future__ import annotations

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DatasetCheck

from doctor.findings import Severity
from doctor.registry import register


@register
class RecordNotObject(DatasetCheck):
    """A record is not a JSON object.

    ## What it does
    Reports array elements (or JSON Lines values) that are strings, numbers, lists or null.

    ## Why is this bad?
    LLaVA's dataset does `'image' in sources[0]` and `sources[0]["conversations"]`: a string gives
    nonsense, a list or number raises TypeError in the middle of an epoch.

    Severity: error, because the loader raises TypeError on the record.

    ## Example
    `[{"id": "1", "conversations": [...]}, "1.jpg", null]`

    ## How to fix
    Remove the stray values; `--fix --unsafe-fixes` drops them to `<name>.rejected.jsonl`.
    """

    code = DAT.RECORD_NOT_OBJECT
    name = "record-not-object"


@register
class UnknownRecordFormat(DatasetCheck):
    """The records are neither LLaVA (`conversations`) nor messages (`messages`) records.

    ## What it does
    Looks for `conversations` or `messages` in the first 100 records; when neither appears, the
    record checks cannot run and this says which keys the records have.

    ## Why is this bad?
    LLaVA's dataset reads `record["conversations"]` (KeyError); TRL and LLaMA-Factory read
    `messages`. An Alpaca-style file (`instruction`/`output`) or a VQA dump trains nothing here.

    Severity: error, because no loader knows the records (LLaVA raises KeyError on `conversations`).

    ## Example
    `[{"question": "...", "answer": "...", "image": "1.jpg"}]`

    ## How to fix
    Convert the records to `{"id", "image", "conversations": [{"from": "human", "value":
    "<image>\\n..."}, {"from": "gpt", "value": "..."}]}`.
    """

    code = DAT.UNKNOWN_RECORD_FORMAT
    name = "unknown-record-format"


@register
class MissingField(DatasetCheck):
    """A record lacks a field its loader reads.

    ## What it does
    Reports a missing `conversations` / `messages`, a turn without `from` / `role`, or without
    `value` / `content`, with the JSON pointer of the place.

    ## Why is this bad?
    The loaders index these fields directly: LLaVA's preprocess raises `KeyError: 'from'` or
    `KeyError: 'value'` when the batch holding the record comes up, hours into a run.

    Severity: error, because the loader indexes the field and raises KeyError.

    ## Example
    `{"from": "gpt", "text": "A cat."}` (`text` instead of `value`).

    ## How to fix
    Add the field, or drop the record: `--fix --unsafe-fixes` moves it to `<name>.rejected.jsonl`.
    """

    code = DAT.MISSING_FIELD
    name = "missing-field"


@register
class WrongFieldType(DatasetCheck):
    """A field has the wrong JSON type.

    ## What it does
    Checks that turns are objects, `value`/`content` are strings (or typed parts), `image` is a path
    string (or a list of them) and `conversations`/`messages` are lists.

    ## Why is this bad?
    LLaVA's `modality_lengths` calls `value.split()` (AttributeError on a number) and
    `os.path.join(image_folder, None)` raises TypeError, in a data-loader worker mid-epoch.

    Severity: error, because the loader raises TypeError / AttributeError on the value.

    ## Example
    `{"from": "gpt", "value": 42}` or `"image": null`.

    ## How to fix
    Store the value as the expected type, or drop the record with `--fix --unsafe-fixes`.
    """

    code = DAT.WRONG_FIELD_TYPE
    name = "wrong-field-type"


@register
class EmptyField(DatasetCheck):
    """A required field is empty: no turns, or an empty image path.

    ## What it does
    Reports `"conversations": []`, `"messages": []`, `"image": ""` and `"image": []`.

    ## Why is this bad?
    LLaVA's preprocess reads `source[0]` (IndexError on no turns); `os.path.join(image_folder, "")`
    is the folder itself, and `Image.open` raises IsADirectoryError.

    Severity: error, because the loader raises (IndexError, IsADirectoryError).

    ## Example
    `{"id": "7", "image": "", "conversations": [...]}`

    ## How to fix
    Fill the field or drop the record (`--fix --unsafe-fixes`); remove `image` for a text-only record.
    """

    code = DAT.EMPTY_FIELD
    name = "empty-field"


@register
class DuplicateId(DatasetCheck):
    """Two records share an id.

    ## What it does
    Hashes every `id` while streaming (12 bytes a record), sorts once at the end and reads the
    colliding records again to confirm and quote them.

    ## Why is this bad?
    The trainers do not use ids, but a duplicate id almost always means records were merged twice or
    a conversion loop wrote the same sample again: those samples get double weight, and
    evaluation splits by id leak.

    Severity: warning, because no loader fails and each record trains as written; the duplicate is a
    likely mistake, not a certain one.

    ## Example
    Two records with `"id": "000000033471"`.

    ## How to fix
    Deduplicate the source lists before merging; give generated records unique ids.
    """

    code = DAT.DUPLICATE_ID
    name = "duplicate-id"
    severity = Severity.WARNING


@register
class MixedFieldTypes(DatasetCheck):
    """Record ids have different JSON types across the file.

    ## What it does
    Counts the type of `id` in every record and reports a file where, say, most ids are strings and
    some are numbers.

    ## Why is this bad?
    `datasets.load_dataset("json", ...)`, which LLaMA-Factory and TRL load with, builds one Arrow
    column per field: datasets before 5.0 raise `DatasetGenerationError` ("Column(/id) changed
    from string to number", tested with 3.6 and 4.0; LLaMA-Factory pins `datasets<=4.0.0`);
    datasets 5 loads the column as its `Json` type and turns string ids that look like numbers into
    numbers (`"000123"` comes back as `123`, tested with 5.2).

    Severity: warning, because `json.load` (LLaVA) and datasets 5 load it; datasets before 5
    refuses the file, which this check names.

    ## Example
    `{"id": "000123", ...}` and `{"id": 124, ...}` in one file.

    ## How to fix
    Write every id as a string; `--fix` does it.
    """

    code = DAT.MIXED_FIELD_TYPES
    name = "mixed-field-types"
    severity = Severity.WARNING

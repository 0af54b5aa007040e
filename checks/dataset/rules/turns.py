"""DAT101-DAT114: conversation shape, roles and image placeholders."""

from __future__ import annotations

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DatasetCheck

from doctor.findings import Severity
from doctor.registry import register


@register
class UnknownRole(DatasetCheck):
    """A turn's role is one the format does not know.

    ## What it does
    LLaVA format: `from` must be `human` or `gpt`. Messages format: `role` must be `system`, `user`,
    `assistant` or a tool role. Common aliases (`user`/`assistant` in LLaVA data, `human`/`gpt` in
    messages data) are recognised and can be renamed.

    ## Why is this bad?
    LLaVA's preprocess maps roles with `roles = {"human": ..., "gpt": ...}`: `roles["user"]` raises
    `KeyError: 'user'` when the batch comes up. Chat templates skip or reject unknown roles.

    Severity: error, because LLaVA raises KeyError, TRL raises ValueError ("Invalid role"); an alias
    is still an error because the loader fails on it.

    ## Example
    `{"from": "user", "value": "<image>\\nWhat is this?"}` in a LLaVA file.

    ## How to fix
    Rename the roles; `--fix` maps the aliases (user -> human, assistant -> gpt, and back for the
    messages format). Other roles need a person, or `--unsafe-fixes` to drop the record.
    """

    code = DAT.UNKNOWN_ROLE
    name = "unknown-role"


@register
class FirstTurnNotUser(DatasetCheck):
    """The conversation opens with an assistant turn.

    ## What it does
    Reports a record whose first turn (after any system message) is not from the human / user.

    ## Why is this bad?
    LLaVA's preprocess silently drops a first turn that is not from the human ("Skip the first one if
    it is not from human"): that text is never trained. Chat templates raise "Conversation roles
    must alternate user/assistant/..." and LLaMA-Factory skips the record.

    Severity: warning for LLaVA records (train.py drops the leading turn on purpose and trains the
    rest as written); error for messages records, which LLaMA-Factory drops whole and chat templates
    refuse.

    ## Example
    `[{"from": "gpt", "value": "Hello!"}, {"from": "human", ...}, {"from": "gpt", ...}]`

    ## How to fix
    Remove the leading turn; `--fix` does it for LLaVA records (what train.py does anyway),
    `--unsafe-fixes` for messages records.
    """

    code = DAT.FIRST_TURN_NOT_USER
    name = "first-turn-not-user"
    severity = Severity.WARNING


@register
class RolesNotAlternating(DatasetCheck):
    """Turns do not alternate between the user and the assistant.

    ## What it does
    After the first turn is settled, checks human/gpt (user/assistant) alternation, the way LLaVA's
    preprocess asserts it; tool turns and one leading system message are allowed in messages data.

    ## Why is this bad?
    LLaVA raises `AssertionError` (`assert role == conv.roles[j % 2]`) in a data-loader worker and
    the run dies; chat templates raise "Conversation roles must alternate".

    Severity: error, because LLaVA's assert and chat templates raise; LLaMA-Factory drops the
    record.

    ## Example
    Two `gpt` turns in a row.

    ## How to fix
    Merge or split the turns by hand; `--fix --unsafe-fixes` drops the record.
    """

    code = DAT.ROLES_NOT_ALTERNATING
    name = "roles-not-alternating"


@register
class EmptyTurn(DatasetCheck):
    """A turn's text is empty or whitespace.

    ## What it does
    Reports turns whose `value` / `content` is `""` or only spaces and newlines (typed content with
    no text and no image counts as empty).

    ## Why is this bad?
    An empty answer trains the model to stop at once; an empty question trains an answer to
    nothing. Both usually come from a failed generation or conversion step.

    Severity: warning, because every loader trains the empty turn as written; it is likely, not
    certainly, a mistake.

    ## Example
    `{"from": "gpt", "value": ""}`

    ## How to fix
    Regenerate the turn, or drop the record with `--fix --unsafe-fixes`.
    """

    code = DAT.EMPTY_TURN
    name = "empty-turn"
    severity = Severity.WARNING


@register
class NoAssistantTurn(DatasetCheck):
    """A record has no assistant turn to learn from.

    ## What it does
    Reports records without any `gpt` / `assistant` turn (after LLaVA drops a leading non-human turn).

    ## Why is this bad?
    Only assistant tokens carry labels: the record's labels are all masked, it trains nothing, and a
    batch made only of such records gives a NaN loss.

    Severity: error, because the record silently trains nothing (LLaMA-Factory drops it; LLaVA masks
    every label).

    ## Example
    `"conversations": [{"from": "human", "value": "<image>\\nDescribe it."}]`

    ## How to fix
    Add the answer, or drop the record with `--fix --unsafe-fixes`.
    """

    code = DAT.NO_ASSISTANT_TURN
    name = "no-assistant-turn"


@register
class ImagePlaceholderMissing(DatasetCheck):
    """A record has an image but no image placeholder.

    ## What it does
    Counts `<image>` in the turns (and `{"type": "image"}` parts) of records that name images.

    ## Why is this bad?
    LLaVA appends the image features with length 0 when no placeholder is found
    (`cur_image_features[0:0]`): the image is silently ignored and the record trains as text.
    transformers' processors and LLaMA-Factory raise a count mismatch instead.

    Severity: error for LLaVA records (the image is silently ignored) and LLaMA-Factory records (it
    raises); a warning for messages records with plain-string content, which TRL accepts (it inserts
    the image before the first user message).

    ## Example
    `{"image": "1.jpg", "conversations": [{"from": "human", "value": "What is this?"}, ...]}`

    ## How to fix
    Put `<image>\\n` at the start of the first human turn; `--fix` does it for one-image records.
    """

    code = DAT.IMAGE_PLACEHOLDER_MISSING
    name = "image-placeholder-missing"


@register
class ImagePlaceholderCount(DatasetCheck):
    """The number of image placeholders differs from the number of images.

    ## What it does
    Compares `<image>` occurrences (and image parts) with the images the record names.

    ## Why is this bad?
    Each placeholder takes one image's features: with more placeholders than images LLaVA runs out
    (IndexError) or takes the next record's features; transformers raises "Image features and image
    tokens do not match". Two `<image>` in one LLaVA turn collapse into one there, but not in
    transformers.

    Severity: error, because transformers' processors and LLaMA-Factory raise on the mismatch; LLaVA
    runs out of features.

    ## Example
    `"value": "<image>\\nDescribe <image>"` with one image.

    ## How to fix
    Keep one placeholder per image; `--fix` keeps one `<image>` at the start of the first human turn
    of one-image records.
    """

    code = DAT.IMAGE_PLACEHOLDER_COUNT
    name = "image-placeholder-count"


@register
class ImagePlaceholderWithoutImage(DatasetCheck):
    """A text-only record contains an image placeholder.

    ## What it does
    Reports `<image>` (or an image part) in records that name no image.

    ## Why is this bad?
    LLaVA tokenizes `<image>` as plain text in text-only records; transformers' processors raise
    because they find image tokens and no images. Usually the image key was lost in a conversion.

    Severity: error, because transformers' processors raise "Found 1 <image> tokens in the text but
    no images were passed"; LLaVA trains on the literal text.

    ## Example
    `{"conversations": [{"from": "human", "value": "<image>\\nWhat is it?"}, ...]}` with no `image`.

    ## How to fix
    Restore the record's image, or remove the placeholder (`--fix --unsafe-fixes`).
    """

    code = DAT.IMAGE_PLACEHOLDER_WITHOUT_IMAGE
    name = "image-placeholder-without-image"


@register
class ImagePlaceholderMisplaced(DatasetCheck):
    """A one-image record has its placeholder outside the first user turn.

    ## What it does
    Reports `<image>` in a later human turn or in an answer.

    ## Why is this bad?
    LLaVA moves `<image>` to the start of the turn that holds it, not to the first turn: the model
    reads the first question without the image. In an answer, the image sits inside the text the
    model is trained to produce.

    Severity: warning, because the record loads and trains; only where the image sits differs from
    what was likely meant.

    ## Example
    `[{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "<image>\\nA cat."}]`

    ## How to fix
    Move the placeholder to the start of the first human turn; `--fix` does it.
    """

    code = DAT.IMAGE_PLACEHOLDER_MISPLACED
    name = "image-placeholder-misplaced"
    severity = Severity.WARNING


@register
class MultiImageRecords(DatasetCheck):
    """LLaVA-format records name several images (a list under `image`).

    ## What it does
    Counts records whose `image` is a list, and says which trainers take them. (Records that list
    their images under `images` are LLaMA-Factory sharegpt records, which take lists.)

    ## Why is this bad?
    haotian-liu/LLaVA's train.py opens `record["image"]` as one path: a list raises TypeError in
    `os.path.join`. LLaVA-NeXT and transformers' processors accept lists.

    Severity: info, because LLaVA-NeXT, LLaMA-Factory and transformers accept several images; only
    haotian-liu/LLaVA does not.

    ## Example
    `{"image": ["a.jpg", "b.jpg"], "conversations": [...]}`

    ## How to fix
    Train with a loader that takes several images, or split the record into one-image records.
    """

    code = DAT.MULTI_IMAGE_RECORDS
    name = "multi-image-records"
    severity = Severity.INFO

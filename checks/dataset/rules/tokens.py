"""DAT301-DAT304 (token budget, images and videos; what the model's processor refuses) and DAT901-DAT903 (the numbers a user wants before a run)."""

from __future__ import annotations

from typing import Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DatasetCheck

from doctor.errors import Skip
from doctor.findings import Severity
from doctor.registry import register


class TokenCheck(DatasetCheck):
    def run(self, dataset_tokens):  # type: ignore[override]
        if dataset_tokens.skipped:
            raise Skip(dataset_tokens.skipped)
        yield from self.emit(dataset_tokens.problems)


@register
class RecordTruncated(TokenCheck):
    """A record is longer than the training length and loses its end.

    ## What it does
    With `--tokenizer` (or `--model`), tokenizes every turn, adds the template's tokens and the image
    tokens the model inserts (576 for CLIP-336/14; from the vision config with `--model`), and the
    video tokens (from each video's header, by LLaMA-Factory's sampling: docs/videos.md), and
    compares the total with `model_max_length` (`--max-length`, the model's config or the
    tokenizer's config; 2048 assumed otherwise).

    ## Why is this bad?
    Both LLaVA and transformers truncate silently: the last answers are cut, mid-sentence, and the
    model learns to stop early.

    Severity: warning, because the record still trains its first part; losing its end may be
    acceptable.

    ## Example
    A 3,000-word answer with `--model_max_length 2048`.

    ## How to fix
    Raise the training length, split long conversations into several records, or shorten them.
    """

    code = DAT.RECORD_TRUNCATED
    name = "record-truncated"
    severity = Severity.WARNING


@register
class AnswersTruncated(TokenCheck):
    """Every answer of a record lies past the training length.

    ## What it does
    Finds records whose first assistant token comes after `model_max_length` once the image tokens
    are inserted (a long first question, or several images, push the answer out).

    ## Why is this bad?
    After truncation only masked prompt tokens remain: the record trains nothing, and a batch made
    only of such records has a NaN loss.

    Severity: error, because the record silently trains nothing.

    ## Example
    Four images of 2,880 llava_next tokens each before a one-line answer, with 8192 tokens allowed.

    ## How to fix
    Raise the training length or shorten the prompt; `--fix --unsafe-fixes` drops the record.
    """

    code = DAT.ANSWERS_TRUNCATED
    name = "answers-truncated"


@register
class ImageTokensTruncated(TokenCheck):
    """The training length cuts through a record's image tokens.

    ## What it does
    Finds records whose image (or video) token block ends past `model_max_length`; the message
    says which.

    ## Why is this bad?
    transformers' processors expand `<image>` before truncating, so `truncation=True` cuts inside
    the image tokens and the model raises "Image features and image tokens do not match" (newer
    processors refuse earlier with "Mismatch in `image` token count"); LLaVA trains on a partial
    image. A video cut the same way makes Qwen2-VL raise "Video features and video tokens do not
    match".

    Severity: error, because the model gets fewer image tokens than image features and raises, or
    trains on a cut image.

    ## Example
    A 2,000-token question followed by `<image>` with a 2048 limit.

    ## How to fix
    Put `<image>` at the start of the first turn, raise the limit, or drop the record
    (`--fix --unsafe-fixes`).
    """

    code = DAT.IMAGE_TOKENS_TRUNCATED
    name = "image-tokens-truncated"


@register
class ImageAspectRatioRefused(TokenCheck):
    """An image is too thin for the model's dynamic-resolution processor.

    ## What it does
    With `--model` of a dynamic-resolution family (Qwen2-VL, Qwen2.5-VL), reports records with an
    image whose long side is more than 200 times its short side, from the image header.

    ## Why is this bad?
    transformers' `smart_resize` (Qwen2-VL's image processor, what TRL and plain transformers
    training call) raises `ValueError: absolute aspect ratio must be smaller than 200` when the
    record's batch comes up, and the run dies. LLaMA-Factory's Qwen2-VL plugin resizes such an
    image to 180:1 before the processor sees it, so it trains on a squeezed copy.

    Severity: error, because the model's own image processor raises on it.

    ## Example
    A 12,000 x 40 px banner in a Qwen2.5-VL dataset.

    ## How to fix
    Crop or pad the image to a ratio under 200:1 (split a long strip into tiles), or drop the
    record (`--fix --unsafe-fixes`).
    """

    code = DAT.IMAGE_ASPECT_RATIO_REFUSED
    name = "image-aspect-ratio-refused"


@register
class DatasetSummary(DatasetCheck):
    """Summary numbers of the dataset.

    ## What it does
    Reports, as one info finding, the records (with and without images), image references and
    distinct images, turns per record, text characters per record, and the read speed.

    ## Why is this bad?
    Nothing is wrong; these are the numbers to compare with what you meant to train on (a mix
    with 10x fewer images than expected lost a folder).

    Severity: info, because numbers, no problem.

    ## Example
    `665,298 records (624,610 with images), 624,255 distinct images, 2-68 turns (median 4)`

    ## How to fix
    Nothing to fix. `--ignore DAT9` hides the summaries.
    """

    code = DAT.DATASET_SUMMARY
    name = "dataset-summary"
    severity = Severity.INFO

    def run(self, dataset_scan):  # type: ignore[override]
        from doctor.checks.dataset.summary import scan_sentence, scan_summary

        if dataset_scan.records:
            yield self.finding(scan_sentence(scan_summary(dataset_scan)))


@register
class ImageSummary(DatasetCheck):
    """Summary numbers of the dataset's images.

    ## What it does
    Reports the sizes, aspect ratios (portrait / square / landscape) and formats of the images whose
    header was read (`--images header` or `decode`).

    ## Why is this bad?
    Nothing is wrong; the shapes decide the image tokens of llava_next (anyres) models and show
    odd sources (thumbnails, panoramas).

    Severity: info, because numbers, no problem.

    ## Example
    `3,000 images: 640x480 median (5%-95%: 320-1024 wide), aspect 0.75-1.78, 70% landscape; JPEG 2,900`

    ## How to fix
    Nothing to fix. `--ignore DAT9` hides the summaries.
    """

    code = DAT.IMAGE_SUMMARY
    name = "image-summary"
    severity = Severity.INFO

    def run(self, dataset_images):  # type: ignore[override]
        from doctor.checks.dataset.images.run import image_stats
        from doctor.checks.dataset.summary import image_sentence

        if dataset_images.skipped or dataset_images.level == "exists":
            raise Skip(dataset_images.skipped or "image sizes need --images header or decode")
        stats: dict[str, Any] = image_stats(dataset_images)
        yield self.finding(image_sentence(stats))


@register
class TokenSummary(TokenCheck):
    """Token length percentiles of the dataset.

    ## What it does
    Reports the 50th, 90th and 99th percentile and the maximum of the estimated tokens per record
    (text, template, image and video tokens), and how many records exceed the training length;
    with videos, how many video tokens were counted, by which rule and sampling (`--video-fps`,
    `--video-maxlen`, `--video-max-pixels`, `--video-min-pixels`), and how many videos were not.

    ## Why is this bad?
    Nothing is wrong; the percentiles tell you what `model_max_length` the data needs and how much
    padding a batch carries.

    Severity: info, because numbers, no problem.

    ## Example
    `tokens per record: p50 310, p90 720, p99 1,650, max 3,420; 12 records over 2,048`

    ## How to fix
    Nothing to fix. `--ignore DAT9` hides the summaries.
    """

    code = DAT.TOKEN_SUMMARY
    name = "token-summary"
    severity = Severity.INFO

    def run(self, dataset_tokens):  # type: ignore[override]
        from doctor.checks.dataset.summary import token_sentence
        from doctor.checks.dataset.tokens import token_stats

        if dataset_tokens.skipped:
            raise Skip(dataset_tokens.skipped)
        stats = token_stats(dataset_tokens)
        if stats:
            yield self.finding(token_sentence(stats))

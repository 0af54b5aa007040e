"""Training data (family DAT): LLaVA and messages datasets, their images and token budgets.

Shared inputs, computed once per dataset and handed to the checks by name:

- ``dataset_scan``: ONE streaming pass over the file (``doctor.io.jsonstream``) that parses each
  record once and runs every structure, conversation and placeholder check on it, collecting
  problems by code (capped), image references and counts. DAT0xx/DAT1xx read their problems here.
- ``dataset_images``: every distinct image at ``--images`` level, in parallel (DAT2xx).
- ``dataset_videos``: every distinct video measured from its container header (DAT212-DAT217).
- ``dataset_tokens``: a second streaming pass that tokenizes the turns, only with ``--tokenizer``
  or ``--model`` (DAT3xx). Only this one imports ``tokenizers`` (or transformers, for a
  tokenizer without tokenizer.json); nothing here imports torch.
- ``dataset_summary``: the numbers (records, images, turns, sizes, token percentiles) as a dict,
  for reporters; DAT901-DAT903 state them as info findings.
"""

from __future__ import annotations

from typing import Any

from doctor.checks.dataset.rules import (  # noqa: F401 - importing registers the checks
    images,
    parse,
    records,
    tokens,
    turns,
    videos,
)

from doctor.errors import Skip
from doctor.registry import fixture


@fixture
def dataset_scan(path, options, progress):
    """The one streaming pass over the dataset (``doctor.checks.dataset.scan.DatasetScan``); for a
    parquet / Arrow file, the pass over its rows (``doctor.checks.dataset.tables.TableScan``)."""
    from doctor.checks.dataset.tables import TableUnavailable, is_table, scan_table

    try:
        if is_table(path):
            try:
                if getattr(options, "engine", "local") == "ray":
                    from doctor.checks.dataset import distributed

                    return distributed.scan_table(path, options)
                return scan_table(path, options, progress)
            except TableUnavailable as e:
                raise Skip(str(e)) from None
        from doctor.checks.dataset.scan import scan_dataset

        if getattr(options, "engine", "local") == "ray":
            from doctor.checks.dataset import distributed

            scan = distributed.scan_json_lines(path, options)
            if scan is not None:
                return scan
        return scan_dataset(path, progress)
    except OSError as e:
        raise Skip(f"cannot read {path}: {e.strerror or e}") from None


@fixture
def dataset_images(dataset_scan, options, progress):
    """Every distinct image, probed at ``--images`` level (``doctor.checks.dataset.images.run.ImageReport``)."""
    from doctor.checks.dataset.images.run import check_images

    embedded = getattr(dataset_scan, "images", None)  # a table's images were checked with its rows
    if embedded is not None:
        return embedded
    return check_images(dataset_scan, options, progress)


@fixture
def dataset_videos(dataset_scan, options):
    """Every distinct video, measured from its container header (``doctor.checks.dataset.videos.VideoReport``)."""
    from doctor.checks.dataset.videos import check_videos, not_measured_problem

    report = check_videos(dataset_scan, options)
    not_measured_problem(report, dataset_scan)
    return report


@fixture
def dataset_tokens(dataset_scan, dataset_images, dataset_videos, options, progress):
    """Token counts per record (``doctor.checks.dataset.tokens.TokenReport``; ``skipped`` without a tokenizer)."""
    from doctor.checks.dataset.tokens import count_tokens

    return count_tokens(dataset_scan, dataset_images, options, progress, dataset_videos)


@fixture
def dataset_summary(dataset_scan, dataset_images, dataset_tokens) -> dict[str, Any]:
    """The dataset's numbers: ``{"dataset": {...}, "images": {...}, "tokens": {...}}`` (the last
    two are empty when their checks were skipped)."""
    from doctor.checks.dataset.images.run import image_stats
    from doctor.checks.dataset.summary import scan_summary
    from doctor.checks.dataset.tokens import token_stats

    return {
        "dataset": scan_summary(dataset_scan),
        "images": {} if dataset_images.skipped else image_stats(dataset_images),
        "tokens": {} if dataset_tokens.skipped else token_stats(dataset_tokens),
    }

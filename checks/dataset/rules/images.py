"""DAT201-DAT211: the image files a dataset references."""

from __future__ import annotations

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DatasetCheck

from doctor.errors import Skip
from doctor.findings import Severity
from doctor.registry import register


class ImageCheck(DatasetCheck):
    unit = "images"

    def run(self, dataset_images):  # type: ignore[override]
        if dataset_images.skipped and self.code not in dataset_images.problems.counts:
            raise Skip(dataset_images.skipped)
        yield from self.emit(dataset_images.problems)


@register
class ImageMissing(ImageCheck):
    """An image file does not exist.

    ## What it does
    Resolves each distinct image path like LLaVA (`os.path.join(image_folder, image)`, with
    `--image-folder`, default the dataset's folder) and stats it.

    ## Why is this bad?
    `Image.open` raises FileNotFoundError in a data-loader worker when the record's batch comes up;
    the run dies hours in, or (with a try/except loader) the record silently trains as text.

    Severity: error, because Image.open raises FileNotFoundError.

    ## Example
    `"image": "coco/train2017/000000033471.jpg"` with `coco/` never unpacked.

    ## How to fix
    Download or unpack the missing images, or drop the records (`--fix --unsafe-fixes`).
    """

    code = DAT.IMAGE_MISSING
    name = "image-missing"


@register
class ImageIsFolder(ImageCheck):
    """An image path names a folder.

    ## What it does
    Reports image paths that resolve to a directory.

    ## Why is this bad?
    `Image.open` raises IsADirectoryError. It usually means the path was truncated or the image
    field holds a prefix.

    Severity: error, because Image.open raises IsADirectoryError.

    ## Example
    `"image": "coco/train2017/"`

    ## How to fix
    Fix the path, or drop the record with `--fix --unsafe-fixes`.
    """

    code = DAT.IMAGE_IS_FOLDER
    name = "image-is-folder"


@register
class ImageEmpty(ImageCheck):
    """An image file has zero bytes.

    ## What it does
    Reports image files of size 0.

    ## Why is this bad?
    `Image.open` raises "cannot identify image file". Zero-byte files come from interrupted
    downloads and copies that ran out of space.

    Severity: error, because Image.open raises UnidentifiedImageError.

    ## Example
    `ls -l` shows `0 Jan 1 000000033471.jpg`.

    ## How to fix
    Download the image again, or drop the record with `--fix --unsafe-fixes`.
    """

    code = DAT.IMAGE_EMPTY
    name = "image-empty"


@register
class ImageUnreadable(ImageCheck):
    """An image file cannot be read.

    ## What it does
    Reports files that cannot be stat'ed or opened (permissions, I/O errors, symlink loops), paths
    that are not regular files, and paths that cannot be used at all (a NUL byte).

    ## Why is this bad?
    The training job, often running as another user or on another node, fails with
    PermissionError or OSError in a data-loader worker.

    Severity: error, because opening the file raises.

    ## Example
    Images unpacked by root with mode 600.

    ## How to fix
    Fix the permissions (`chmod -R a+rX images/`) or the storage; drop the records otherwise.
    """

    code = DAT.IMAGE_UNREADABLE
    name = "image-unreadable"


@register
class NotAnImage(ImageCheck):
    """A file named as an image is not one Pillow can identify.

    ## What it does
    Reads the file's first bytes; formats without a fast reader are handed to `Image.open`.

    ## Why is this bad?
    `Image.open` raises `UnidentifiedImageError: cannot identify image file`. Typical causes: an
    HTML error page saved as .jpg, a Git LFS pointer, a text placeholder.

    Severity: error, because Image.open raises UnidentifiedImageError.

    ## Example
    `images/1.png` that starts with `<!DOCTYPE html>`.

    ## How to fix
    Download the image again, or drop the record with `--fix --unsafe-fixes`.
    """

    code = DAT.NOT_AN_IMAGE
    name = "not-an-image"


@register
class ImageExtensionMismatch(ImageCheck):
    """An image's extension names another format than its content.

    ## What it does
    Compares the format read from the file's magic bytes with its extension.

    ## Why is this bad?
    Pillow (and so LLaVA) ignores the extension, but tools that trust it do not: web dataset
    writers, mime-type based loaders, some augmentation libraries and image viewers.

    Severity: warning, because Pillow ignores the extension, so LLaVA loads the image; other tools
    may not.

    ## Example
    PNG bytes in `0001.jpg`.

    ## How to fix
    Rename the file to its real extension (and the path in the dataset), or re-encode it.
    """

    code = DAT.IMAGE_EXTENSION_MISMATCH
    name = "image-extension-mismatch"
    severity = Severity.WARNING


@register
class ImageCorrupt(ImageCheck):
    """An image is truncated or corrupt.

    ## What it does
    `--images header`: a header that does not parse is an error. A suspicious file (no JPEG
    end-of-image marker FFD9 or PNG IEND in its last bytes, a WEBP shorter than its RIFF size) is
    decoded, that image alone, exactly as LLaVA does (`Image.open(...).convert("RGB")`): an error
    when the decode fails, nothing when it succeeds (a valid JPEG with bytes after its end
    marker). `--images decode` decodes every image (or a `--decode-sample`) the same way.
    Severity: error, because only images Pillow really fails to decode are reported, and that
    failure kills the data-loader worker.

    ## Why is this bad?
    A truncated JPEG opens and reports its size, `verify()` passes (a no-op for JPEG), and only
    `load()` raises `OSError: image file is truncated`, in a worker, mid-epoch.

    ## Example
    A download cut at half its bytes.

    ## How to fix
    Download the image again, or drop the record with `--fix --unsafe-fixes`.
    """

    code = DAT.IMAGE_CORRUPT
    name = "image-corrupt"


@register
class DecompressionBomb(ImageCheck):
    """An image declares more pixels than Pillow allows.

    ## What it does
    Multiplies the width and height from the header (never decoding) and compares them with
    Pillow's `Image.MAX_IMAGE_PIXELS` (89,478,485 by default).

    ## Why is this bad?
    Above the limit `Image.open` warns; above twice the limit it raises DecompressionBombError. A
    small file can declare gigapixels and exhaust a worker's memory when decoded.

    Severity: error above twice the limit (Image.open raises DecompressionBombError); warning
    between 1x and 2x (it only warns).

    ## Example
    A 400-byte PNG whose IHDR says 20000 x 20000.

    ## How to fix
    Downscale real huge images beforehand; drop hostile ones (`--fix --unsafe-fixes`).
    """

    code = DAT.DECOMPRESSION_BOMB
    name = "decompression-bomb"


@register
class ImagePathEscapesRoot(ImageCheck):
    """An image path leaves the image folder.

    ## What it does
    Reports paths whose `..` lead out of the image folder and image symlinks that point outside it
    (errors), absolute paths (a portability warning: LLaVA reads them as they are, so they work
    where the file exists; a missing file is DAT201) and folder symlinks that leave the folder
    (warnings: often a deliberately mounted dataset).

    ## Why is this bad?
    LLaVA reads `os.path.join(image_folder, image)`: an absolute path discards the folder, and `..`
    or a link reads whatever file it names. The dataset breaks when moved, and an untrusted dataset
    can make training read any file the job can.

    Severity: error for `..` and image symlinks that leave the image folder (an untrusted dataset
    reads any file the job can); warning for an absolute path (LLaVA's os.path.join reads it as it
    is, so it works where the file exists, but not when the dataset moves) and for a folder symlink
    (often a deliberately mounted dataset).

    ## Example
    `"image": "../../secrets/id_rsa"` or `"image": "/home/alice/data/1.jpg"`.

    ## How to fix
    Store paths relative to the image folder; pass `--image-folder` to the real root.
    """

    code = DAT.IMAGE_PATH_ESCAPES_ROOT
    name = "image-path-escapes-root"


@register
class ImageFolderWrong(ImageCheck):
    """Almost no image exists under the image folder.

    ## What it does
    When `--image-folder` is not given and 90% or more of the images are missing under the
    dataset's own folder, reports that once (and looks for a subfolder where the paths do resolve)
    instead of one finding per image. Also reports an `--image-folder` that does not exist.

    ## Why is this bad?
    LLaVA joins every path to `--image_folder`; with the wrong folder no image loads.

    Severity: error, because no image loads from the wrong folder.

    ## Example
    `data.json` next to `images/`, with paths like `"coco/1.jpg"` that live in `images/coco/`.

    ## How to fix
    Pass `--image-folder` with the folder your training command passes as `--image_folder`.
    """

    code = DAT.IMAGE_FOLDER_WRONG
    name = "image-folder-wrong"


@register
class ImageTooSmall(ImageCheck):
    """An image is 1 or 3 pixels high.

    ## What it does
    Reports images whose height is 1 or 3 pixels.

    ## Why is this bad?
    transformers' image processors guess the channel axis of the array
    (`infer_channel_dimension_format`): an RGB array of shape (3, W, 3) or (1, W, 3) is read as
    channels-first, so the image is resized and normalised along the wrong axes or the processor
    raises.

    Severity: warning, because the PIL-input path that LLaVA, TRL and LLaMA-Factory use handles it;
    only numpy input is misread.

    ## Example
    A 640 x 3 separator strip saved as an image.

    ## How to fix
    Drop or pad such images; pass `input_data_format="channels_last"` if you call the processor.
    """

    code = DAT.IMAGE_TOO_SMALL
    name = "image-too-small"
    severity = Severity.WARNING

"""DAT115-DAT116 (videos in the records) and DAT212-DAT217 (the video files a dataset references)."""

from __future__ import annotations

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DatasetCheck, Problems

from doctor.errors import Skip
from doctor.findings import Severity
from doctor.registry import register


@register
class VideoPlaceholderCount(DatasetCheck):
    """A record's `<video>` placeholders do not match its videos.

    ## What it does
    Counts the videos of each record (LLaMA-Factory's `videos` column, typed `{"type": "video"}`
    parts) and the `<video>` placeholders (and video parts) in its turns.

    ## Why is this bad?
    LLaMA-Factory's `_validate_messages` raises "The number of videos does not match the number of
    <video> tokens" when the record's batch comes up; the run dies mid-epoch.

    Severity: error, because LLaMA-Factory raises ValueError.

    ## Example
    `{"conversations": [{"from": "human", "value": "What happens?"}, ...], "videos": ["clip.mp4"]}`

    ## How to fix
    Put one `<video>` where each video belongs (in order), or remove the extra videos / placeholders.
    """

    code = DAT.VIDEO_PLACEHOLDER_COUNT
    name = "video-placeholder-count"


@register
class VideosNotSupported(DatasetCheck):
    """The dataset has videos but `--model` cannot take video input.

    ## What it does
    With `--model`, reads the model's family from config.json; a family whose LLaMA-Factory
    template has no video token (llava, llava_next, mllama, original LLaVA) cannot train on a
    record with videos. One finding for the dataset, with the number of such records.

    ## Why is this bad?
    LLaMA-Factory's `_validate_input` raises "This model does not support video input. Please
    check whether the correct `template` is used." on the first record with a video.

    Severity: error, because LLaMA-Factory raises ValueError.

    ## Example
    A sharegpt dataset with `"videos": ["clip.mp4"]` and `--model llava-1.5-7b-hf`.

    ## How to fix
    Train a model with video support (Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT-Video ...), or remove the
    videos from the records.
    """

    code = DAT.VIDEOS_NOT_SUPPORTED
    name = "videos-not-supported"

    def run(self, dataset_scan, options):  # type: ignore[override]
        from doctor.checks.dataset.videos import unsupported_problem, video_support

        checker = dataset_scan.checker
        if checker is None or not checker.records_with_videos:
            raise Skip("the dataset has no videos")
        if not options.model:
            raise Skip("no --model: which model the videos are for is unknown")
        supported, family = video_support(options.model)
        if supported is None:
            raise Skip(f"model type {family}: whether LLaMA-Factory's template for it takes videos is not known here")
        if supported:
            return
        problems = Problems()
        problems.add(self.code, unsupported_problem(dataset_scan, options.model, family))
        yield from self.emit(problems)


class VideoCheck(DatasetCheck):
    unit = "videos"

    def run(self, dataset_videos):  # type: ignore[override]
        if dataset_videos.skipped and self.code not in dataset_videos.problems.counts:
            raise Skip(dataset_videos.skipped)
        yield from self.emit(dataset_videos.problems)


@register
class VideoMissing(VideoCheck):
    """A video file does not exist.

    ## What it does
    Resolves each distinct video path like the images (`--image-folder`, LLaMA-Factory's
    `media_dir`; default the dataset's folder) and stats it.

    ## Why is this bad?
    `av.open` raises FileNotFoundError in LLaMA-Factory's `_regularize_videos` when the record's
    batch comes up.

    Severity: error, because av.open raises FileNotFoundError.

    ## Example
    `"videos": ["clips/0001.mp4"]` with `clips/` never unpacked.

    ## How to fix
    Download or unpack the missing videos, pass the right `--image-folder`, or drop the records.
    """

    code = DAT.VIDEO_MISSING
    name = "video-missing"


@register
class VideoIsFolder(VideoCheck):
    """A video path names a folder.

    ## What it does
    Reports video paths that resolve to a directory.

    ## Why is this bad?
    `av.open` raises IsADirectoryError. A folder of frames must be listed as a list of frame
    paths, not as the folder.

    Severity: error, because av.open raises IsADirectoryError.

    ## Example
    `"videos": ["clips/0001/"]`

    ## How to fix
    Name the video file, or list the frames: `"videos": [["clips/0001/1.jpg", "clips/0001/2.jpg"]]`.
    """

    code = DAT.VIDEO_IS_FOLDER
    name = "video-is-folder"


@register
class VideoEmpty(VideoCheck):
    """A video file has zero bytes.

    ## What it does
    Reports video files of size 0.

    ## Why is this bad?
    `av.open` raises InvalidDataError. Zero-byte files come from interrupted downloads.

    Severity: error, because av.open raises InvalidDataError.

    ## Example
    `ls -l` shows `0 Jan 1 0001.mp4`.

    ## How to fix
    Download the video again, or drop the record.
    """

    code = DAT.VIDEO_EMPTY
    name = "video-empty"


@register
class VideoUnreadable(VideoCheck):
    """A file named as a video is not one PyAV can open.

    ## What it does
    Reads the container header (MP4 / MOV box headers, AVI chunks; PyAV's `av.open` for other
    containers): an HTML page or text saved as .mp4, an MP4 cut before its `moov` box (a
    moov-at-end file truncated, an interrupted recording), a file that cannot be read. An image
    file given as a video is reported here as a warning: PyAV opens it with its image demuxer as
    a one-frame video.

    ## Why is this bad?
    `av.open` raises InvalidDataError in LLaMA-Factory's `_regularize_videos`; an image trains as
    a still "video" of two identical frames.

    Severity: error, because av.open raises; warning for an image, which trains as a still.

    ## Example
    `clip.mp4` of 600 bytes: `ftyp` and the start of `mdat`, no `moov`.

    ## How to fix
    Download or re-encode the video (`ffmpeg -i in -movflags faststart out.mp4`); move images to
    `images` with an `<image>` placeholder.
    """

    code = DAT.VIDEO_UNREADABLE
    name = "video-unreadable"


@register
class VideoWithoutVideoStream(VideoCheck):
    """A video file holds no video stream.

    ## What it does
    Reports containers without a video track (audio only: an `.m4a` renamed, a soundtrack export).

    ## Why is this bad?
    LLaMA-Factory takes `next(stream for stream in container.streams if stream.type == "video")`,
    which raises StopIteration.

    Severity: error, because LLaMA-Factory raises StopIteration.

    ## Example
    `clip.mp4` holding one AAC audio track.

    ## How to fix
    Export the video track again, or drop the record.
    """

    code = DAT.VIDEO_WITHOUT_VIDEO_STREAM
    name = "video-without-video-stream"


@register
class VideoNotMeasured(VideoCheck):
    """Some videos could not be measured, so their tokens are not counted.

    ## What it does
    Videos in containers the header reader does not read (WebM / Matroska, MPEG-TS, FLV ...) are
    measured with PyAV when it is installed; without it, or for a video under an object-storage
    root, one finding names how many were not measured, their containers and the first paths.

    ## Why is this bad?
    Their frames and sizes are unknown: the token budget (DAT301-DAT303) leaves them out, so a
    record made too long by a video is not found, and a broken file is not caught here.

    Severity: warning, because nothing fails; the checks are incomplete.

    ## Example
    `120 video(s) were not measured (matroska,webm (120)): 'clips/1.webm', ...`

    ## How to fix
    `pip install av` (or `pip install 'vlm-doctor[video]'`) and run again.
    """

    code = DAT.VIDEO_NOT_MEASURED
    name = "video-not-measured"
    severity = Severity.WARNING

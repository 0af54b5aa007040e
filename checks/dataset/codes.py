"""The dataset family's codes, one name per check: the one place a "DATnnn" string is written.

Problems are collected by code (``Problems.record(DAT.UNKNOWN_ROLE, ...)``), so a typo is an
AttributeError at import or in a test, never a finding filed under a code no check emits.
``tests/dataset/test_dataset_codes.py`` proves these are exactly the registered DAT checks'
codes, and that no other module of the family writes a code by hand.
"""

from __future__ import annotations

from typing import Final


class DAT:
    """Code of each DAT check, by its kebab name in upper snake case."""

    INVALID_JSON: Final = "DAT001"  # InvalidJson
    NOT_UTF8: Final = "DAT002"  # NotUtf8
    UTF8_BOM: Final = "DAT003"  # Utf8Bom
    TRAILING_COMMA: Final = "DAT004"  # TrailingComma
    JSON_LINES_IN_JSON_FILE: Final = "DAT005"  # JsonLinesInJsonFile
    JSON_LINES_FOR_LLAVA: Final = "DAT006"  # JsonLinesForLlava
    ARRAY_IN_JSON_LINES_FILE: Final = "DAT007"  # ArrayInJsonLinesFile
    TOP_LEVEL_NOT_ARRAY: Final = "DAT008"  # TopLevelNotArray
    EMPTY_DATASET: Final = "DAT009"  # EmptyDataset
    RECORD_NOT_OBJECT: Final = "DAT010"  # RecordNotObject
    UNKNOWN_RECORD_FORMAT: Final = "DAT011"  # UnknownRecordFormat
    MISSING_FIELD: Final = "DAT012"  # MissingField
    WRONG_FIELD_TYPE: Final = "DAT013"  # WrongFieldType
    EMPTY_FIELD: Final = "DAT014"  # EmptyField
    DUPLICATE_ID: Final = "DAT015"  # DuplicateId
    MIXED_FIELD_TYPES: Final = "DAT016"  # MixedFieldTypes
    NESTING_TOO_DEEP: Final = "DAT017"  # NestingTooDeep
    NOT_ONE_RECORD_PER_LINE: Final = "DAT018"  # NotOneRecordPerLine
    UNKNOWN_ROLE: Final = "DAT101"  # UnknownRole
    FIRST_TURN_NOT_USER: Final = "DAT102"  # FirstTurnNotUser
    ROLES_NOT_ALTERNATING: Final = "DAT103"  # RolesNotAlternating
    EMPTY_TURN: Final = "DAT104"  # EmptyTurn
    NO_ASSISTANT_TURN: Final = "DAT105"  # NoAssistantTurn
    IMAGE_PLACEHOLDER_MISSING: Final = "DAT110"  # ImagePlaceholderMissing
    IMAGE_PLACEHOLDER_COUNT: Final = "DAT111"  # ImagePlaceholderCount
    IMAGE_PLACEHOLDER_WITHOUT_IMAGE: Final = "DAT112"  # ImagePlaceholderWithoutImage
    IMAGE_PLACEHOLDER_MISPLACED: Final = "DAT113"  # ImagePlaceholderMisplaced
    MULTI_IMAGE_RECORDS: Final = "DAT114"  # MultiImageRecords
    VIDEO_PLACEHOLDER_COUNT: Final = "DAT115"  # VideoPlaceholderCount
    VIDEOS_NOT_SUPPORTED: Final = "DAT116"  # VideosNotSupported
    IMAGE_MISSING: Final = "DAT201"  # ImageMissing
    IMAGE_IS_FOLDER: Final = "DAT202"  # ImageIsFolder
    IMAGE_EMPTY: Final = "DAT203"  # ImageEmpty
    IMAGE_UNREADABLE: Final = "DAT204"  # ImageUnreadable
    NOT_AN_IMAGE: Final = "DAT205"  # NotAnImage
    IMAGE_EXTENSION_MISMATCH: Final = "DAT206"  # ImageExtensionMismatch
    IMAGE_CORRUPT: Final = "DAT207"  # ImageCorrupt
    DECOMPRESSION_BOMB: Final = "DAT208"  # DecompressionBomb
    IMAGE_PATH_ESCAPES_ROOT: Final = "DAT209"  # ImagePathEscapesRoot
    IMAGE_FOLDER_WRONG: Final = "DAT210"  # ImageFolderWrong
    IMAGE_TOO_SMALL: Final = "DAT211"  # ImageTooSmall
    VIDEO_MISSING: Final = "DAT212"  # VideoMissing
    VIDEO_IS_FOLDER: Final = "DAT213"  # VideoIsFolder
    VIDEO_EMPTY: Final = "DAT214"  # VideoEmpty
    VIDEO_UNREADABLE: Final = "DAT215"  # VideoUnreadable
    VIDEO_WITHOUT_VIDEO_STREAM: Final = "DAT216"  # VideoWithoutVideoStream
    VIDEO_NOT_MEASURED: Final = "DAT217"  # VideoNotMeasured
    RECORD_TRUNCATED: Final = "DAT301"  # RecordTruncated
    ANSWERS_TRUNCATED: Final = "DAT302"  # AnswersTruncated
    IMAGE_TOKENS_TRUNCATED: Final = "DAT303"  # ImageTokensTruncated
    IMAGE_ASPECT_RATIO_REFUSED: Final = "DAT304"  # ImageAspectRatioRefused
    DATASET_SUMMARY: Final = "DAT901"  # DatasetSummary
    IMAGE_SUMMARY: Final = "DAT902"  # ImageSummary
    TOKEN_SUMMARY: Final = "DAT903"  # TokenSummary


def all_codes() -> dict[str, str]:
    """{NAME: code} for every code above."""
    return {k: v for k, v in vars(DAT).items() if k.isupper()}

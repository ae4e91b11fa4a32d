"""The library's one exception family.

Every error carries an enumerated :class:`ErrorCode` and, where a file is involved, its path,
so the CLI can print one line (``error E103 /data/pt_1.npz: ...``) and exit non-zero.
Raise these where the problem is found; do not re-wrap unrelated exceptions wholesale.
"""

from __future__ import annotations

import enum
from pathlib import Path


class ErrorCode(str, enum.Enum):
    """Stable codes; the number is what users quote in bug reports."""

    # input files
    FILE_NOT_FOUND = "E101"
    UNSUPPORTED_FORMAT = "E102"
    CORRUPT_FILE = "E103"
    MISSING_FIELD = "E104"
    UNSAFE_CONTENT = "E105"  # pickled objects other than arrays/containers, pickled checkpoints
    AMBIGUOUS_INPUT = "E106"  # several series/studies where one is needed
    # geometry and content
    INVALID_GEOMETRY = "E201"
    GRID_MISMATCH = "E202"
    NO_TARGET = "E203"
    NEGATIVE_DOSE = "E204"
    INVALID_VALUE = "E205"
    FRAME_OF_REFERENCE = "E206"
    # outputs
    OUTPUT_EXISTS = "E301"
    WRITE_FAILED = "E302"
    # models and configs
    INVALID_CONFIG = "E401"
    MODEL_NOT_FOUND = "E402"
    HASH_MISMATCH = "E403"
    INCOMPATIBLE_MODEL = "E404"
    # runtime
    DEPENDENCY_MISSING = "E501"
    CANCELLED = "E502"
    EXTERNAL_FAILED = "E503"  # another Slicer module (SlicerRT's DVH or Isodose logic) reported a failure


class ADDiffDoseError(Exception):
    """Base of every error the library raises on purpose.

    ``code``: an :class:`ErrorCode`; ``path``: the file concerned (or None);
    ``message``: what is wrong, in words a user can act on.
    """

    default_code = ErrorCode.INVALID_VALUE

    def __init__(self, message: str, *, path: str | Path | None = None, code: ErrorCode | None = None):
        self.code = code or self.default_code
        self.path = str(path) if path is not None else None
        self.message = one_line(message)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"{self.code.value}{where} {self.message}"

    def __reduce__(self):  # keep picklable for multiprocessing workers
        return (_rebuild, (type(self), self.message, self.path, self.code))


def one_line(text) -> str:
    """`text` on one line (third-party messages, e.g. pydicom's, often span several)."""
    return " ".join(str(text).split())


def _rebuild(cls, message, path, code):
    return cls(message, path=path, code=code)


class InputError(ADDiffDoseError):
    """An input file is missing, unreadable, of an unknown kind, or lacks what is needed."""

    default_code = ErrorCode.CORRUPT_FILE


class GeometryError(ADDiffDoseError):
    """Grids, orientations or frames of reference that cannot be used or do not match."""

    default_code = ErrorCode.INVALID_GEOMETRY


class DoseError(ADDiffDoseError):
    """Dose values that make no sense (negative, missing where required)."""

    default_code = ErrorCode.NEGATIVE_DOSE


class OutputError(ADDiffDoseError):
    """An output cannot be written (exists without --overwrite, disk error)."""

    default_code = ErrorCode.OUTPUT_EXISTS


class ModelError(ADDiffDoseError):
    """Model weights, manifests and configs."""

    default_code = ErrorCode.INVALID_CONFIG

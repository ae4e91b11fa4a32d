"""Atomic, non-clobbering output: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import ErrorCode, OutputError


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output unless `overwrite`; make the parent folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError("exists; pass --overwrite to replace it", path=path, code=ErrorCode.OUTPUT_EXISTS)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder: {exc.strerror}", path=path.parent, code=ErrorCode.WRITE_FAILED) from exc
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = False):
    """Yield a temporary path in the target's folder; on success rename it onto `path`.

    On any failure the temporary file is removed and `path` is untouched.
    """
    path = check_writable(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary files
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputError("appeared while writing; pass --overwrite", path=path, code=ErrorCode.OUTPUT_EXISTS)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"write failed: {exc.strerror or exc}", path=path, code=ErrorCode.WRITE_FAILED) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes_atomic(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, overwrite: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite)

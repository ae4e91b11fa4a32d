"""Pixel data with the size checked against the header before anything is allocated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from ...errors import ErrorCode, InputError

#: Largest decoded pixel block accepted from one file (bytes): 2 GiB.
MAX_PIXEL_BYTES = 2 * 1024**3


def read_full(path: Path) -> pydicom.Dataset:
    """The whole dataset (pixel data still encoded); files without File Meta header as in
    :func:`~.scan.dcmread_lenient`; damaged files raise InputError."""
    from .scan import dcmread_lenient

    try:
        return dcmread_lenient(path, stop_before_pixels=False)
    except Exception as exc:  # pydicom raises many kinds on damaged files
        raise InputError(f"unreadable DICOM file: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc


def _int(ds: pydicom.Dataset, keyword: str, path, default=None) -> int:
    value = ds.get(keyword, default)
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{keyword} missing or not a number ({value!r})", path=path, code=ErrorCode.MISSING_FIELD) from None
    return value


def frame_shape(ds: pydicom.Dataset, path) -> tuple[int, int, int]:
    """(frames, rows, columns) from the header, checked against MAX_PIXEL_BYTES."""
    rows, cols = _int(ds, "Rows", path), _int(ds, "Columns", path)
    frames = _int(ds, "NumberOfFrames", path, 1) if ds.get("NumberOfFrames") not in (None, "") else 1
    bits = _int(ds, "BitsAllocated", path)
    if min(rows, cols, frames) < 1 or bits not in (8, 16, 32):
        raise InputError(f"bad image size {frames}x{rows}x{cols}, BitsAllocated {bits}", path=path,
                         code=ErrorCode.CORRUPT_FILE)
    if rows * cols * frames * bits // 8 > MAX_PIXEL_BYTES:
        raise InputError(f"image of {frames}x{rows}x{cols} x {bits} bits exceeds the {MAX_PIXEL_BYTES >> 30} GiB limit",
                         path=path, code=ErrorCode.CORRUPT_FILE)
    return frames, rows, cols


def pixel_array(ds: pydicom.Dataset, path) -> np.ndarray:
    """(frames, rows, columns) stored values, before rescaling."""
    frames, rows, cols = frame_shape(ds, path)
    if "PixelData" not in ds:
        raise InputError("no pixel data", path=path, code=ErrorCode.MISSING_FIELD)
    if _int(ds, "SamplesPerPixel", path, 1) != 1:
        raise InputError("only single-sample (grayscale) images are supported", path=path,
                         code=ErrorCode.UNSUPPORTED_FORMAT)
    bits = _int(ds, "BitsAllocated", path)
    signed = _int(ds, "PixelRepresentation", path, 0) == 1
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta else None
    if ts is None or not ts.is_compressed:
        # without a File Meta header pydicom guessed the encoding from the first element
        little = ts.is_little_endian if ts is not None else (getattr(ds, "original_encoding", (None, True))[1] is not False)
        dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}").newbyteorder("<" if little else ">")
        raw = ds.PixelData
        need = frames * rows * cols * dtype.itemsize
        if len(raw) < need:
            raise InputError(f"pixel data holds {len(raw)} bytes, header needs {need}", path=path,
                             code=ErrorCode.CORRUPT_FILE)
        arr = np.frombuffer(raw, dtype=dtype, count=frames * rows * cols).astype(dtype.newbyteorder("="))
        return arr.reshape(frames, rows, cols)
    _check_decoder(ts, path)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InputError(f"cannot decode {ts.name} pixel data: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    return np.asarray(arr).reshape(frames, rows, cols)


#: What to install for each compressed transfer syntax (RLE needs nothing: pydicom decodes it with numpy).
DECODER_PACKAGES = {
    "JPEG Lossless": "pylibjpeg pylibjpeg-libjpeg (pip install 'addiffdose[jpeg]')",
    "JPEG Baseline": "pylibjpeg pylibjpeg-libjpeg (pip install 'addiffdose[jpeg]')",
    "JPEG Extended": "pylibjpeg pylibjpeg-libjpeg (pip install 'addiffdose[jpeg]')",
    "JPEG-LS": "pylibjpeg pylibjpeg-libjpeg (pip install 'addiffdose[jpeg]')",
    "JPEG 2000": "pylibjpeg pylibjpeg-openjpeg (pip install 'addiffdose[jpeg]')",
    "RLE": "pydicom >= 3 (built in), or pylibjpeg pylibjpeg-rle",
}


def _check_decoder(ts, path) -> None:
    """A one-line error naming the package to install when pydicom has no decoder for `ts`."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise InputError(f"pixel data in {ts.name} ({ts}): no decoder exists for this transfer syntax", path=path,
                         code=ErrorCode.UNSUPPORTED_FORMAT) from None
    if not decoder.is_available:
        package = next((v for k, v in DECODER_PACKAGES.items() if ts.name.startswith(k)), "gdcm or pylibjpeg")
        raise InputError(f"pixel data in {ts.name}: install {package} to decode it", path=path,
                         code=ErrorCode.DEPENDENCY_MISSING)


def floats(ds: pydicom.Dataset, keyword: str, n: int, path) -> np.ndarray:
    """A multi-valued numeric attribute as n finite floats, else InputError."""
    value = ds.get(keyword)
    try:
        items = value if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)) else [value]
        arr = np.asarray([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise InputError(f"{keyword} must be {n} numbers, got {value!r}", path=path, code=ErrorCode.MISSING_FIELD)
    return arr

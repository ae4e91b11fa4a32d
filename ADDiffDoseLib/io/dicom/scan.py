"""Index a DICOM file or folder by UIDs, reading headers only (no pixel data)."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from ...errors import ErrorCode, InputError, one_line

log = logging.getLogger(__name__)

#: Folders with more files than this are refused (a wrong folder, not a study).
MAX_FILES = 20000


@dataclass(frozen=True)
class DicomFile:
    """Header summary of one DICOM file."""

    path: Path
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    file_meta: bool = True  # False: read without preamble / File Meta header (transfer syntax guessed)


@dataclass
class SeriesInfo:
    """One series (a set of files sharing SeriesInstanceUID)."""

    series_uid: str
    study_uid: str
    modality: str
    frame_of_reference_uid: str
    description: str = ""
    files: list[DicomFile] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]

    def summary(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.modality} series {self.series_uid} ({len(self.files)} files{desc}) of study {self.study_uid}"


#: Elements a dataset read without its File Meta header must have, by modality (besides the UIDs).
_REQUIRED_WITHOUT_META = {
    "CT": ("Rows", "Columns", "BitsAllocated", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient"),
    "RTDOSE": ("Rows", "Columns", "BitsAllocated", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient"),
    "RTSTRUCT": ("StructureSetROISequence",),
    "RTPLAN": (),
}
_UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@contextmanager
def third_party_warnings(sink: list[str]):
    """Warnings that pydicom (or numpy) issues inside the block become one-line entries of `sink` (the case's
    warnings) instead of multi-line Python warnings on stderr; each distinct message once (a file is read
    more than once: header scan, then in full)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    found = []
    for w in caught:
        source = (w.filename or "").replace("\\", "/").split("/site-packages/")[-1].split("/")[0] or "python"
        found.append(f"{source}: {one_line(w.message)}")
    sink += [t for t in dict.fromkeys(found) if t not in sink]


def has_file_meta(ds: pydicom.Dataset) -> bool:
    """Whether the dataset came with a File Meta header (and so a known transfer syntax)."""
    meta = getattr(ds, "file_meta", None)
    return bool(meta) and "TransferSyntaxUID" in meta


def dcmread_lenient(path: Path, *, stop_before_pixels: bool) -> pydicom.Dataset:
    """dcmread; a file without the 128-byte preamble / File Meta header (Monaco exports, pydicom's own
    rtstruct.dcm) is read with force=True and kept only if it is a CT, RT Structure Set, RT Plan or RT Dose
    with the elements we need. InvalidDicomError (naming what is missing) otherwise."""
    try:
        return _converted(pydicom.dcmread(path, stop_before_pixels=stop_before_pixels))
    except InvalidDicomError:
        pass
    from .uids import SOP_CLASS_MODALITY

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        sop_class = str(ds.get("SOPClassUID", "") or "")
    except Exception as exc:  # garbage parsed as DICOM fails in many ways
        raise InvalidDicomError(f"no DICOM preamble or File Meta header, and not readable without ({exc})") from exc
    modality = SOP_CLASS_MODALITY.get(sop_class)
    if modality is None:
        raise InvalidDicomError("no DICOM preamble or File Meta header, and no CT / RT Structure Set / RT Plan / "
                                f"RT Dose SOP Class UID ({sop_class or 'none'})")
    missing = [k for k in _UIDS + _REQUIRED_WITHOUT_META[modality] if ds.get(k) in (None, "")]
    if missing:
        raise InvalidDicomError(f"{modality} without File Meta header lacks {', '.join(missing)}")
    return _converted(ds)


def _converted(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Convert the top-level raw values now (pydicom does it lazily), so that an undecodable one (an unknown VR)
    fails while reading, where the file is known; sequence items stay lazy (converting a large RT Structure Set's
    contours costs seconds)."""
    for _ in ds:
        pass
    return ds


def read_header(path: Path, *, strict: bool) -> pydicom.Dataset | None:
    """Header without pixel data; None for a non-DICOM file unless `strict` (then InputError)."""
    try:
        return dcmread_lenient(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        if strict:
            raise InputError(f"not a DICOM file ({exc})", path=path, code=ErrorCode.UNSUPPORTED_FORMAT) from exc
    except Exception as exc:  # pydicom raises many kinds on damaged files
        if strict:
            raise InputError(f"unreadable DICOM header: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    return None


def _summarise(path: Path, ds: pydicom.Dataset) -> DicomFile | None:
    from .uids import SOP_CLASS_MODALITY

    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")) or SOP_CLASS_MODALITY.get(sop_class, "")
    series = str(ds.get("SeriesInstanceUID", ""))
    if not modality or not series:
        return None
    return DicomFile(path, modality, sop_class, str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", "")),
                     series, str(ds.get("FrameOfReferenceUID", "")), has_file_meta(ds))


def scan(path: str | Path) -> list[SeriesInfo]:
    """Series found in a DICOM file or (recursively) a folder, in a stable order.

    Non-DICOM files inside a folder are skipped; a single non-DICOM file raises InputError.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path=path, code=ErrorCode.FILE_NOT_FOUND)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if len(files) > MAX_FILES:
            raise InputError(f"folder holds {len(files)} files (> {MAX_FILES}); point to one study", path=path,
                             code=ErrorCode.AMBIGUOUS_INPUT)
    else:
        files = [path]
    series: dict[str, SeriesInfo] = {}
    for f in files:
        ds = read_header(f, strict=not path.is_dir())
        if ds is None:
            continue
        info = _summarise(f, ds)
        if info is None:
            if not path.is_dir():
                raise InputError("DICOM file lacks Modality/SeriesInstanceUID", path=f, code=ErrorCode.MISSING_FIELD)
            continue
        s = series.setdefault(info.series_uid, SeriesInfo(info.series_uid, info.study_uid, info.modality,
                                                          info.frame_of_reference_uid, str(ds.get("SeriesDescription", ""))))
        s.files.append(info)
    if not series:
        raise InputError("no DICOM files found", path=path, code=ErrorCode.UNSUPPORTED_FORMAT)
    return sorted(series.values(), key=lambda s: (s.study_uid, s.modality, s.series_uid))


def list_dicom_series(path: str | Path) -> list[SeriesInfo]:
    """Public: the series of a DICOM file/folder (for `--series UID` and error messages)."""
    return scan(path)

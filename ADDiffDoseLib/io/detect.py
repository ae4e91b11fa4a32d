"""One entry point for every input kind: `read_case(path)` looks at the file and picks the reader.

Kinds: OpenKBP npz / CSV folder, pyRadPlan plan npz, GDP-HMM npz, our case npz, NRRD/NIfTI file or
folder (CT + .seg.nrrd + dose), DICOM file or folder (delegated to `io.dicom`).
`write_dose` picks the writer from the extension (.nrrd, .npz, .dcm).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from .. import NOT_FOR_CLINICAL_USE
from ..case import Case, implausible_dose
from ..errors import ErrorCode, InputError, OutputError
from .nrrd import find_volume_folder_parts, is_segmentation_path, is_volume_path

OPENKBP_CSV_MARKER = "possible_dose_mask.csv"


def _npz_keys(path: Path) -> list[str]:
    """Member names of an npz without loading arrays ('.npy' stripped)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a readable npz (zip) file: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc


def npz_kind(path: str | Path) -> str:
    """'case', 'dose', 'openkbp', 'pyradplan', 'gdphmm' or 'unknown' from an npz's member names."""
    keys = set(_npz_keys(Path(path)))
    if "structures_json" in keys and "grid_json" in keys:
        return "case"
    if "possible_dose_mask" in keys:
        return "openkbp"
    if "source" in keys and "gantry_deg" in keys:
        return "pyradplan"
    if "arr_0" in keys:
        return "gdphmm"
    if "dose" in keys and "grid_shape" in keys:
        return "dose"
    return "unknown"


def is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    # no preamble: a dataset starting with a File Meta (0002,xxxx) or Identifying (0008,xxxx) element, little endian
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00")


def _has_dicom(folder: Path, limit: int = 200) -> bool:
    for i, p in enumerate(folder.rglob("*")):
        if i >= limit:
            break
        if p.is_file() and is_dicom_file(p):
            return True
    return False


def _read_dicom(path: Path, series_uid, fractions=None):
    try:
        from .dicom import read_dicom
    except ImportError as exc:
        raise InputError(f"DICOM support is not available: {exc}", path=path,
                         code=ErrorCode.DEPENDENCY_MISSING) from exc
    return read_dicom(path, series_uid=series_uid, fractions=fractions)


def _read_npz(path: Path, data_root, mapping) -> Case:
    kind = npz_kind(path)
    if kind == "openkbp":
        from .openkbp import read_openkbp_npz

        return read_openkbp_npz(path)
    if kind == "pyradplan":
        from .pyradplan import read_pyradplan_plan

        return read_pyradplan_plan(path, data_root=data_root)
    if kind == "gdphmm":
        from .gdphmm import read_gdphmm_npz

        return read_gdphmm_npz(path, mapping=mapping)
    if kind == "case":
        from .case_npz import read_case_npz

        return read_case_npz(path)
    if kind == "dose":
        raise InputError("a dose-only file: give the case (CT and structures) it belongs to", path=path,
                         code=ErrorCode.MISSING_FIELD)
    raise InputError("npz file of unknown layout (not OpenKBP, pyRadPlan, GDP-HMM or ADDiffDose)", path=path,
                     code=ErrorCode.UNSUPPORTED_FORMAT)


def read_case(path: str | Path, *, data_root: str | Path | None = None, series_uid: str | None = None,
              mapping: Mapping | None = None, fractions: int | None = None) -> Case:
    """Read any supported input into a Case (format detected from content, not only the name).

    fractions: the number of fractions of a DICOM RT Dose with DoseSummationType FRACTION when no RT Plan gives it
    (it overrides the plan's). Every case with a dose is checked for a maximum that cannot be right
    (:func:`~ADDiffDoseLib.case.implausible_dose`), which becomes one of its warnings.
    """
    case = _read_case(Path(path), data_root, series_uid, mapping, fractions)
    if case.dose_gy is not None and not any(w.startswith("implausible dose") for w in case.warnings):
        w = implausible_dose(float(case.dose_gy.max()), case.max_prescription_gy)
        if w:
            case = case.replace(warnings=(*case.warnings, w))
    return case


def _read_case(path: Path, data_root, series_uid, mapping, fractions) -> Case:
    if not path.exists():
        raise InputError("no such file or folder", path=path, code=ErrorCode.FILE_NOT_FOUND)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return _read_npz(path, data_root, mapping)
        if is_segmentation_path(path):
            from .nrrd import read_nrrd_case

            return read_nrrd_case(None, path, mapping=mapping)
        if is_volume_path(path):
            from .nrrd import read_nrrd_case

            return read_nrrd_case(path, mapping=mapping)
        if is_dicom_file(path):
            return _read_dicom(path, series_uid, fractions)
        raise InputError("unsupported file type", path=path, code=ErrorCode.UNSUPPORTED_FORMAT)
    if (path / OPENKBP_CSV_MARKER).is_file():
        from .openkbp import read_openkbp_csv_folder

        return read_openkbp_csv_folder(path)
    ct, seg, dose = find_volume_folder_parts(path)
    if ct is not None or seg is not None:
        from .nrrd import read_nrrd_case

        return read_nrrd_case(ct, seg, dose, mapping=mapping, name=path.name)
    if _has_dicom(path):
        return _read_dicom(path, series_uid, fractions)
    raise InputError("folder holds no recognised case (OpenKBP CSV, NRRD/NIfTI, DICOM)", path=path,
                     code=ErrorCode.UNSUPPORTED_FORMAT)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def is_case_folder(folder: Path) -> bool:
    if (folder / OPENKBP_CSV_MARKER).is_file():
        return True
    try:
        ct, seg, _ = find_volume_folder_parts(folder)
    except InputError:
        return True  # a volume folder, if an ambiguous one: let read_case say so
    if ct is not None or seg is not None:
        return True
    return any(p.is_file() and is_dicom_file(p) for p in list(folder.iterdir())[:50])


def iter_cases(folder: str | Path) -> Iterator[tuple[str, Path]]:
    """(name, path) for each case in a folder: case npz files (not dose-only files), and case sub-folders
    (OpenKBP CSV, NRRD/NIfTI, DICOM). A folder that is itself one case yields only itself."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder", path=folder, code=ErrorCode.FILE_NOT_FOUND)
    if is_case_folder(folder):
        yield folder.name, folder
        return
    for p in sorted(folder.iterdir(), key=lambda q: _natural_key(q.name)):
        if p.is_file() and p.suffix.lower() == ".npz":
            try:
                if npz_kind(p) in ("dose", "unknown"):
                    continue
            except InputError:
                pass  # damaged: yield it, so that reading it reports the damage instead of skipping it silently
            yield p.stem, p
        elif p.is_dir() and is_case_folder(p):
            yield p.name, p


def write_dose(path: str | Path, case: Case, dose_gy: np.ndarray, *, extra: dict | None = None,
               provenance: dict | None = None, overwrite: bool = False) -> Path:
    """Write a dose on `case.grid` by extension: .nrrd (provenance in the header), .npz (extra arrays
    such as dose_std), .dcm (RT Dose). Every output carries the not-for-clinical-use notice."""
    path = Path(path)
    case.grid.check_array(np.asarray(dose_gy), "dose", path=path)
    name = path.name.lower()
    if name.endswith((".nrrd", ".nhdr")):
        from .nrrd import write_dose_nrrd

        return write_dose_nrrd(path, dose_gy, case.grid, provenance, overwrite)
    if name.endswith(".npz"):
        from .case_npz import write_dose_npz

        meta = {"case": case.name, "notice": NOT_FOR_CLINICAL_USE, **(provenance or {})}
        return write_dose_npz(path, dose_gy, case.grid, extra_arrays=extra, metadata=meta, overwrite=overwrite)
    if name.endswith(".dcm"):
        try:
            from .dicom import write_rtdose
        except ImportError as exc:
            raise OutputError(f"DICOM output is not available: {exc}", path=path,
                              code=ErrorCode.DEPENDENCY_MISSING) from exc
        return write_rtdose(path, case, dose_gy, provenance=provenance, overwrite=overwrite)
    raise OutputError("unknown dose output type; use .nrrd, .npz or .dcm", path=path,
                      code=ErrorCode.UNSUPPORTED_FORMAT)

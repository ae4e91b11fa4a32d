"""NRRD / NIfTI scalar volumes (CT, dose) and 3D Slicer segmentations (.seg.nrrd), read and write.

Volumes come back as (k, j, i) arrays with a :class:`Grid` in LPS. NRRD 'space' may be LPS or RAS; NIfTI
affines are RAS and are converted. Segmentations go through slicerio (overlapping segments sit in
several layers); each segment becomes a bool mask on the reference (CT) grid, even when the
segmentation covers only part of it.
"""

from __future__ import annotations

import ast
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import NOT_FOR_CLINICAL_USE
from ..case import Case, Plan, Role, Structure
from ..errors import ErrorCode, GeometryError, InputError
from ..geometry import LPS_TO_RAS, Grid, resample_to_grid
from ..names import assign_names
from .atomic import atomic_path

log = logging.getLogger(__name__)

NRRD_SUFFIXES = (".nrrd", ".nhdr")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_TAG_ROLE = "ADDiffDose.Role"
_TAG_RX = "ADDiffDose.PrescriptionGy"
_TAG_ORIGINAL = "ADDiffDose.OriginalName"
#: Key-value field (``ADDiffDose_DoseUnit:=Gy``) holding the dose unit. NRRD's own ``units`` field is one unit per
#: space axis (mm), not the unit of the values; writing "Gy" there makes ITK / Slicer refuse the file.
DOSE_UNIT_FIELD = "ADDiffDose_DoseUnit"
#: Prefix of our key-value fields (provenance, notice) in dose headers.
FIELD_PREFIX = "ADDiffDose_"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (".seg.nrrd", ".nii.gz", ".nrrd", ".nhdr", ".nii"):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def is_volume_path(path: Path) -> bool:
    return _suffix(Path(path)) in NRRD_SUFFIXES + NIFTI_SUFFIXES


def is_segmentation_path(path: Path) -> bool:
    return Path(path).name.lower().endswith(".seg.nrrd")


def _grid_from_ijk_to_lps(size_ijk, matrix_ijk_lps: np.ndarray, path) -> Grid:
    m = np.asarray(matrix_ijk_lps, dtype=np.float64)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(m)):
        raise GeometryError(f"degenerate voxel axes {m[:3, :3].tolist()}", path=path, code=ErrorCode.INVALID_GEOMETRY)
    try:
        return Grid.from_ijk(size_ijk, spacing, m[:3, 3], m[:3, :3] / spacing)
    except GeometryError as exc:
        raise GeometryError(exc.message, path=path, code=exc.code) from exc


def _nrrd_ijk_to_lps(header: dict, path) -> np.ndarray:
    """4x4 ijk -> LPS from an NRRD header (space directions rows are the i, j, k axis vectors)."""
    space = str(header.get("space", "left-posterior-superior")).lower()
    m = np.eye(4)
    if "space directions" in header:
        dirs = np.asarray(header["space directions"], dtype=np.float64)
        dirs = dirs[[i for i in range(dirs.shape[0]) if np.all(np.isfinite(dirs[i]))]]  # drop 'none' (list axis)
        if dirs.shape != (3, 3):
            raise GeometryError(f"need 3 spatial axes, got space directions {dirs.tolist()}", path=path,
                                code=ErrorCode.INVALID_GEOMETRY)
        m[:3, :3] = dirs.T
    else:  # no geometry: axis-aligned with the 'spacings' field (or 1 mm)
        m[:3, :3] = np.diag(np.asarray(header.get("spacings", [1.0, 1.0, 1.0]), dtype=np.float64)[-3:])
        log.warning("%s: no 'space directions'; assuming axis-aligned LPS", path)
    m[:3, 3] = np.asarray(header.get("space origin", [0.0, 0.0, 0.0]), dtype=np.float64)
    if space in ("right-anterior-superior", "ras", "3d-right-handed"):
        m[:3, :] = LPS_TO_RAS @ m[:3, :]
    elif space not in ("left-posterior-superior", "lps", "3d-left-handed"):
        raise GeometryError(f"unsupported NRRD space {space!r}", path=path, code=ErrorCode.INVALID_GEOMETRY)
    return m


def read_volume(path: str | Path) -> tuple[np.ndarray, Grid, dict]:
    """Read a scalar NRRD/NIfTI volume: ((k, j, i) float32 array, grid, header dict)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path, code=ErrorCode.FILE_NOT_FOUND)
    suffix = _suffix(path)
    if suffix in NRRD_SUFFIXES or suffix == ".seg.nrrd":
        import nrrd

        try:
            data, header = nrrd.read(str(path), index_order="C")
        except Exception as exc:  # pynrrd raises NRRDError and assorted parse errors
            raise InputError(f"cannot read NRRD: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
        if data.ndim != 3:
            raise InputError(f"expected a 3D scalar volume, got {data.ndim} dimensions", path=path,
                             code=ErrorCode.UNSUPPORTED_FORMAT)
        grid = _grid_from_ijk_to_lps(data.shape[::-1], _nrrd_ijk_to_lps(header, path), path)
        return np.asarray(data, dtype=np.float32), grid, dict(header)
    if suffix in NIFTI_SUFFIXES:
        import nibabel

        try:
            img = nibabel.load(str(path))
            data = np.asarray(img.get_fdata(dtype=np.float32))
        except Exception as exc:
            raise InputError(f"cannot read NIfTI: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise InputError(f"expected a 3D scalar volume, got shape {data.shape}", path=path,
                             code=ErrorCode.UNSUPPORTED_FORMAT)
        m = np.asarray(img.affine, dtype=np.float64).copy()
        m[:3, :] = LPS_TO_RAS @ m[:3, :]  # NIfTI world is RAS
        grid = _grid_from_ijk_to_lps(data.shape, m, path)
        return np.ascontiguousarray(data.transpose(2, 1, 0)), grid, {"nifti_header": str(img.header)}
    raise InputError("not an NRRD or NIfTI file", path=path, code=ErrorCode.UNSUPPORTED_FORMAT)


def write_volume_nrrd(path: str | Path, array: np.ndarray, grid: Grid, overwrite: bool = False,
                      header_extra: dict | None = None) -> Path:
    """Write a (k, j, i) array on `grid` as an LPS NRRD (gzip). header_extra: key -> value fields (lists and
    dicts as JSON, so :func:`read_addiffdose_fields` gives them back as they were)."""
    import nrrd

    path = Path(path)
    grid.check_array(array, "volume", path=path)
    m = grid.ijk_to_lps_matrix()
    header = {"space": "left-posterior-superior", "space directions": m[:3, :3].T, "space origin": m[:3, 3],
              "kinds": ["domain"] * 3, "encoding": "gzip"}
    for key, value in (header_extra or {}).items():
        text = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
        header[str(key)] = text.replace("\n", " ")
    data = np.asarray(array)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    with atomic_path(path, overwrite) as tmp:
        nrrd.write(str(tmp), np.ascontiguousarray(data), header, index_order="C")
    return path


def _segment_tags(segment: dict) -> dict:
    tags = segment.get("tags") or {}
    return tags if isinstance(tags, dict) else {}


def _read_segmentation(path: Path, reference_grid: Grid | None, mapping) -> tuple[dict, Grid, list[str]]:
    import slicerio

    if not path.is_file():
        raise InputError("file not found", path=path, code=ErrorCode.FILE_NOT_FOUND)
    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:
        raise InputError(f"cannot read segmentation: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    voxels = seg.get("voxels")
    if voxels is None or voxels.ndim not in (3, 4):
        raise InputError("segmentation has no 3D voxel data", path=path, code=ErrorCode.CORRUPT_FILE)
    seg_grid = _grid_from_ijk_to_lps(voxels.shape[-3:], seg["ijkToLPS"], path)
    grid = reference_grid or seg_grid
    segments = seg.get("segments", [])
    seg_names = [str(s.get("name") or s.get("id")) for s in segments]
    infos, warnings = assign_names(seg_names, mapping)
    structures = {}
    for segment, seg_name, info in zip(segments, seg_names, infos):
        original = str(_segment_tags(segment).get(_TAG_ORIGINAL) or seg_name)
        if _TAG_ROLE in _segment_tags(segment) and segment.get("id") and not (mapping and seg_name in mapping):
            info = replace(info, name=str(segment["id"]))  # our own file: the ID is the normalized name we wrote
        mask = slicerio.segment_mask(seg, segment).transpose(2, 1, 0)  # (i, j, k) -> (k, j, i)
        if not seg_grid.same_as(grid):
            mask = resample_to_grid(mask, seg_grid, grid, order=0)
        tags = _segment_tags(segment)
        role, rx = info.role, info.prescription_gy
        if _TAG_ROLE in tags and not (mapping and seg_name in mapping):  # our own file: keep what we wrote
            role = Role(tags[_TAG_ROLE])
            rx = float(tags[_TAG_RX]) if tags.get(_TAG_RX) not in (None, "", "None") else None
        color = tuple(float(c) for c in segment["color"]) if segment.get("color") is not None else None
        structures[info.name] = Structure(info.name, mask, role, rx, original, color)
    return structures, grid, warnings


def read_segmentation(path: str | Path, reference_grid: Grid | None = None, mapping=None) -> dict[str, Structure]:
    """Read a Slicer .seg.nrrd: normalized name -> Structure with a bool mask on `reference_grid`
    (default: the segmentation's own grid)."""
    return _read_segmentation(Path(path), reference_grid, mapping)[0]


def write_segmentation_nrrd(path: str | Path, case: Case, overwrite: bool = False) -> Path:
    """Write the case's structures as a Slicer .seg.nrrd on the case grid (extra layers where masks overlap)."""
    import slicerio

    path = Path(path)
    shape_ijk = case.grid.size_ijk
    seg = slicerio.create_segmentation(shape_ijk, case.grid.ijk_to_lps_matrix())
    seg["containedRepresentationNames"] = ["Binary labelmap", "Closed surface"]
    seg["masterRepresentation"] = "Binary labelmap"
    seg["referenceImageExtentOffset"] = [0, 0, 0]
    names = case.names_as_read()  # the names as read ('BODY'); the normalized name is the segment ID
    palette = _default_colors(len(case.structures))
    for (key, s), color in zip(case.structures.items(), palette):
        tags = {_TAG_ROLE: s.role.value, _TAG_RX: "" if s.prescription_gy is None else f"{s.prescription_gy:g}",
                _TAG_ORIGINAL: s.original_name or key}
        slicerio.add_segment(seg, s.mask.transpose(2, 1, 0),
                             {"id": key, "name": names[key], "color": list(s.color_rgb or color), "tags": tags})
    with atomic_path(path, overwrite) as tmp:
        slicerio.write_segmentation(str(tmp), seg)
    return path


def _default_colors(n: int) -> list[tuple[float, float, float]]:
    import colorsys

    return [colorsys.hsv_to_rgb((0.61803 * i) % 1.0, 0.65, 0.95) for i in range(n)]


def read_nrrd_case(ct_path: str | Path | None, seg_path: str | Path | None = None,
                   dose_path: str | Path | None = None, mapping=None, name: str | None = None) -> Case:
    """A Case from a CT volume, an optional .seg.nrrd (resampled onto the CT grid) and an optional dose (Gy).

    Without a CT the segmentation's grid is used. The dose is resampled onto the grid when it differs.
    Beams are unknown (the plan is empty): inspect warns, and predict needs them from the user.
    """
    if ct_path is None and seg_path is None:
        raise InputError("need a CT volume or a segmentation", code=ErrorCode.MISSING_FIELD)
    warnings: list[str] = []
    ct = grid = None
    if ct_path is not None:
        ct, grid, _ = read_volume(ct_path)
    structures = {}
    if seg_path is not None:
        structures, grid, warnings = _read_segmentation(Path(seg_path), grid, mapping)
    dose = None
    if dose_path is not None:
        dose, dose_grid, _ = read_volume(dose_path)
        if not dose_grid.same_as(grid):
            dose = resample_to_grid(dose, dose_grid, grid, order=1)
            warnings.append("dose resampled onto the CT grid")
    first = Path(ct_path if ct_path is not None else seg_path)
    case_name = name or (first.parent.name if first.stem.split(".")[0].lower() in ("ct", "image", "segmentation")
                         else first.name.split(".")[0])
    metadata = {"patient_id": case_name, "format": "nrrd", "path": str(first)}
    return Case(name=case_name, grid=grid, ct_hu=ct, structures=structures, plan=Plan(source="user"),
                dose_gy=dose, metadata=metadata, warnings=tuple(warnings))


def find_volume_folder_parts(folder: str | Path) -> tuple[Path | None, Path | None, Path | None]:
    """(ct, segmentation, dose) paths inside a folder of NRRD/NIfTI files; None where absent."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    segs = [p for p in files if is_segmentation_path(p)]
    vols = [p for p in files if is_volume_path(p) and not is_segmentation_path(p)]
    dose = [p for p in vols if p.name.lower().split(".")[0] in ("dose", "rtdose", "dose_gy")]
    ct = [p for p in vols if p.name.lower().split(".")[0] in ("ct", "image", "ct_hu")]
    others = [p for p in vols if p not in dose and p not in ct]
    if not ct and len(others) == 1:
        ct = others
    if len(ct) > 1 or len(segs) > 1 or len(dose) > 1:
        raise InputError(f"several candidate volumes in the folder: ct {len(ct)}, segmentations {len(segs)}, "
                         f"doses {len(dose)}", path=folder, code=ErrorCode.AMBIGUOUS_INPUT)
    return (ct[0] if ct else None, segs[0] if segs else None, dose[0] if dose else None)


def _field_value(text: str):
    """A header field as written: JSON lists/dicts decoded (older files: their Python repr), else the text."""
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            try:
                return ast.literal_eval(text)  # literals only: safe on untrusted headers
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
    return text


def read_addiffdose_fields(path: str | Path) -> dict:
    """The ``ADDiffDose_*`` key-value fields of an NRRD header (prefix dropped, structured values decoded)."""
    import nrrd

    path = Path(path)
    try:
        header = nrrd.read_header(str(path))
    except Exception as exc:  # pynrrd raises NRRDError and assorted parse errors
        raise InputError(f"unreadable NRRD header: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    return {k[len(FIELD_PREFIX):]: _field_value(str(v)) for k, v in header.items() if k.startswith(FIELD_PREFIX)}


def write_dose_nrrd(path: str | Path, dose_gy: np.ndarray, grid: Grid, provenance: dict | None = None,
                    overwrite: bool = False) -> Path:
    """A dose volume (float32 Gy) with provenance fields, the dose unit (:data:`DOSE_UNIT_FIELD`) and the
    not-for-clinical-use notice in the header (all key-value fields, which ITK and Slicer keep as metadata)."""
    extra = {DOSE_UNIT_FIELD: "Gy", "ADDiffDose_notice": NOT_FOR_CLINICAL_USE}
    for key, value in (provenance or {}).items():
        extra[f"{FIELD_PREFIX}{key}"] = value
    return write_volume_nrrd(path, np.asarray(dose_gy, dtype=np.float32), grid, overwrite, extra)


def write_dose_std_nrrd(path: str | Path, std_gy: np.ndarray, grid: Grid, quantity: str,
                        overwrite: bool = False) -> Path:
    """The uncertainty map beside a dose: in Gy, described by `quantity`, never marked as a dose."""
    extra = {DOSE_UNIT_FIELD: "Gy", "ADDiffDose_quantity": quantity, "ADDiffDose_notice": NOT_FOR_CLINICAL_USE}
    return write_volume_nrrd(path, np.asarray(std_gy, dtype=np.float32), grid, overwrite, extra)


__all__ = ["read_volume", "read_segmentation", "write_volume_nrrd", "write_segmentation_nrrd", "read_nrrd_case",
           "write_dose_nrrd", "write_dose_std_nrrd", "find_volume_folder_parts", "read_addiffdose_fields"]

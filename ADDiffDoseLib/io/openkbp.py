"""OpenKBP head-and-neck cases: the compact npz layout and the original sparse-CSV folders.

Arrays are (128, 128, 128): axis 0 anterior -> posterior (+y LPS), axis 1 patient right -> left (+x),
axis 2 superior -> inferior (-z). The data carry no origin: the grid centre is put at LPS (0, 0, 0).
CT is stored as HU + 1000 (0 outside the scan = -1000 HU); dose as cGy (npz) or Gy (CSV).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from ..case import Case, Plan, Role, Structure, equispaced_beams
from ..errors import ErrorCode, GeometryError, InputError, OutputError
from ..geometry import Grid
from ..names import OPENKBP_TO_TG263, TG263_TO_OPENKBP
from .atomic import write_text_atomic

OPENKBP_SHAPE = (128, 128, 128)
OPENKBP_STRUCTURES = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible",
                      "PTV56", "PTV63", "PTV70")
OPENKBP_PRESCRIPTIONS_GY = {"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}
OPENKBP_FRACTIONS = 35
# direction columns in array-axis order: a0 -> +y (posterior), a1 -> +x (left), a2 -> -z (inferior)
OPENKBP_DIRECTION = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
CT_OFFSET = 1000  # stored CT = HU + 1000


def openkbp_grid(voxel_dimensions, shape=OPENKBP_SHAPE) -> Grid:
    """The LPS grid of an OpenKBP array: spacing = voxel_dimensions (mm, axes 0, 1, 2), centre at (0, 0, 0)."""
    spacing = np.asarray(voxel_dimensions, dtype=np.float64).reshape(-1)
    centre_index = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    origin = -OPENKBP_DIRECTION @ (centre_index * spacing)
    return Grid(tuple(shape), spacing, origin, OPENKBP_DIRECTION)


def openkbp_plan() -> Plan:
    """The plan every OpenKBP patient had: 9 equispaced 6 MV IMRT fields, 35 fractions."""
    return Plan(beams=equispaced_beams(9), fractions=OPENKBP_FRACTIONS, isocenter_lps=None,
                site="head-and-neck", source="openkbp-clinical")


def _unpack_mask(packed: np.ndarray, key: str, path) -> np.ndarray:
    n = int(np.prod(OPENKBP_SHAPE))
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8))
    if bits.size < n:
        raise InputError(f"{key}: packed mask holds {bits.size} bits, need {n}", path=path, code=ErrorCode.CORRUPT_FILE)
    return bits[:n].reshape(OPENKBP_SHAPE).astype(bool)


def _open_npz(path: Path):
    if not path.is_file():
        raise InputError("file not found", path=path, code=ErrorCode.FILE_NOT_FOUND)
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"not a readable npz file: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc


def load_openkbp_arrays(path: str | Path) -> dict:
    """Fast raw loader (training path). Returns a dict:

    ct: int16 (128,128,128) HU; dose: float32 Gy or None; masks: {OpenKBP name: bool array} for the
    structures present; possible_dose_mask: bool; voxel_dimensions: float32 (3,) mm.
    """
    path = Path(path)
    with _open_npz(path) as f:
        try:
            for key in ("ct", "possible_dose_mask", "voxel_dimensions"):
                if key not in f.files:
                    raise InputError(f"not an OpenKBP npz: key {key!r} missing", path=path,
                                     code=ErrorCode.MISSING_FIELD)
            ct = f["ct"]
            if ct.shape != OPENKBP_SHAPE:
                raise GeometryError(f"CT has shape {ct.shape}, OpenKBP arrays are {OPENKBP_SHAPE}", path=path,
                                    code=ErrorCode.GRID_MISMATCH)
            out = {
                "ct": (ct.astype(np.int16) - np.int16(CT_OFFSET)).astype(np.int16),
                "dose": None,
                "possible_dose_mask": _unpack_mask(f["possible_dose_mask"], "possible_dose_mask", path),
                "voxel_dimensions": np.asarray(f["voxel_dimensions"], dtype=np.float32).reshape(-1),
                "masks": {},
            }
            if "dose" in f.files:
                dose = f["dose"]
                if dose.shape != OPENKBP_SHAPE:
                    raise GeometryError(f"dose has shape {dose.shape}", path=path, code=ErrorCode.GRID_MISMATCH)
                # uint16 cGy -> Gy; float doses (other producers) are taken as Gy already
                out["dose"] = (dose.astype(np.float32) / 100.0 if dose.dtype.kind in "ui"
                               else dose.astype(np.float32))
            for key in f.files:
                if key.startswith("mask_"):
                    out["masks"][key[5:]] = _unpack_mask(f[key], key, path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise InputError(f"damaged npz member: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    if out["voxel_dimensions"].shape != (3,) or np.any(~np.isfinite(out["voxel_dimensions"])) \
            or np.any(out["voxel_dimensions"] <= 0):
        raise GeometryError(f"voxel_dimensions must be 3 positive sizes, got {out['voxel_dimensions'].tolist()}",
                            path=path, code=ErrorCode.INVALID_GEOMETRY)
    return out


def case_from_openkbp_arrays(arrays: dict, name: str, *, fmt: str = "openkbp-npz", path=None) -> Case:
    """Build a Case from :func:`load_openkbp_arrays` output (TG-263 names, OpenKBP names kept as original_name)."""
    grid = openkbp_grid(arrays["voxel_dimensions"])
    structures = {"External": Structure("External", arrays["possible_dose_mask"], Role.EXTERNAL,
                                        original_name="possible_dose_mask")}
    warnings = []
    for okbp_name, mask in arrays["masks"].items():
        canonical = OPENKBP_TO_TG263.get(okbp_name)
        if canonical is None:
            warnings.append(f"unknown OpenKBP structure {okbp_name!r} kept with role other")
            structures[okbp_name] = Structure(okbp_name, mask, Role.OTHER, original_name=okbp_name)
        elif okbp_name in OPENKBP_PRESCRIPTIONS_GY:
            structures[canonical] = Structure(canonical, mask, Role.TARGET, OPENKBP_PRESCRIPTIONS_GY[okbp_name],
                                              original_name=okbp_name)
        else:
            structures[canonical] = Structure(canonical, mask, Role.OAR, original_name=okbp_name)
    metadata = {"patient_id": name, "format": fmt}
    if path is not None:
        metadata["path"] = str(path)
    return Case(name=name, grid=grid, ct_hu=arrays["ct"].astype(np.float32), structures=structures,
                plan=openkbp_plan(), dose_gy=arrays["dose"], patient_position="HFS", metadata=metadata,
                warnings=tuple(warnings))


def read_openkbp_npz(path: str | Path) -> Case:
    """Read one OpenKBP patient from the compact npz layout (see the data README)."""
    path = Path(path)
    return case_from_openkbp_arrays(load_openkbp_arrays(path), path.stem, fmt="openkbp-npz", path=path)


# --- original CSV layout -------------------------------------------------------------------------
def _read_sparse_csv(path: Path, with_values: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """OpenKBP sparse CSV: header ',data', rows 'flat_index,value' (value empty for masks)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    lines = text.splitlines()
    if not lines or lines[0].strip().replace(" ", "") not in (",data", "data"):
        raise InputError("not an OpenKBP sparse CSV (header ',data' missing)", path=path, code=ErrorCode.CORRUPT_FILE)
    body = "\n".join(line for line in lines[1:] if line.strip())
    if not body:
        return np.zeros(0, dtype=np.int64), (np.zeros(0, dtype=np.float64) if with_values else None)
    try:
        if with_values:
            table = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2)
            return table[:, 0].astype(np.int64), table[:, 1]
        index = np.loadtxt(io.StringIO(body), delimiter=",", usecols=(0,), dtype=np.float64, ndmin=1)
        return index.astype(np.int64), None
    except ValueError as exc:
        raise InputError(f"malformed row: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc


def _dense(path: Path, with_values: bool, dtype) -> np.ndarray:
    index, values = _read_sparse_csv(path, with_values)
    n = int(np.prod(OPENKBP_SHAPE))
    if index.size and (index.min() < 0 or index.max() >= n):
        raise GeometryError(f"flat index out of range 0..{n - 1}", path=path, code=ErrorCode.GRID_MISMATCH)
    flat = np.zeros(n, dtype=dtype)
    flat[index] = values if with_values else True
    return flat.reshape(OPENKBP_SHAPE)


def read_openkbp_csv_folder(path: str | Path) -> Case:
    """Read one OpenKBP patient folder in the original CSV layout (ct.csv, dose.csv, masks, voxel_dimensions.csv)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("folder not found", path=path, code=ErrorCode.FILE_NOT_FOUND)
    for required in ("ct.csv", "possible_dose_mask.csv", "voxel_dimensions.csv"):
        if not (path / required).is_file():
            raise InputError(f"OpenKBP folder lacks {required}", path=path, code=ErrorCode.MISSING_FIELD)
    try:
        voxel = np.loadtxt(path / "voxel_dimensions.csv", dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise InputError(f"voxel_dimensions.csv: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    ct_stored = _dense(path / "ct.csv", True, np.float64)
    arrays = {
        "ct": (np.rint(ct_stored) - CT_OFFSET).astype(np.int16),
        "dose": _dense(path / "dose.csv", True, np.float32) if (path / "dose.csv").is_file() else None,
        "possible_dose_mask": _dense(path / "possible_dose_mask.csv", False, bool),
        "voxel_dimensions": voxel.astype(np.float32),
        "masks": {},
    }
    if arrays["voxel_dimensions"].shape != (3,):
        raise GeometryError("voxel_dimensions.csv must hold 3 values", path=path, code=ErrorCode.INVALID_GEOMETRY)
    for name in OPENKBP_STRUCTURES:
        if (path / f"{name}.csv").is_file():
            arrays["masks"][name] = _dense(path / f"{name}.csv", False, bool)
    return case_from_openkbp_arrays(arrays, path.name, fmt="openkbp-csv", path=path)


def _sparse_text(flat: np.ndarray, values: bool, fmt: str = "%.9g") -> str:
    nz = np.flatnonzero(flat)
    out = io.StringIO()
    out.write(",data\n")
    if values:
        np.savetxt(out, np.column_stack([nz, flat[nz]]), fmt=["%d", fmt], delimiter=",")
    else:
        np.savetxt(out, nz, fmt="%d,")
    return out.getvalue()


def write_openkbp_csv_folder(case: Case, folder: str | Path, overwrite: bool = False) -> Path:
    """Write `case` in OpenKBP's own CSV layout (CT as int HU + 1000, dose as Gy float).

    The case must be on an OpenKBP-oriented 128^3 grid. Structures are written under their OpenKBP
    names; the body (External) as possible_dose_mask.
    """
    folder = Path(folder)
    grid = case.grid
    if grid.shape != OPENKBP_SHAPE or not np.allclose(grid.direction, OPENKBP_DIRECTION, atol=1e-6):
        raise GeometryError("OpenKBP CSV needs a 128^3 grid in OpenKBP orientation", path=folder,
                            code=ErrorCode.GRID_MISMATCH)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise OutputError("folder exists and is not empty; pass --overwrite", path=folder,
                          code=ErrorCode.OUTPUT_EXISTS)
    if case.ct_hu is None:
        raise InputError("case has no CT to write", path=folder, code=ErrorCode.MISSING_FIELD)
    files = {}
    ct_stored = np.clip(np.rint(case.ct_hu) + CT_OFFSET, 0, None).astype(np.int64).reshape(-1)
    files["ct.csv"] = _sparse_text(ct_stored, True, "%d")
    if case.dose_gy is not None:
        files["dose.csv"] = _sparse_text(case.dose_gy.astype(np.float32).astype(np.float64).reshape(-1), True)
    body = case.body_mask
    if body is None:
        raise InputError("case has no External (body) structure for possible_dose_mask", path=folder,
                         code=ErrorCode.MISSING_FIELD)
    files["possible_dose_mask.csv"] = _sparse_text(body.reshape(-1), False)
    for key, s in case.structures.items():
        okbp = s.original_name if s.original_name in OPENKBP_STRUCTURES else TG263_TO_OPENKBP.get(key)
        if okbp in OPENKBP_STRUCTURES:
            files[f"{okbp}.csv"] = _sparse_text(s.mask.reshape(-1), False)
    files["voxel_dimensions.csv"] = "".join(f"{v:.9g}\n" for v in np.asarray(grid.spacing_mm, dtype=np.float32))
    for name, text in files.items():
        write_text_atomic(folder / name, text, overwrite=overwrite)
    return folder

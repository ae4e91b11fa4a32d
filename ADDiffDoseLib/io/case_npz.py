"""Our own compact npz files (no pickle): a whole Case, or a predicted dose.

Case file (`format` = 'addiffdose-case-1'): `ct_hu` int16, `mask_<n>` packbits uint8, `dose_gy` float32,
`grid_json`, `structures_json`, `plan_json`, `case_json` (name, patient position, metadata, warnings).
Dose file (`format` = 'addiffdose-dose-1'): `dose` float32 Gy (k, j, i) on the grid, optional extra arrays
such as `dose_std`, grid keys `grid_shape`, `grid_spacing_mm`, `grid_origin_lps`, `grid_direction`,
`metadata_json` and a `not_for_clinical_use` notice. Strings are 0-d unicode arrays.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .. import NOT_FOR_CLINICAL_USE
from ..case import Beam, Case, Plan, Role, Structure
from ..errors import ErrorCode, GeometryError, InputError
from ..geometry import Grid
from .atomic import atomic_path

CASE_FORMAT = "addiffdose-case-1"
DOSE_FORMAT = "addiffdose-dose-1"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _dumps(obj) -> np.ndarray:
    return np.array(json.dumps(obj, default=_json_default))


def _save(path: Path, arrays: dict, overwrite: bool) -> Path:
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would otherwise append '.npz' to the name
            np.savez_compressed(fh, **arrays)
    return path


def write_case_npz(path: str | Path, case: Case, overwrite: bool = False) -> Path:
    """Write a whole Case. CT is rounded to int16 HU."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"format": np.array(CASE_FORMAT), "grid_json": _dumps(case.grid.to_dict())}
    if case.ct_hu is not None:
        arrays["ct_hu"] = np.clip(np.rint(case.ct_hu), -32768, 32767).astype(np.int16)
    if case.dose_gy is not None:
        arrays["dose_gy"] = case.dose_gy.astype(np.float32)
    entries = []
    for i, (key, s) in enumerate(case.structures.items()):
        arrays[f"mask_{i}"] = np.packbits(s.mask.reshape(-1))
        entries.append({"key": key, "name": s.name, "role": s.role.value, "prescription_gy": s.prescription_gy,
                        "original_name": s.original_name, "color_rgb": list(s.color_rgb) if s.color_rgb else None})
    arrays["structures_json"] = _dumps(entries)
    arrays["plan_json"] = _dumps(case.plan.to_dict())
    arrays["case_json"] = _dumps({"name": case.name, "patient_position": case.patient_position,
                                  "metadata": case.metadata, "warnings": list(case.warnings)})
    arrays["not_for_clinical_use"] = np.array(NOT_FOR_CLINICAL_USE)
    return _save(path, arrays, overwrite)


def write_dose_npz(path: str | Path, dose_gy: np.ndarray, grid: Grid, extra_arrays: dict | None = None,
                   metadata: dict | None = None, overwrite: bool = False) -> Path:
    """Write a (predicted) dose: `dose` float32 Gy on `grid`, plus e.g. {'dose_std': ...} on the same grid."""
    path = Path(path)
    grid.check_array(dose_gy, "dose", path=path)
    arrays = {"format": np.array(DOSE_FORMAT), "dose": np.asarray(dose_gy, dtype=np.float32),
              "grid_shape": np.asarray(grid.shape, dtype=np.int64), "grid_spacing_mm": grid.spacing_mm,
              "grid_origin_lps": grid.origin_lps, "grid_direction": grid.direction,
              "metadata_json": _dumps(metadata or {}), "not_for_clinical_use": np.array(NOT_FOR_CLINICAL_USE)}
    for key, value in (extra_arrays or {}).items():
        if key in arrays:
            raise InputError(f"extra array name {key!r} is reserved", path=path, code=ErrorCode.INVALID_VALUE)
        value = np.asarray(value)
        if value.ndim == 3:
            grid.check_array(value, key, path=path)
        arrays[key] = value.astype(np.float32) if value.dtype.kind == "f" else value
    return _save(path, arrays, overwrite)


def _load(path: Path) -> dict:
    if not path.is_file():
        raise InputError("file not found", path=path, code=ErrorCode.FILE_NOT_FOUND)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as exc:
        if "Object arrays" in str(exc):  # an object array: we never unpickle these
            raise InputError("holds pickled objects; refused", path=path, code=ErrorCode.UNSAFE_CONTENT) from exc
        raise InputError(f"not a readable npz file: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"not a readable npz file: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc


def _json(arrays: dict, key: str, path: Path):
    if key not in arrays:
        raise InputError(f"key {key!r} missing", path=path, code=ErrorCode.MISSING_FIELD)
    try:
        return json.loads(str(arrays[key]))
    except json.JSONDecodeError as exc:
        raise InputError(f"{key}: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc


def read_dose_npz(path: str | Path) -> tuple[np.ndarray, Grid, dict, dict]:
    """Read a dose file: (dose float32 Gy, grid, extra arrays, metadata)."""
    path = Path(path)
    a = _load(path)
    if str(a.get("format", "")) != DOSE_FORMAT and "dose" not in a:
        raise InputError("not an ADDiffDose dose file", path=path, code=ErrorCode.UNSUPPORTED_FORMAT)
    for key in ("dose", "grid_shape", "grid_spacing_mm", "grid_origin_lps", "grid_direction"):
        if key not in a:
            raise InputError(f"key {key!r} missing", path=path, code=ErrorCode.MISSING_FIELD)
    grid = Grid(tuple(int(v) for v in a["grid_shape"]), a["grid_spacing_mm"], a["grid_origin_lps"],
                a["grid_direction"])
    dose = a["dose"].astype(np.float32)
    grid.check_array(dose, "dose", path=path)
    reserved = {"format", "dose", "grid_shape", "grid_spacing_mm", "grid_origin_lps", "grid_direction",
                "metadata_json", "not_for_clinical_use"}
    extras = {k: v for k, v in a.items() if k not in reserved}
    metadata = _json(a, "metadata_json", path) if "metadata_json" in a else {}
    return dose, grid, extras, metadata


def is_dose_npz(keys) -> bool:
    keys = set(keys)
    return "dose" in keys and "grid_shape" in keys and "structures_json" not in keys


def read_case_npz(path: str | Path, reference: Case | None = None) -> Case:
    """Read a case file; or a dose file onto `reference` (same grid required), giving reference.with_dose."""
    path = Path(path)
    a = _load(path)
    if is_dose_npz(a.keys()):
        if reference is None:
            raise InputError("this is a dose-only file; give the case it belongs to", path=path,
                             code=ErrorCode.MISSING_FIELD)
        dose, grid, _, metadata = read_dose_npz(path)
        if not grid.same_as(reference.grid):
            raise GeometryError("dose grid differs from the case grid", path=path, code=ErrorCode.GRID_MISMATCH)
        return reference.with_dose(dose).replace(metadata={**reference.metadata, "dose_metadata": metadata})
    if str(a.get("format", "")) != CASE_FORMAT:
        raise InputError("not an ADDiffDose case file", path=path, code=ErrorCode.UNSUPPORTED_FORMAT)
    grid = Grid.from_dict(_json(a, "grid_json", path))
    n = int(np.prod(grid.shape))
    structures = {}
    for i, e in enumerate(_json(a, "structures_json", path)):
        bits = np.unpackbits(a[f"mask_{i}"])
        if bits.size < n:
            raise InputError(f"mask {e['key']!r} is truncated", path=path, code=ErrorCode.CORRUPT_FILE)
        structures[e["key"]] = Structure(e["name"], bits[:n].reshape(grid.shape).astype(bool), Role(e["role"]),
                                         e["prescription_gy"], e["original_name"],
                                         tuple(e["color_rgb"]) if e.get("color_rgb") else None)
    p = _json(a, "plan_json", path)
    beams = tuple(Beam(**{**b, "arc_gantry_deg": tuple(b["arc_gantry_deg"]) if b.get("arc_gantry_deg") else None})
                  for b in p["beams"])
    plan = Plan(beams, p["fractions"], tuple(p["isocenter_lps"]) if p["isocenter_lps"] else None, p["site"],
                p["source"])
    c = _json(a, "case_json", path)
    return Case(name=c["name"], grid=grid, ct_hu=a["ct_hu"].astype(np.float32) if "ct_hu" in a else None,
                structures=structures, plan=plan, dose_gy=a.get("dose_gy"), patient_position=c["patient_position"],
                metadata=c.get("metadata", {}), warnings=tuple(c.get("warnings", ())))

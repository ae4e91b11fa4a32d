"""Beam-varied pyRadPlan plans on OpenKBP anatomies (`openkbp-pyradplan/<split>/<patient>_<k>.npz`).

A plan file holds the dose (float16 Gy, total), the beams and the isocentre in voxel indices; the anatomy
is the OpenKBP npz named in `source`, relative to the data root.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from ..case import Beam, Case, Plan, Role
from ..errors import ErrorCode, GeometryError, InputError
from .openkbp import OPENKBP_SHAPE, read_openkbp_npz

PLAN_KEYS = ("dose", "gantry_deg", "source")


def _load_plan_arrays(path: Path) -> dict:
    if not path.is_file():
        raise InputError("file not found", path=path, code=ErrorCode.FILE_NOT_FOUND)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in PLAN_KEYS if k not in f.files]
            if missing:
                raise InputError(f"not a pyRadPlan plan file: missing {missing}", path=path,
                                 code=ErrorCode.MISSING_FIELD)
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"not a readable npz file: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc


def _beams(a: dict, path: Path) -> tuple[Beam, ...]:
    # stored as float32: round away the float32 noise (7.199999809 -> 7.2)
    gantry = np.round(np.asarray(a["gantry_deg"], dtype=float).reshape(-1), 4)
    n = gantry.size
    couch = np.round(np.asarray(a.get("couch_deg", np.zeros(n)), dtype=float).reshape(-1), 4)
    collimator = np.round(np.asarray(a.get("collimator_deg", np.zeros(n)), dtype=float).reshape(-1), 4)
    if couch.size != n or collimator.size != n:
        raise InputError(f"{n} gantry angles but {couch.size} couch and {collimator.size} collimator angles",
                         path=path, code=ErrorCode.CORRUPT_FILE)
    energy = float(a["energy_mv"]) if "energy_mv" in a else 6.0
    technique = str(a["technique"]) if "technique" in a else "IMRT"
    return tuple(Beam(g, c, k, energy, technique) for g, c, k in zip(gantry, couch, collimator))


def read_pyradplan_plan(path: str | Path, data_root: str | Path | None = None) -> Case:
    """Read a plan file and its anatomy into one Case (plan.source 'pyradplan').

    data_root: the folder that `source` is relative to; default `path.parents[2]`
    (`<root>/openkbp-pyradplan/<split>/<file>`).
    """
    path = Path(path)
    a = _load_plan_arrays(path)
    root = Path(data_root) if data_root is not None else path.resolve().parents[2]
    anatomy_path = root / str(a["source"])
    if not anatomy_path.is_file():
        raise InputError(f"anatomy {str(a['source'])!r} not found under {root} (pass data_root / --data-root)",
                         path=path, code=ErrorCode.FILE_NOT_FOUND)
    anatomy = read_openkbp_npz(anatomy_path)
    dose = np.asarray(a["dose"], dtype=np.float32)
    if dose.shape != OPENKBP_SHAPE:
        raise GeometryError(f"dose has shape {dose.shape}", path=path, code=ErrorCode.GRID_MISMATCH)
    iso = np.asarray(a["isocenter_vox"], dtype=float).reshape(-1) if "isocenter_vox" in a else None
    iso_lps = tuple(anatomy.grid.index_to_lps(iso)) if iso is not None else None
    fractions = int(a["fractions"]) if "fractions" in a else 35
    plan = Plan(beams=_beams(a, path), fractions=fractions, isocenter_lps=iso_lps, site="head-and-neck",
                source="pyradplan")
    structures = dict(anatomy.structures)
    if "prescriptions_json" in a:
        try:
            rx = json.loads(str(a["prescriptions_json"]))
        except json.JSONDecodeError as exc:
            raise InputError(f"prescriptions_json: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
        for key, s in structures.items():
            if s.original_name in rx:
                structures[key] = _with_rx(s, float(rx[s.original_name]))
    metadata = {"patient_id": anatomy.metadata["patient_id"], "format": "pyradplan-npz", "path": str(path),
                "anatomy_path": str(anatomy_path)}
    for key in ("engine", "seed"):
        if key in a:
            metadata[key] = a[key].item() if a[key].ndim == 0 else a[key].tolist()
    return anatomy.replace(name=path.stem, plan=plan, dose_gy=dose, structures=structures, metadata=metadata)


def _with_rx(structure, rx_gy: float):
    from dataclasses import replace

    return replace(structure, role=Role.TARGET, prescription_gy=rx_gy)

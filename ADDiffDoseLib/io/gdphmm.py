"""GDP-HMM challenge (AAPM 2025) npz files, read without running arbitrary pickles.

Layout (from the challenge's `DICOM2NPZ.py` / `data_loader.py`): `np.savez_compressed(path, dict)`, so
the file holds one pickled 0-d object array `arr_0` whose item is a dict: `img` CT HU (z, y, x);
`dose` (x `dose_scale` = Gy); one uint8 mask per ROI (`Body`, PTVs, organs, rings...), `all_mask`
(ROI names); `isVMAT`; `isocenter` voxel [z, y, x]; `angle_list` gantry angles; `origin`,
`spacing` (x, y, z) and `direction` (row-major 3x3) from SimpleITK, i.e. LPS.
Prescriptions come from the challenge's `PTV_DICT.json` (keyed by patient ID = file stem before '+').

The pickle is read by :class:`RestrictedUnpickler`, which admits numpy array reconstruction and
builtin containers only; anything else raises InputError UNSAFE_CONTENT before it can run.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..case import Beam, Case, Plan, Role, Structure
from ..errors import ErrorCode, GeometryError, InputError
from ..geometry import Grid
from ..names import assign_names

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex"),
    ("builtins", "slice"), ("builtins", "range"), ("_codecs", "encode"),
}
_NOT_MASKS = {"img", "dose", "beam_plate", "angle_plate"}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array/dtype/scalar reconstruction and builtin containers."""

    def __init__(self, file, path=None):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise InputError(f"refusing pickled object {module}.{name}: only numpy arrays and containers are allowed",
                         path=self._path, code=ErrorCode.UNSAFE_CONTENT)


def load_gdphmm_dict(path: str | Path) -> dict:
    """The dict stored under `arr_0`, unpickled with :class:`RestrictedUnpickler`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path, code=ErrorCode.FILE_NOT_FOUND)
    try:
        with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(fp)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(fp)
            if not dtype.hasobject:
                raise InputError("arr_0 is a plain array, not the GDP-HMM dict", path=path,
                                 code=ErrorCode.UNSUPPORTED_FORMAT)
            obj = RestrictedUnpickler(fp, path).load()
    except KeyError as exc:
        raise InputError("no arr_0 member: not a GDP-HMM npz", path=path, code=ErrorCode.UNSUPPORTED_FORMAT) from exc
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, OSError, TypeError) as exc:
        raise InputError(f"damaged GDP-HMM npz: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    data = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    if not isinstance(data, dict):
        raise InputError(f"arr_0 holds {type(data).__name__}, expected a dict", path=path,
                         code=ErrorCode.CORRUPT_FILE)
    return data


def patient_id_from_path(path: Path) -> str:
    """GDP-HMM file stem '<PatientID>+<PlanID>'; short numeric IDs are zero-padded to 3 as the loader does."""
    pid = path.stem.split("+")[0]
    return f"{pid:0>3}" if len(pid) < 3 else pid


def prescriptions_from_ptv_dict(entry: dict) -> dict[str, float]:
    """{structure name: Gy} from one PTV_DICT.json entry: PTV_High's OPTName, PTV_Mid/Low's StructName."""
    out = {}
    for level in ("PTV_High", "PTV_Mid", "PTV_Low"):
        if level in entry:
            e = entry[level]
            key = e.get("OPTName") if level == "PTV_High" else e.get("StructName", e.get("OPTName"))
            if key:
                out[str(key)] = float(e["PDose"])
    return out


def _find_ptv_dict(path: Path) -> Path | None:
    for folder in (path.parent, path.parent.parent):
        candidate = folder / "PTV_DICT.json"
        if candidate.is_file():
            return candidate
    return None


def _grid(d: dict, shape, path) -> Grid:
    for key in ("origin", "spacing"):
        if key not in d:
            raise InputError(f"key {key!r} missing", path=path, code=ErrorCode.MISSING_FIELD)
    direction = np.asarray(d.get("direction", np.eye(3).reshape(-1)), dtype=float).reshape(3, 3)
    try:
        return Grid.from_ijk(tuple(shape)[::-1], d["spacing"], d["origin"], direction)
    except GeometryError as exc:
        raise GeometryError(exc.message, path=path, code=exc.code) from exc


def read_gdphmm_npz(path: str | Path, prescriptions: dict[str, float] | None = None,
                    ptv_dict_path: str | Path | None = None, mapping=None, site: str | None = None) -> Case:
    """Read one GDP-HMM plan file into a Case (plan.source 'gdp-hmm').

    prescriptions: {structure name: Gy}; else from `ptv_dict_path` or a PTV_DICT.json beside the file
    (or one folder up); else from the structure names (with a warning).
    """
    path = Path(path)
    d = load_gdphmm_dict(path)
    if "img" not in d:
        raise InputError("key 'img' (CT) missing", path=path, code=ErrorCode.MISSING_FIELD)
    ct = np.asarray(d["img"], dtype=np.float32)
    if ct.ndim != 3:
        raise InputError(f"img must be 3D, got shape {ct.shape}", path=path, code=ErrorCode.CORRUPT_FILE)
    grid = _grid(d, ct.shape, path)
    warnings = []
    pid = patient_id_from_path(path)
    if prescriptions is None:
        dict_path = Path(ptv_dict_path) if ptv_dict_path else _find_ptv_dict(path)
        if dict_path is not None:
            try:
                table = json.loads(dict_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(f"cannot read PTV_DICT: {exc}", path=dict_path, code=ErrorCode.CORRUPT_FILE) from exc
            if pid in table:
                prescriptions = prescriptions_from_ptv_dict(table[pid])
            else:
                warnings.append(f"patient {pid} not in {dict_path.name}; prescriptions taken from names")
        else:
            warnings.append("no PTV_DICT.json found; prescriptions taken from structure names")

    names = [str(n) for n in d.get("all_mask", [])] or [
        k for k, v in d.items() if isinstance(v, np.ndarray) and v.shape == ct.shape and k not in _NOT_MASKS]
    names = [n for n in names if n in d and n not in _NOT_MASKS]
    infos, dup_warnings = assign_names(names, mapping)
    warnings += dup_warnings
    structures = {}
    for original, info in zip(names, infos):
        mask = np.asarray(d[original])
        if mask.shape != ct.shape:
            raise GeometryError(f"mask {original!r} has shape {mask.shape}, CT {ct.shape}", path=path,
                                code=ErrorCode.GRID_MISMATCH)
        role, rx = info.role, info.prescription_gy
        if original == "Body":
            role = Role.EXTERNAL
        if prescriptions is not None:
            # the challenge's table is authoritative: listed names are the targets, other PTV names are not
            if original in prescriptions:
                role, rx = Role.TARGET, prescriptions[original]
            elif role == Role.TARGET:
                role, rx = Role.OTHER, None
        name = "External" if original == "Body" else info.name
        structures[name] = Structure(name, mask.astype(bool), role, rx, original)

    dose = None
    if "dose" in d:
        if "dose_scale" not in d:
            raise InputError("dose without dose_scale", path=path, code=ErrorCode.MISSING_FIELD)
        dose = np.asarray(d["dose"], dtype=np.float32) * np.float32(d["dose_scale"])
        grid.check_array(dose, "dose", path=path)
    plan = _plan(d, grid, structures, site)
    metadata = {"patient_id": pid, "plan_id": path.stem.split("+")[1] if "+" in path.stem else None,
                "format": "gdp-hmm-npz", "path": str(path), "energy_assumed_mv": 6.0}
    return Case(name=path.stem, grid=grid, ct_hu=ct, structures=structures, plan=plan, dose_gy=dose,
                patient_position="HFS", metadata=metadata, warnings=tuple(warnings))


def _plan(d: dict, grid: Grid, structures: dict, site: str | None) -> Plan:
    angles = [float(a) for a in np.asarray(d.get("angle_list", []), dtype=float).reshape(-1)]
    is_vmat = bool(d.get("isVMAT", False))
    if is_vmat and angles:
        arc = tuple(sorted(angles))  # the file keeps the set of control-point angles, not their order
        beams = (Beam(arc[0], technique="VMAT", arc_gantry_deg=arc),)
    else:
        beams = tuple(Beam(a, technique="IMRT") for a in sorted(angles))
    iso = None
    if "isocenter" in d:
        iso = tuple(grid.index_to_lps(np.asarray(d["isocenter"], dtype=float).reshape(3)))  # [z, y, x] = (k, j, i)
    if site is None:
        site = "lung" if any(k.startswith("Lung") for k in structures) and "Parotid_L" not in structures \
            else "head-and-neck"
    return Plan(beams=beams, fractions=None, isocenter_lps=iso, site=site, source="gdp-hmm")

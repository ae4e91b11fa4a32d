"""Training data: which cases, the compact packed training set for the GPU machine, and tensors.

Splits: `openkbp/train` minus the fixed model-selection subset (``data/splits.json``) is for training;
the subset chooses checkpoints; `openkbp/validation` is only for reported figures. pyRadPlan plans on a
model-selection anatomy are excluded from training too (same patient).

Packed set (one zip of .npy members, LZMA, no pickle): per anatomy the CT (int16, 8 HU steps) and masks
(packed bits) cropped to the body's bounding box, per plan the dose (uint16, 0.05 Gy steps) and its
beams. `addiffdose pack` writes it; :func:`load_packed` turns it back into Cases.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..case import Beam, Case, Plan
from ..errors import ErrorCode, InputError
from ..io.atomic import atomic_path
from ..io.openkbp import case_from_openkbp_arrays, load_openkbp_arrays
from .conditioning import DOSE_SCALE_GY, build_inputs

PACK_DOSE_STEP_GY = 0.1  # quantization well below any score's resolution (mean error 0.025 Gy)
PACK_CT_STEP_HU = 8  # the network sees HU / 1000
PACK_VERSION = 1


def model_selection_ids() -> list[str]:
    text = resources.files("ADDiffDoseLib").joinpath("data/splits.json").read_text()
    return list(json.loads(text)["model_selection"])


@dataclass(frozen=True)
class CaseRef:
    """Where one training plan comes from: an OpenKBP anatomy and, for pyRadPlan, a plan file."""

    name: str
    anatomy_path: Path
    plan_path: Path | None  # None: the clinical OpenKBP dose
    selection: bool  # in the model-selection subset


def list_cases(data_root: str | Path, split: str = "train", include_pyradplan: bool = True) -> list[CaseRef]:
    """Every plan of `split` ('train' or 'validation') under data_root (the folder holding openkbp/)."""
    root = Path(data_root)
    folder = root / "openkbp" / split
    if not folder.is_dir():
        raise InputError("OpenKBP folder not found", path=folder, code=ErrorCode.FILE_NOT_FOUND)
    selection = set(model_selection_ids()) if split == "train" else set()
    refs = [CaseRef(p.stem, p, None, p.stem in selection)
            for p in sorted(folder.glob("pt_*.npz"), key=lambda p: int(p.stem.split("_")[1]))]
    plans = root / "openkbp-pyradplan" / split
    if include_pyradplan and plans.is_dir():
        for p in sorted(plans.glob("pt_*_*.npz")):
            anatomy = folder / (p.stem.rsplit("_", 1)[0] + ".npz")
            refs.append(CaseRef(p.stem, anatomy, p, anatomy.stem in selection))
    return refs


def load_case(ref: CaseRef) -> Case:
    """The Case for one training plan (anatomy + dose + beams)."""
    arrays = load_openkbp_arrays(ref.anatomy_path)
    case = case_from_openkbp_arrays(arrays, ref.name, path=ref.anatomy_path)
    if ref.plan_path is None:
        return case
    return _with_pyradplan_plan(case, dict(np.load(ref.plan_path, allow_pickle=False)), ref.plan_path)


def _with_pyradplan_plan(case: Case, f: dict, path) -> Case:
    beams = tuple(
        Beam(float(g), float(c), float(k), float(f["energy_mv"]), str(f["technique"]))
        for g, c, k in zip(f["gantry_deg"], f["couch_deg"], f["collimator_deg"])
    )
    iso = case.grid.index_to_lps(np.asarray(f["isocenter_vox"], dtype=float))
    plan = Plan(beams, int(f["fractions"]), tuple(iso), site="head-and-neck", source="pyradplan")
    dose = np.asarray(f["dose"], dtype=np.float32)
    return case.replace(plan=plan, dose_gy=dose, metadata={**case.metadata, "plan_path": str(path)})


# --- packing ------------------------------------------------------------------------------------
def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def pack_training_set(data_root: str | Path, out_path: str | Path, *, overwrite: bool = False,
                      split: str = "train", progress=None) -> dict:
    """Write the compact training set (all of `split`, model-selection subset flagged). Returns stats."""
    refs = list_cases(data_root, split)
    anatomies: dict[Path, int] = {}
    index = {"version": PACK_VERSION, "anatomies": [], "plans": []}
    with atomic_path(out_path, overwrite) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_LZMA) as z:
        for i, ref in enumerate(refs):
            if ref.anatomy_path not in anatomies:
                arrays = load_openkbp_arrays(ref.anatomy_path)
                body = arrays["possible_dose_mask"]
                lo = np.argwhere(body).min(0)
                hi = np.argwhere(body).max(0) + 1
                crop = tuple(slice(a, b) for a, b in zip(lo, hi))
                names = sorted(arrays["masks"])
                masks = np.stack([body] + [arrays["masks"][n] for n in names])[(slice(None), *crop)]
                k = len(anatomies)
                anatomies[ref.anatomy_path] = k
                ct_q = np.round(np.where(body, arrays["ct"], -1000)[crop] / PACK_CT_STEP_HU).astype(np.int16)
                z.writestr(f"a{k}_ct.npy", _npy_bytes(ct_q))
                z.writestr(f"a{k}_masks.npy", _npy_bytes(np.packbits(masks.reshape(-1))))
                index["anatomies"].append({"name": ref.anatomy_path.stem, "lo": lo.tolist(), "hi": hi.tolist(),
                                           "voxel_dimensions": arrays["voxel_dimensions"].tolist(),
                                           "structures": names, "selection": ref.selection})
                clinical_dose = arrays["dose"]
            case = load_case(ref) if ref.plan_path else None
            dose = clinical_dose if case is None else case.dose_gy
            meta = index["anatomies"][anatomies[ref.anatomy_path]]
            crop = tuple(slice(a, b) for a, b in zip(meta["lo"], meta["hi"]))
            q = np.round(dose[crop] / PACK_DOSE_STEP_GY).clip(0, 65535).astype(np.uint16)
            z.writestr(f"p{i}_dose.npy", _npy_bytes(q))
            plan = {"name": ref.name, "anatomy": anatomies[ref.anatomy_path], "selection": ref.selection,
                    "plan": case.plan.to_dict() if case is not None else None}
            index["plans"].append(plan)
            if progress:
                progress(i + 1, len(refs), ref.name)
        z.writestr("index.json", json.dumps(index))
    return {"anatomies": len(anatomies), "plans": len(refs), "bytes": Path(out_path).stat().st_size}


def load_packed(path: str | Path) -> list[tuple[Case, bool]]:
    """(case with dose and plan, is_model_selection) for every plan in a packed set."""
    from ..io.openkbp import openkbp_plan

    path = Path(path)
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"not a packed training set: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    with z:
        index = json.loads(z.read("index.json"))
        read = lambda name: np.load(io.BytesIO(z.read(name)), allow_pickle=False)  # noqa: E731
        anatomies = []
        for k, meta in enumerate(index["anatomies"]):
            crop = tuple(slice(a, b) for a, b in zip(meta["lo"], meta["hi"]))
            shape = tuple(b - a for a, b in zip(meta["lo"], meta["hi"]))
            n = len(meta["structures"]) + 1
            bits = np.unpackbits(read(f"a{k}_masks.npy"))[: n * int(np.prod(shape))].reshape(n, *shape).astype(bool)
            full = np.zeros((n, 128, 128, 128), bool)
            full[(slice(None), *crop)] = bits
            ct = np.full((128, 128, 128), -1000, np.int16)
            ct[crop] = read(f"a{k}_ct.npy") * PACK_CT_STEP_HU
            arrays = {"ct": ct, "dose": None, "possible_dose_mask": full[0],
                      "voxel_dimensions": np.asarray(meta["voxel_dimensions"], np.float32),
                      "masks": dict(zip(meta["structures"], full[1:]))}
            anatomies.append((arrays, crop))
        out = []
        for i, p in enumerate(index["plans"]):
            arrays, crop = anatomies[p["anatomy"]]
            dose = np.zeros((128, 128, 128), np.float32)
            dose[crop] = read(f"p{i}_dose.npy").astype(np.float32) * PACK_DOSE_STEP_GY
            case = case_from_openkbp_arrays({**arrays, "dose": dose}, p["name"], fmt="packed")
            if p["plan"] is not None:
                pl = p["plan"]
                beams = tuple(Beam(**b) for b in pl["beams"])
                case = case.replace(plan=Plan(beams, pl["fractions"], tuple(pl["isocenter_lps"]), pl["site"], pl["source"]))
            else:
                case = case.replace(plan=openkbp_plan())
            out.append((case, bool(p["selection"])))
    return out


# --- tensors ------------------------------------------------------------------------------------
def case_tensors(case: Case, device="cpu", dtype=torch.float32) -> dict:
    """One training sample: channels (C,D,H,W), tokens, token_mask, dose (1,D,H,W) in dose/70, body (1,D,H,W)."""
    inputs = build_inputs(case, device=device)
    if not inputs.native:
        raise InputError(f"training case {case.name} is not on a 128^3 OpenKBP-oriented grid", code=ErrorCode.GRID_MISMATCH)
    ch = inputs.channels.to(device=device, dtype=dtype)
    return {
        "channels": ch,
        "tokens": inputs.tokens.to(device),
        "token_mask": inputs.token_mask.to(device),
        "dose": torch.from_numpy(case.dose_gy / DOSE_SCALE_GY).to(device=device, dtype=dtype)[None],
        "body": (ch[9:10] > 0.5),
    }


def stack_samples(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

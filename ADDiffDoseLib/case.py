"""The in-memory case: CT, structures, plan parameters and an optional reference dose on one grid.

Every reader returns a :class:`Case`; every writer, metric and model takes one.
Arrays are in array-axis order on ``case.grid`` (see :mod:`ADDiffDoseLib.geometry`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import DoseError, ErrorCode, GeometryError, InputError
from .geometry import Grid

PATIENT_POSITIONS = ("HFS", "FFS", "HFP", "FFP", "HFDR", "HFDL", "FFDR", "FFDL")
TECHNIQUES = ("IMRT", "VMAT", "3D-CRT")

#: A dose maximum above IMPLAUSIBLE_RX_FACTOR x the highest prescription, or above IMPLAUSIBLE_DOSE_GY when no
#: prescription is known, is reported (a per-fraction dose taken as total, a wrong DoseGridScaling, cGy as Gy).
IMPLAUSIBLE_RX_FACTOR = 1.5
IMPLAUSIBLE_DOSE_GY = 100.0


def implausible_dose(max_dose_gy: float, max_prescription_gy: float | None, how: str = "") -> str | None:
    """The warning for a dose that cannot be right, or None. `how`: how the dose was obtained (named in it)."""
    if max_prescription_gy:
        limit, what = IMPLAUSIBLE_RX_FACTOR * max_prescription_gy, (
            f"{IMPLAUSIBLE_RX_FACTOR:g} x the highest prescription ({max_prescription_gy:.4g} Gy)")
    else:
        limit, what = IMPLAUSIBLE_DOSE_GY, f"{IMPLAUSIBLE_DOSE_GY:g} Gy (no prescription known)"
    if not max_dose_gy > limit:
        return None
    return f"implausible dose: maximum {max_dose_gy:.4g} Gy exceeds {what}" + (f"; {how}" if how else "")


class Role(str, enum.Enum):
    TARGET = "target"
    OAR = "oar"
    EXTERNAL = "external"  # the body outline
    OTHER = "other"  # rings, PRVs, helper structures: kept, never used as organs


@dataclass(frozen=True, eq=False)
class Structure:
    """A named region. mask: (n0, n1, n2) bool on the case grid.

    name: normalized (TG-263 style) name; original_name: as found in the file;
    prescription_gy: total prescribed dose for targets, else None.
    """

    name: str
    mask: np.ndarray
    role: Role = Role.OAR
    prescription_gy: float | None = None
    original_name: str | None = None
    color_rgb: tuple[float, float, float] | None = None

    def __post_init__(self):
        mask = np.asarray(self.mask)
        if mask.ndim != 3:
            raise GeometryError(f"structure {self.name!r}: mask must be 3D, got shape {mask.shape}")
        object.__setattr__(self, "mask", mask.astype(bool, copy=False))
        object.__setattr__(self, "role", Role(self.role))
        if self.prescription_gy is not None:
            rx = float(self.prescription_gy)
            if not np.isfinite(rx) or rx <= 0:
                raise InputError(f"structure {self.name!r}: prescription must be > 0 Gy, got {self.prescription_gy}",
                                 code=ErrorCode.INVALID_VALUE)
            object.__setattr__(self, "prescription_gy", rx)
        if self.original_name is None:
            object.__setattr__(self, "original_name", self.name)

    @property
    def is_empty(self) -> bool:
        return not bool(self.mask.any())

    @property
    def label(self) -> str:
        """The name as read with the normalized name beside it when they differ: 'Lt Lung (Lung_L)'."""
        return self.original_name if self.original_name == self.name else f"{self.original_name} ({self.name})"

    def volume_cc(self, grid: Grid) -> float:
        return float(self.mask.sum()) * grid.voxel_volume_cc


@dataclass(frozen=True)
class Beam:
    """One treatment field, angles in IEC 61217 degrees.

    For VMAT, `arc_gantry_deg` holds the control-point gantry angles of the arc and `gantry_deg`
    its first angle.
    """

    gantry_deg: float
    couch_deg: float = 0.0
    collimator_deg: float = 0.0
    energy_mv: float = 6.0
    technique: str = "IMRT"
    arc_gantry_deg: tuple[float, ...] | None = None

    def __post_init__(self):
        for name in ("gantry_deg", "couch_deg", "collimator_deg"):
            value = float(getattr(self, name))
            if not np.isfinite(value):
                raise InputError(f"beam {name} must be finite, got {value}", code=ErrorCode.INVALID_VALUE)
            object.__setattr__(self, name, value % 360.0)
        if not (0 < float(self.energy_mv) < 100):
            raise InputError(f"beam energy must be in MV (0-100), got {self.energy_mv}", code=ErrorCode.INVALID_VALUE)
        object.__setattr__(self, "energy_mv", float(self.energy_mv))
        technique = str(self.technique).upper()
        if technique not in TECHNIQUES:
            raise InputError(f"technique must be one of {TECHNIQUES}, got {self.technique!r}", code=ErrorCode.INVALID_VALUE)
        object.__setattr__(self, "technique", technique)
        if self.arc_gantry_deg is not None:
            object.__setattr__(self, "arc_gantry_deg", tuple(float(a) % 360.0 for a in self.arc_gantry_deg))

    @property
    def gantry_angles_deg(self) -> tuple[float, ...]:
        """The angles this beam irradiates from: the arc's control points, or the one static angle."""
        return self.arc_gantry_deg if self.arc_gantry_deg else (self.gantry_deg,)

    def to_dict(self) -> dict:
        d = {"gantry_deg": self.gantry_deg, "couch_deg": self.couch_deg, "collimator_deg": self.collimator_deg,
             "energy_mv": self.energy_mv, "technique": self.technique}
        if self.arc_gantry_deg:
            d["arc_gantry_deg"] = list(self.arc_gantry_deg)
        return d


def equispaced_beams(n: int, start_deg: float = 0.0, energy_mv: float = 6.0, technique: str = "IMRT") -> tuple[Beam, ...]:
    """n coplanar fields 360/n apart (OpenKBP: n = 9, start 0)."""
    return tuple(Beam(start_deg + i * 360.0 / n, energy_mv=energy_mv, technique=technique) for i in range(n))


@dataclass(frozen=True)
class Plan:
    """Plan parameters. Doses are totals over all fractions unless the name says per fraction.

    isocenter_lps: mm, or None = unknown (then :meth:`Case.isocenter_lps` uses the targets' centre of mass,
    as pyRadPlan does). source: 'openkbp-clinical', 'pyradplan', 'gdp-hmm', 'dicom' or 'user'.
    """

    beams: tuple[Beam, ...] = ()
    fractions: int | None = None
    isocenter_lps: tuple[float, float, float] | None = None
    site: str = "head-and-neck"
    source: str = "user"

    def __post_init__(self):
        object.__setattr__(self, "beams", tuple(self.beams))
        if self.fractions is not None:
            if int(self.fractions) < 1:
                raise InputError(f"number of fractions must be >= 1, got {self.fractions}", code=ErrorCode.INVALID_VALUE)
            object.__setattr__(self, "fractions", int(self.fractions))
        if self.isocenter_lps is not None:
            iso = np.asarray(self.isocenter_lps, dtype=float).reshape(-1)
            if iso.shape != (3,) or not np.all(np.isfinite(iso)):
                raise InputError(f"isocenter must be 3 finite numbers, got {self.isocenter_lps!r}", code=ErrorCode.INVALID_VALUE)
            object.__setattr__(self, "isocenter_lps", tuple(float(v) for v in iso))

    @property
    def technique(self) -> str | None:
        kinds = {b.technique for b in self.beams}
        return kinds.pop() if len(kinds) == 1 else (None if not kinds else "mixed")

    def to_dict(self) -> dict:
        return {"beams": [b.to_dict() for b in self.beams], "fractions": self.fractions,
                "isocenter_lps": list(self.isocenter_lps) if self.isocenter_lps else None,
                "site": self.site, "source": self.source}


@dataclass(frozen=True, eq=False)
class Case:
    """One patient/plan on one grid.

    ct_hu: (n0, n1, n2) float32 HU or None; dose_gy: (n0, n1, n2) float32 total dose in Gy or None;
    structures: normalized name -> Structure; patient_position: DICOM PatientPosition;
    metadata: free IDs/UIDs kept for export; warnings: what the reader noticed but tolerated.
    """

    name: str
    grid: Grid
    ct_hu: np.ndarray | None = None
    structures: dict[str, Structure] = field(default_factory=dict)
    plan: Plan = field(default_factory=Plan)
    dose_gy: np.ndarray | None = None
    patient_position: str = "HFS"
    metadata: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __post_init__(self):
        if self.ct_hu is not None:
            self.grid.check_array(self.ct_hu, "CT")
            object.__setattr__(self, "ct_hu", np.asarray(self.ct_hu, dtype=np.float32))
        if self.dose_gy is not None:
            self.grid.check_array(self.dose_gy, "dose")
            dose = np.asarray(self.dose_gy, dtype=np.float32)
            if not np.all(np.isfinite(dose)):
                raise DoseError("dose contains NaN or infinite values", code=ErrorCode.INVALID_VALUE)
            if dose.min(initial=0) < -1e-3:
                raise DoseError(f"dose is negative (min {dose.min():.3f} Gy)", code=ErrorCode.NEGATIVE_DOSE)
            object.__setattr__(self, "dose_gy", np.maximum(dose, 0))
        for key, s in self.structures.items():
            self.grid.check_array(s.mask, f"structure {key!r}")
        position = str(self.patient_position).upper()
        if position not in PATIENT_POSITIONS:
            raise InputError(f"unknown patient position {self.patient_position!r}", code=ErrorCode.INVALID_VALUE)
        object.__setattr__(self, "patient_position", position)
        object.__setattr__(self, "structures", dict(self.structures))
        object.__setattr__(self, "warnings", tuple(self.warnings))

    # --- views ----------------------------------------------------------------------------
    def by_role(self, role: Role) -> dict[str, Structure]:
        return {k: s for k, s in self.structures.items() if s.role == role}

    @property
    def targets(self) -> dict[str, Structure]:
        """Targets with a prescription, highest prescription first."""
        t = {k: s for k, s in self.structures.items() if s.role == Role.TARGET}
        return dict(sorted(t.items(), key=lambda kv: -(kv[1].prescription_gy or 0)))

    @property
    def oars(self) -> dict[str, Structure]:
        return self.by_role(Role.OAR)

    @property
    def max_prescription_gy(self) -> float | None:
        rx = [s.prescription_gy for s in self.targets.values() if s.prescription_gy]
        return max(rx) if rx else None

    @property
    def body_mask(self) -> np.ndarray | None:
        ext = self.by_role(Role.EXTERNAL)
        if not ext:
            return None
        out = np.zeros(self.grid.shape, dtype=bool)
        for s in ext.values():
            out |= s.mask
        return out

    def target_prescription_map(self) -> np.ndarray:
        """(n0, n1, n2) float32: each voxel's highest target prescription in Gy (0 outside targets).

        Overlapping targets are resolved by the highest prescription.
        """
        out = np.zeros(self.grid.shape, dtype=np.float32)
        for s in self.targets.values():
            if s.prescription_gy:
                np.maximum(out, np.where(s.mask, np.float32(s.prescription_gy), np.float32(0)), out=out)
        return out

    def isocenter_lps(self) -> np.ndarray:
        """The plan's isocenter, else the centre of mass of the union of the targets (as pyRadPlan does)."""
        if self.plan.isocenter_lps is not None:
            return np.asarray(self.plan.isocenter_lps, dtype=float)
        union = np.zeros(self.grid.shape, dtype=bool)
        for s in self.targets.values():
            union |= s.mask
        if not union.any():
            raise InputError(f"case {self.name!r} has no target to place the isocenter", code=ErrorCode.NO_TARGET)
        return self.grid.index_to_lps(np.argwhere(union).mean(axis=0))

    def dose_per_fraction_gy(self) -> np.ndarray | None:
        if self.dose_gy is None or not self.plan.fractions:
            return None
        return self.dose_gy / self.plan.fractions

    # --- derivation -----------------------------------------------------------------------
    def replace(self, **changes) -> "Case":
        return replace(self, **changes)

    def with_dose(self, dose_gy: np.ndarray | None) -> "Case":
        return replace(self, dose_gy=dose_gy)

    def with_warning(self, *messages: str) -> "Case":
        return replace(self, warnings=self.warnings + tuple(messages))

    def names_as_read(self, max_length: int | None = None) -> dict[str, str]:
        """Structure key -> its name as read ('BODY', 'Lt Lung'), for writers; the normalized name where two names
        as read would clash. `max_length`: cut to it (DICOM ROIName: 64)."""
        out: dict[str, str] = {}
        for key, s in self.structures.items():
            name = (s.original_name or key)[:max_length]
            out[key] = name if name not in out.values() else key[:max_length]
        return out

    def problems(self) -> list[str]:
        """What `inspect` warns about: empty structures, targets without prescription, no body, no target."""
        out = list(self.warnings)
        for key, s in self.structures.items():
            if s.is_empty:
                out.append(f"structure {key} is empty")
            if s.role == Role.TARGET and not s.prescription_gy:
                out.append(f"target {key} has no prescription")
        if not self.by_role(Role.EXTERNAL):
            out.append("no body (external) structure")
        if not self.targets:
            out.append("no target structure")
        if not self.plan.beams:
            out.append("no beams known")
        return out

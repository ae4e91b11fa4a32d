"""Plan-quality indices of one dose distribution.

* Paddick conformity index (Paddick, J Neurosurg 93 Suppl 3:219, 2000):
  CI = TV_PIV^2 / (TV * PIV), TV = target volume, PIV = volume inside the prescription isodose (dose >= Rx),
  TV_PIV = target volume inside it. 1 = perfect; computed on the voxels of one grid (cc cancel out).
* ICRU Report 83 homogeneity index: HI = (D2% - D98%) / D50%, with D_x% as defined in :mod:`.dvh`.
"""

from __future__ import annotations

import numpy as np

from .dose_stats import check_dose, check_same_shape, masked_doses


def paddick_ci(dose_gy: np.ndarray, target_mask: np.ndarray, prescription_gy: float,
               body_mask: np.ndarray | None = None) -> float:
    """Paddick CI at the `prescription_gy` isodose; the isodose volume is limited to `body_mask` if given."""
    dose = check_dose(dose_gy)
    check_same_shape(dose, target_mask, "dose", "target mask")
    piv_mask = dose >= prescription_gy
    if body_mask is not None:
        piv_mask &= body_mask
    tv = int(target_mask.sum())
    piv = int(piv_mask.sum())
    if tv == 0 or piv == 0:
        return 0.0 if tv else float("nan")
    tv_piv = int(np.count_nonzero(piv_mask & target_mask))
    return tv_piv**2 / (tv * piv)


def homogeneity_index(dose_gy: np.ndarray, target_mask: np.ndarray) -> float:
    """ICRU 83 HI = (D2% - D98%) / D50% over the target's voxels (NaN for an empty target or D50 = 0)."""
    doses = np.sort(masked_doses(check_dose(dose_gy), target_mask))[::-1]
    n = doses.size
    if n == 0:
        return float("nan")

    def d(pct):
        return float(doses[max(int(np.ceil(pct / 100.0 * n - 1e-9)), 1) - 1])

    d50 = d(50)
    return (d(2) - d(98)) / d50 if d50 > 0 else float("nan")


def target_quality(case, dose_gy: np.ndarray) -> dict[str, dict]:
    """{target name: {paddick_ci, hi, prescription_gy}} for every target of `case` with a prescription."""
    body = case.body_mask
    out = {}
    for key, s in case.targets.items():
        if s.prescription_gy and not s.is_empty:
            out[key] = {"prescription_gy": s.prescription_gy,
                        "paddick_ci": paddick_ci(dose_gy, s.mask, s.prescription_gy, body),
                        "hi": homogeneity_index(dose_gy, s.mask)}
    return out

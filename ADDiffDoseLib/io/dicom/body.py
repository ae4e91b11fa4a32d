"""A body outline from CT when the structure set has none."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BODY_HU = -400.0


def body_from_ct(ct_hu: np.ndarray, threshold_hu: float = BODY_HU) -> np.ndarray:
    """(n0, n1, n2) bool: HU > threshold, largest component per slice (axis 0), holes filled,
    then the largest 3D component (drops the couch when it touches no slice's largest blob)."""
    above = ct_hu > threshold_hu
    out = np.zeros_like(above)
    for k in range(above.shape[0]):
        lab, n = ndimage.label(above[k])
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())[1:]
        out[k] = ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))
    lab, n = ndimage.label(out)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        out = lab == 1 + int(np.argmax(sizes))
    return out

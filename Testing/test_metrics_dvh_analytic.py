"""DVH conventions against analytic shapes and doses (voxel-centre inclusion, both modes, 2-3 mm voxels).

Masks are the analytic shapes with a voxel counted when its centre lies inside (what our rasterizer does with a
contour through the boundary), on grids offset by 0.37 mm so that no symmetry hides an error. Doses: uniform
50 Gy and a linear gradient 50 + 0.2 x Gy/mm (analytic mean 50 Gy over these x-symmetric shapes; analytic max
50 + 0.2 R at the widest section). Measured (README, DICOM-RT): volumes of the sphere and cylinder within 2 %,
Dmean within 0.15 %, Dmax within 1 % (voxel-centre point maximum; slicerrt's sub-voxels come closer). The cone's
volume is 3.6-5.9 % high: its base is a full slab (no end-capping) - marked xfail until an end-cap mode exists.
"""

import numpy as np
import pytest

from ADDiffDoseLib.geometry import Grid
from ADDiffDoseLib.metrics.dvh import compute_dvh


def _shape(name, spacing):
    n = int(np.ceil(100 / spacing)) | 1
    g = Grid((n, n, n), (spacing,) * 3, -(n // 2) * spacing * np.ones(3) + 0.37, np.eye(3))
    c = g.voxel_centres_lps()
    x, y, z = c[..., 0], c[..., 1], c[..., 2]
    r = np.sqrt(x**2 + y**2)
    mask, volume_mm3, radius = {
        "sphere": (x**2 + y**2 + z**2 <= 20**2, 4 / 3 * np.pi * 20**3, 20.0),
        "cylinder": ((r <= 15) & (np.abs(z) <= 30), np.pi * 15**2 * 60, 15.0),
        "cone": ((r <= 20 * (30 - z) / 60) & (np.abs(z) <= 30), np.pi * 20**2 * 60 / 3, 20.0),
    }[name]
    return g, mask, volume_mm3 / 1000.0, radius, x


CASES = [(s, sp, m) for s in ("sphere", "cylinder", "cone") for sp in (2.0, 2.5, 3.0) for m in ("native", "slicerrt")]


@pytest.mark.parametrize("shape,spacing,mode", CASES)
def test_dmean_dmax_of_analytic_doses(shape, spacing, mode):
    g, mask, _, radius, x = _shape(shape, spacing)
    uniform = compute_dvh(np.full(g.shape, 50.0, np.float32), mask, g, mode)
    assert uniform.mean_gy == pytest.approx(50.0, rel=1e-6) and uniform.max_gy == pytest.approx(50.0, rel=1e-6)
    linear = compute_dvh((50 + 0.2 * x).astype(np.float32), mask, g, mode)
    assert linear.mean_gy == pytest.approx(50.0, rel=0.01)
    assert linear.max_gy == pytest.approx(50 + 0.2 * radius, rel=0.01)


@pytest.mark.parametrize("shape,spacing,mode", [
    pytest.param(s, sp, m, marks=pytest.mark.xfail(strict=True, reason="cone base counted as a full slab (+3.6-5.9 %): "
                                                   "no end-capping mode yet")) if s == "cone" else (s, sp, m)
    for s, sp, m in CASES])
def test_volume_of_analytic_shapes_within_3pct(shape, spacing, mode):
    g, mask, volume_cc, _, _ = _shape(shape, spacing)
    assert volume_cc >= 5
    dvh = compute_dvh(np.full(g.shape, 50.0, np.float32), mask, g, mode)
    assert dvh.volume_cc == pytest.approx(volume_cc, rel=0.03)

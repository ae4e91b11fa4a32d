"""DVH conventions against analytic shapes and doses (voxel-centre inclusion, both modes, both end caps, 2-3 mm).

Masks are the analytic shapes with a voxel counted when its centre lies inside (what our rasterizer does with a
contour through the boundary), on axial grids (array axis 0 = the slice axis = the shapes' axis, LPS z) offset by
0.37 mm so that no symmetry hides an error. Doses: uniform 50 Gy and a linear gradient 50 + 0.2 x Gy/mm (analytic
mean 50 Gy over these x-symmetric shapes; analytic max 50 + 0.2 R at the widest section). Measured (README,
DICOM-RT): end_cap 'full': sphere and cylinder volumes within 2 %, the cone +3.55 / +5.19 / +5.93 % at 2 / 2.5 / 3 mm
(its base, 0.37 mm below the first slice centre, counts a full slab: pinned below); end_cap 'half': the cone -1.4 /
-1.0 / -1.6 %, the sphere within 2 %, the cylinder -3.2 / -4.3 / -6.9 % (its flat ends lose half a slice each:
pinned below). Dmean within 0.15 %, Dmax and D0.03cc within 1 % (point maximum, voxel centres) in every case.
Averaged over the shape's position along the slice axis, full slabs are about unbiased and half caps low (pinned).
"""

import numpy as np
import pytest

from ADDiffDoseLib.geometry import Grid
from ADDiffDoseLib.metrics.dvh import compute_dvh

#: direction columns in array-axis order: axis 0 (slices) along LPS z, axis 1 along y, axis 2 along x.
AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
SPACINGS = (2.0, 2.5, 3.0)
MODES = ("native", "slicerrt")


def _shape(name, spacing):
    n = int(np.ceil(100 / spacing)) | 1
    g = Grid((n, n, n), (spacing,) * 3, -(n // 2) * spacing * np.ones(3) + 0.37, AXIAL)
    c = g.voxel_centres_lps()
    x, y, z = c[..., 0], c[..., 1], c[..., 2]
    r = np.sqrt(x**2 + y**2)
    mask, volume_mm3, radius = {
        "sphere": (x**2 + y**2 + z**2 <= 20**2, 4 / 3 * np.pi * 20**3, 20.0),
        "cylinder": ((r <= 15) & (np.abs(z) <= 30), np.pi * 15**2 * 60, 15.0),
        "cone": ((r <= 20 * (30 - z) / 60) & (np.abs(z) <= 30), np.pi * 20**2 * 60 / 3, 20.0),
    }[name]
    return g, mask, volume_mm3 / 1000.0, radius, x


def _volume_error_pct(shape, spacing, mode, end_cap):
    g, mask, volume_cc, _, _ = _shape(shape, spacing)
    assert volume_cc >= 5
    dvh = compute_dvh(np.full(g.shape, 50.0, np.float32), mask, g, mode, end_cap=end_cap)
    return 100.0 * (dvh.volume_cc / volume_cc - 1.0)


@pytest.mark.parametrize("shape,spacing,mode,end_cap", [(s, sp, m, e) for s in ("sphere", "cylinder", "cone")
                                                        for sp in SPACINGS for m in MODES for e in ("full", "half")])
def test_dmean_dmax_of_analytic_doses(shape, spacing, mode, end_cap):
    g, mask, _, radius, x = _shape(shape, spacing)
    uniform = compute_dvh(np.full(g.shape, 50.0, np.float32), mask, g, mode, end_cap=end_cap)
    assert uniform.mean_gy == pytest.approx(50.0, rel=1e-6) and uniform.max_gy == pytest.approx(50.0, rel=1e-6)
    linear = compute_dvh((50 + 0.2 * x).astype(np.float32), mask, g, mode, end_cap=end_cap)
    assert linear.mean_gy == pytest.approx(50.0, rel=0.01)
    assert linear.max_gy == pytest.approx(50 + 0.2 * radius, rel=0.01)  # point maximum
    assert linear.d_cc(0.03) == pytest.approx(50 + 0.2 * radius, rel=0.01)  # volume-based maximum


# the convention under which each shape's volume is within 3 % (both modes count the same volume)
WITHIN_3PCT = [("sphere", "full"), ("sphere", "half"), ("cylinder", "full"), ("cone", "half")]


@pytest.mark.parametrize("shape,end_cap,spacing,mode", [(s, e, sp, m) for s, e in WITHIN_3PCT
                                                        for sp in SPACINGS for m in MODES])
def test_volume_of_analytic_shapes_within_3pct(shape, end_cap, spacing, mode):
    assert abs(_volume_error_pct(shape, spacing, mode, end_cap)) <= 3.0


# measured offsets (%) of the conventions that miss 3 % here, pinned so that they cannot change silently
PINNED = {("cone", "full"): (3.55, 5.19, 5.93), ("cylinder", "half"): (-3.18, -4.25, -6.86)}


@pytest.mark.parametrize("shape,end_cap,mode", [(s, e, m) for s, e in PINNED for m in MODES])
def test_volume_offsets_of_the_other_convention_pinned(shape, end_cap, mode):
    measured = [_volume_error_pct(shape, sp, mode, end_cap) for sp in SPACINGS]
    assert measured == pytest.approx(PINNED[shape, end_cap], abs=0.01)


# mean volume error (%) over 8 positions of the shape along the slice axis (0, 1/8, ... 7/8 slice): full slabs are
# about unbiased, half caps lose half a slice times the end areas (why 'full' stays the default)
POSITION_MEANS = {("cylinder", 2.0): (0.58, -2.76), ("cylinder", 3.0): (-1.35, -6.25),
                  ("cone", 2.0): (0.64, -4.21), ("cone", 3.0): (1.02, -6.28)}


@pytest.mark.parametrize("shape,spacing", list(POSITION_MEANS))
def test_end_cap_bias_over_slice_positions(shape, spacing):
    errors = {"full": [], "half": []}
    n = int(np.ceil(100 / spacing)) | 1
    for shift in np.arange(8) / 8 * spacing:
        origin = -(n // 2) * spacing * np.ones(3) + np.array([0.37, 0.37, shift])
        g = Grid((n, n, n), (spacing,) * 3, origin, AXIAL)
        c = g.voxel_centres_lps()
        r, z = np.hypot(c[..., 0], c[..., 1]), c[..., 2]
        mask, volume_cc = {"cylinder": ((r <= 15) & (np.abs(z) <= 30), np.pi * 15**2 * 60 / 1000),
                           "cone": ((r <= 20 * (30 - z) / 60) & (np.abs(z) <= 30), np.pi * 20**2 * 20 / 1000)}[shape]
        for cap, found in errors.items():
            dvh = compute_dvh(np.ones(g.shape, np.float32), mask, g, end_cap=cap)
            found.append(100 * (dvh.volume_cc / volume_cc - 1))
    assert (np.mean(errors["full"]), np.mean(errors["half"])) == pytest.approx(POSITION_MEANS[shape, spacing], abs=0.01)

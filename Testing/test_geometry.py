"""Grid: index <-> LPS <-> RAS round trips and resampling known answers on asymmetric, non-cubic grids."""

import numpy as np
import pytest

from ADDiffDoseLib.errors import ErrorCode, GeometryError
from ADDiffDoseLib.geometry import LPS_TO_RAS, Grid, resample_to_grid
from ADDiffDoseLib.io.openkbp import openkbp_grid


def _oblique_grid():
    # rotation about z by 30 deg plus axis swap: nothing symmetric to hide a transpose
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    direction = rot @ np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float)
    return Grid((5, 7, 11), [3.0, 1.5, 0.7], [10.0, -20.0, 35.0], direction)


def test_index_lps_round_trip_asymmetric():
    g = _oblique_grid()
    idx = np.array([[0, 0, 0], [4, 6, 10], [1.5, 2.25, 7.75]])
    lps = g.index_to_lps(idx)
    np.testing.assert_allclose(g.lps_to_index(lps), idx, atol=1e-9)
    # one step along array axis 1 moves by spacing[1] along direction column 1
    np.testing.assert_allclose(g.index_to_lps([0, 1, 0]) - g.origin_lps, 1.5 * g.direction[:, 1])


def test_ijk_matrices_agree_with_index_to_lps():
    g = _oblique_grid()
    k, j, i = 3, 5, 9
    lps = g.index_to_lps([k, j, i])
    np.testing.assert_allclose((g.ijk_to_lps_matrix() @ [i, j, k, 1])[:3], lps)
    np.testing.assert_allclose((g.index_to_lps_matrix() @ [k, j, i, 1])[:3], lps)
    ras = (g.ijk_to_ras_matrix() @ [i, j, k, 1])[:3]
    np.testing.assert_allclose(ras, LPS_TO_RAS @ lps)
    assert ras[0] == pytest.approx(-lps[0]) and ras[1] == pytest.approx(-lps[1]) and ras[2] == pytest.approx(lps[2])


def test_from_ijk_and_from_ijk_to_ras_invert():
    g = _oblique_grid()
    g2 = Grid.from_ijk(g.size_ijk, g.spacing_ijk, g.origin_lps, g.direction_ijk)
    assert g2.same_as(g)
    g3 = Grid.from_ijk_to_ras(g.shape, g.ijk_to_ras_matrix())
    assert g3.same_as(g)
    assert g.size_ijk == (11, 7, 5)


def test_grid_dict_round_trip():
    g = _oblique_grid()
    assert Grid.from_dict(g.to_dict()).same_as(g)


def test_openkbp_grid_orientation_and_centre():
    g = openkbp_grid([3.0, 2.0, 2.5])
    centre = g.index_to_lps([63.5, 63.5, 63.5])
    np.testing.assert_allclose(centre, 0, atol=1e-9)
    step = g.index_to_lps([[1, 0, 0], [0, 1, 0], [0, 0, 1]]) - g.index_to_lps([0, 0, 0])
    np.testing.assert_allclose(step[0], [0, 3.0, 0])   # axis 0 -> posterior (+y)
    np.testing.assert_allclose(step[1], [2.0, 0, 0])   # axis 1 -> patient left (+x)
    np.testing.assert_allclose(step[2], [0, 0, -2.5])  # axis 2 -> inferior (-z)


def test_resample_shift_by_one_voxel():
    src = Grid((4, 5, 6), [2.0, 1.0, 3.0], [0, 0, 0], np.eye(3))
    a = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    dst = src.with_shape((4, 5, 6), offset_index=(0, 1, 0))  # starts one voxel further along axis 1
    out = resample_to_grid(a, src, dst, order=1)
    np.testing.assert_allclose(out[:, :4, :], a[:, 1:, :])
    np.testing.assert_allclose(out[:, 4, :], 0)  # outside the source: fill


def test_resample_flipped_direction_flips_array():
    src = Grid((3, 4, 5), [1.0, 2.0, 1.5], [0, 0, 0], np.eye(3))
    a = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    flip = np.diag([1.0, 1.0, -1.0])
    dst = Grid((3, 4, 5), [1.0, 2.0, 1.5], src.index_to_lps([0, 0, 4]), flip)
    np.testing.assert_allclose(resample_to_grid(a, src, dst, order=1), a[:, :, ::-1], atol=1e-6)
    mask = a > 0.5
    np.testing.assert_array_equal(resample_to_grid(mask, src, dst, order=0), mask[:, :, ::-1])


def test_resample_transposed_grid_transposes():
    src = Grid((3, 4, 5), [1.0, 1.0, 1.0], [0, 0, 0], np.eye(3))
    a = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)
    swap = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)  # dst axis 0 = src axis 2
    dst = Grid((5, 4, 3), [1.0, 1.0, 1.0], [0, 0, 0], swap)
    np.testing.assert_allclose(resample_to_grid(a, src, dst), a.transpose(2, 1, 0), atol=1e-6)


def test_invalid_grids_raise():
    with pytest.raises(GeometryError) as e:
        Grid((4, 4, 4), [1, 0, 1], [0, 0, 0], np.eye(3))
    assert e.value.code == ErrorCode.INVALID_GEOMETRY
    with pytest.raises(GeometryError):
        Grid((4, 4, 4), [1, 1, 1], [0, 0, 0], [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    g = Grid((2, 3, 4), [1, 1, 1], [0, 0, 0], np.eye(3))
    with pytest.raises(GeometryError) as e:
        g.check_array(np.zeros((4, 3, 2)), "CT")
    assert e.value.code == ErrorCode.GRID_MISMATCH

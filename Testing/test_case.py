"""Case model: validation errors and derived views."""

import numpy as np
import pytest

from ADDiffDoseLib.case import Beam, Case, Plan, Role, Structure, equispaced_beams
from ADDiffDoseLib.errors import DoseError, ErrorCode, GeometryError, InputError
from ADDiffDoseLib.geometry import Grid

GRID = Grid((4, 5, 6), [2.0, 1.0, 3.0], [0, 0, 0], np.eye(3))


def _mask(sl):
    m = np.zeros(GRID.shape, bool)
    m[sl] = True
    return m


def test_targets_sorted_and_prescription_map():
    low = Structure("PTV56", _mask(np.s_[0:2]), Role.TARGET, 56)
    high = Structure("PTV70", _mask(np.s_[1:3]), Role.TARGET, 70)
    body = Structure("External", np.ones(GRID.shape, bool), Role.EXTERNAL)
    c = Case("c", GRID, structures={"PTV56": low, "PTV70": high, "External": body}, plan=Plan(equispaced_beams(9)))
    assert list(c.targets) == ["PTV70", "PTV56"]
    rx = c.target_prescription_map()
    assert rx[0, 0, 0] == 56 and rx[1, 0, 0] == 70 and rx[3, 0, 0] == 0
    assert c.problems() == []
    np.testing.assert_allclose(c.isocenter_lps(), GRID.index_to_lps(np.argwhere(low.mask | high.mask).mean(0)))


def test_case_validation_errors():
    with pytest.raises(GeometryError) as e:
        Case("c", GRID, ct_hu=np.zeros((6, 5, 4)))
    assert e.value.code == ErrorCode.GRID_MISMATCH
    with pytest.raises(DoseError) as e:
        Case("c", GRID, dose_gy=-np.ones(GRID.shape))
    assert e.value.code == ErrorCode.NEGATIVE_DOSE
    with pytest.raises(DoseError) as e:
        Case("c", GRID, dose_gy=np.full(GRID.shape, np.nan))
    assert e.value.code == ErrorCode.INVALID_VALUE
    with pytest.raises(InputError):
        Case("c", GRID, patient_position="XYZ")
    with pytest.raises(InputError):
        Structure("PTV", np.zeros(GRID.shape, bool), Role.TARGET, -5)
    with pytest.raises(InputError):
        Beam(0, energy_mv=600)
    with pytest.raises(InputError):
        Beam(0, technique="protons")
    with pytest.raises(InputError):
        Plan(fractions=0)


def test_no_target_isocenter_raises_no_target():
    c = Case("c", GRID)
    with pytest.raises(InputError) as e:
        c.isocenter_lps()
    assert e.value.code == ErrorCode.NO_TARGET
    problems = c.problems()
    assert "no target structure" in problems and "no body (external) structure" in problems


def test_beam_angles_wrap():
    assert Beam(-40).gantry_deg == 320 and Beam(360).gantry_deg == 0
    assert [b.gantry_deg for b in equispaced_beams(9)] == [0, 40, 80, 120, 160, 200, 240, 280, 320]

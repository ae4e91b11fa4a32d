"""OpenKBP scores, GDP-HMM MAE, isodose Dice, Paddick CI, HI and constraint checks: known answers."""

import numpy as np
import pytest

from ADDiffDoseLib.case import Case, Role, Structure
from ADDiffDoseLib.geometry import Grid
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.metrics.comparison import gdphmm_mae, isodose_dice, isodose_dice_levels
from ADDiffDoseLib.metrics.constraints import Constraint, check_constraints, load_constraints
from ADDiffDoseLib.metrics.dvh import case_dvhs
from ADDiffDoseLib.metrics.evaluate import evaluate_case
from ADDiffDoseLib.metrics.openkbp_score import case_openkbp_scores, openkbp_scores
from ADDiffDoseLib.metrics.quality import homogeneity_index, paddick_ci


@pytest.fixture(scope="module")
def case(openkbp_npz):
    return read_openkbp_npz(openkbp_npz)


def test_openkbp_self_is_zero(case):
    s = case_openkbp_scores(case, case.dose_gy)
    assert s["dose_score"] == 0 and s["dvh_score"] == 0
    assert {d["roi"] for d in s["dvh_details"]} >= {"PTV70", "SpinalCord", "Parotid_L"}


def test_openkbp_plus_one_gray_inside_mask():
    g = Grid((20, 20, 20), (3.0, 3.0, 3.0), (0, 0, 0), np.eye(3))  # 27 mm3 voxels -> n = round(100/27) = 4
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 60, g.shape).astype(np.float32)
    body = np.zeros(g.shape, bool)
    body[2:18, 2:18, 2:18] = True
    ref *= body
    oar = np.zeros(g.shape, bool)
    oar[4:8, 4:8, 4:8] = True
    ptv = np.zeros(g.shape, bool)
    ptv[10:15, 10:15, 10:15] = True
    rois = {"Cord": (oar, "oar"), "PTV": (ptv, "target")}
    s = openkbp_scores(ref, ref + 1.0, body, rois, 27.0)  # +1 Gy everywhere; masking keeps it inside the body
    assert s["dose_score"] == pytest.approx(1.0)
    assert s["dvh_score"] == pytest.approx(1.0)
    assert len(s["dvh_details"]) == 5
    unmasked = openkbp_scores(ref, ref + 1.0, body, rois, 27.0, mask_prediction=False)
    assert unmasked["dose_score"] == pytest.approx(20**3 / body.sum())


def test_openkbp_matches_hand_computation(case):
    rng = np.random.default_rng(1)
    pred = np.clip(case.dose_gy * rng.uniform(0.9, 1.1, case.grid.shape).astype(np.float32) + 0.5, 0, None)
    s = case_openkbp_scores(case, pred)
    body = case.body_mask
    ref, pm = case.dose_gy.astype(np.float64).ravel(), (pred * body).astype(np.float64).ravel()
    assert s["dose_score"] == pytest.approx(np.abs(ref - pm).sum() / body.sum(), rel=1e-9)
    n = max(1, round(100 / np.prod(case.grid.spacing_mm)))
    diffs = []
    for key in ("Brainstem", "SpinalCord", "Parotid_R", "Parotid_L", "Esophagus", "Larynx", "Bone_Mandible"):
        m = case.structures[key].mask.ravel()
        a, b = ref[m], pm[m]
        q = 100 - 100 * n / m.sum()
        diffs += [abs(np.percentile(a, q) - np.percentile(b, q)), abs(a.mean() - b.mean())]
    for key in ("PTV56", "PTV63", "PTV70"):
        m = case.structures[key].mask.ravel()
        diffs += [abs(np.percentile(ref[m], p) - np.percentile(pm[m], p)) for p in (1, 5, 99)]
    assert s["dvh_score"] == pytest.approx(np.mean(diffs), rel=1e-9)


def test_gdphmm_mae_known_answer():
    ref = np.array([0, 4, 6, 10, 20], np.float32).reshape(5, 1, 1)
    pred = np.array([0, 7, 6, 12, 20], np.float32).reshape(5, 1, 1)
    body = np.ones(ref.shape, bool)
    # M = {4->7 (pred>5), 6, 10, 20}; sum |diff| = 3 + 0 + 2 + 0 = 5; denominator count(ref > 5) = 3
    assert gdphmm_mae(ref, pred, body) == pytest.approx(5 / 3)
    body[3] = False
    assert gdphmm_mae(ref, pred, body) == pytest.approx(3 / 2)


def test_isodose_dice():
    ref = np.zeros((10, 10, 10), np.float32)
    pred = np.zeros_like(ref)
    ref[:4] = 50
    pred[2:6] = 50
    assert isodose_dice(ref, pred, 25.0) == pytest.approx(2 * 200 / 800)
    levels = isodose_dice_levels(ref, pred, 50.0)
    assert set(levels) == {f"dice_{p}" for p in range(10, 101, 10)} and levels["dice_100"] == pytest.approx(0.5)
    assert np.isnan(isodose_dice(ref, pred, 60.0))


def test_paddick_and_hi_closed_form():
    dose = np.zeros((20, 20, 20), np.float32)
    target = np.zeros(dose.shape, bool)
    target[5:15, 5:15, 5:15] = True  # 1000 voxels
    dose[5:15, 5:15, 5:10] = 60  # covers 500 target voxels
    dose[15:20, 5:15, 5:10] = 60  # 250 voxels outside
    assert paddick_ci(dose, target, 60.0) == pytest.approx(500**2 / (1000 * 750))
    ramp = np.broadcast_to(np.arange(1, 101, dtype=np.float32).reshape(100, 1, 1), (100, 1, 1)).copy()
    # D2 = 99, D98 = 3, D50 = 51 (hottest-n definition)
    assert homogeneity_index(ramp, np.ones(ramp.shape, bool)) == pytest.approx((99 - 3) / 51)


def test_default_constraints_and_one_failure(case):
    table = load_constraints()
    assert {c.structure for c in table} >= {"SpinalCord", "Brainstem", "Parotid_L", "Parotid_R", "Mandible",
                                            "Larynx", "Esophagus"}
    dose = np.zeros(case.grid.shape, np.float32)
    dose[case.structures["SpinalCord"].mask] = 50.0  # cord D0.1cc 50 > 45: the only failure
    dvhs = case_dvhs(case, dose)
    rows = check_constraints(dvhs, table, {k: s.original_name for k, s in case.structures.items()})
    assert {r["structure"] for r in rows} == {"SpinalCord", "Brainstem", "Parotid_L", "Parotid_R", "Bone_Mandible",
                                              "Larynx", "Esophagus"}
    failed = [r for r in rows if not r["passed"]]
    assert len(failed) == 1 and failed[0]["structure"] == "SpinalCord"
    assert failed[0]["margin"] == pytest.approx(-5.0) and failed[0]["value"] == pytest.approx(50.0)


def test_constraint_matches_openkbp_original_names():
    g = Grid((6, 6, 6), (2.0, 2.0, 2.0), (0, 0, 0), np.eye(3))
    m = np.zeros(g.shape, bool)
    m[1:3, 1:3, 1:3] = True
    c = Case("x", g, structures={"LeftParotid": Structure("LeftParotid", m, Role.OAR)})
    dvhs = case_dvhs(c, np.full(g.shape, 30.0, np.float32))
    rows = check_constraints(dvhs, [Constraint("Parotid_L", "Dmean", "<", 26.0), Constraint("Parotid_R", "Dmean", "<", 26.0),
                                    Constraint("Parotid_L", "V20Gy%", "<=", 50.0)])
    assert [(r["structure"], r["passed"]) for r in rows] == [("LeftParotid", False), ("LeftParotid", False)]
    assert rows[1]["value"] == 100.0 and rows[1]["unit"] == "%"


def test_evaluate_case_keys(case):
    m = evaluate_case(case.dose_gy * 1.02, case, gamma=False)
    for key in ("dose_score", "dvh_score", "gdphmm_mae", "mae_body", "dice", "dice_mean", "dice_50",
                "cord_dmax_error", "oar_dmax_error", "dvh_diff", "quality", "constraints"):
        assert key in m
    assert m["cord_dmax_error"] == pytest.approx(0.02 * case.dose_gy[case.structures["SpinalCord"].mask].max(), rel=1e-4)
    assert m["dvh_diff"]["PTV70"]["dmean_diff_gy"] == pytest.approx(
        0.02 * case.dose_gy[case.structures["PTV70"].mask].mean(), rel=1e-4)

"""Dose metrics: DVHs, OpenKBP / GDP-HMM scores, isodose Dice, gamma, plan quality, constraints, reports.

Works on numpy arrays, :class:`~ADDiffDoseLib.geometry.Grid` and :class:`~ADDiffDoseLib.case.Case` only.
"""

from .comparison import gdphmm_mae, isodose_dice, isodose_dice_levels, mae_in_mask
from .constraints import Constraint, check_constraints, load_constraints
from .dvh import DVH, case_dvhs, compute_dvh, dvh_table
from .evaluate import evaluate_case, evaluate_case_full, evaluate_folders
from .gamma import GammaResult, gamma_index
from .openkbp_score import case_openkbp_scores, dose_score, openkbp_scores
from .quality import homogeneity_index, paddick_ci

__all__ = [
    "DVH", "compute_dvh", "dvh_table", "case_dvhs", "openkbp_scores", "case_openkbp_scores", "dose_score",
    "gdphmm_mae", "mae_in_mask", "isodose_dice", "isodose_dice_levels", "gamma_index", "GammaResult",
    "paddick_ci", "homogeneity_index", "Constraint", "load_constraints", "check_constraints",
    "evaluate_case", "evaluate_case_full", "evaluate_folders",
]

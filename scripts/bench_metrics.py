"""Speed of the dose metrics: DVH of 10 structures on a 128^3 grid (native, SlicerRT mode) and 3D gamma 3%/3mm.

Usage: python scripts/bench_metrics.py CASE.npz [--repeat 3]   (an OpenKBP npz; its dose and structures are used)
Prints a small table of best-of-N wall times in seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.ndimage import gaussian_filter

from ADDiffDoseLib.metrics.dvh import case_dvhs
from ADDiffDoseLib.metrics.gamma import gamma_index
from ADDiffDoseLib.metrics.loading import read_any_case


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", help="OpenKBP npz (or any case with dose and structures)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    case = read_any_case(args.case)
    structures = {k: s for k, s in case.structures.items() if not s.is_empty and k != "External"}
    case10 = case.replace(structures=dict(list(structures.items())[:10]))
    evaluated = gaussian_filter(case.dose_gy, 1.0)
    rows = [
        (f"DVH native, {len(case10.structures)} structures", _best(lambda: case_dvhs(case10, mode="native"), args.repeat)),
        (f"DVH slicerrt, {len(case10.structures)} structures", _best(lambda: case_dvhs(case10, mode="slicerrt"), args.repeat)),
        ("gamma 3%/3mm (10% cutoff)", _best(lambda: gamma_index(case.dose_gy, evaluated, case.grid.spacing_mm, 3, 3, 10), 1)),
        ("gamma 2%/2mm (10% cutoff)", _best(lambda: gamma_index(case.dose_gy, evaluated, case.grid.spacing_mm, 2, 2, 10), 1)),
    ]
    print(f"case {case.name}, grid {case.grid.shape}, spacing {np.round(case.grid.spacing_mm, 3).tolist()} mm")
    print(f"{'operation':<36}{'seconds':>10}")
    for name, sec in rows:
        print(f"{name:<36}{sec:>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

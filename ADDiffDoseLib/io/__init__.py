"""Readers (return a Case) and writers (take one), one module per format.

`read_case(path)` detects the format; see `detect.py`.
"""

from .detect import iter_cases, read_case, write_dose

__all__ = ["read_case", "write_dose", "iter_cases"]

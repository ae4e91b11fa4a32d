"""Readers (return a Case) and writers (take one), one module per format.

`read_case(path)` detects the format; see `detect.py`.
"""

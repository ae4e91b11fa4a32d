"""DICOM-RT in and out: CT series, RT Structure Set, RT Plan, RT Dose.

Reading: :func:`read_dicom` assembles one study into a :class:`~ADDiffDoseLib.case.Case`;
:func:`list_dicom_series` lists what a file/folder holds. Writing: ``write_*`` (all atomic).
"""

from .reader import read_dicom, read_rtstruct_on_grid
from .scan import list_dicom_series

__all__ = ["read_dicom", "read_rtstruct_on_grid", "list_dicom_series", "write_rtdose", "write_rtplan",
           "write_ct_series", "write_rtstruct",
           "write_dicom_study"]


def __getattr__(name):  # writers load lazily (skimage) so reading stays light
    if name in ("write_rtdose", "write_rtplan", "write_ct_series", "write_rtstruct", "write_dicom_study"):
        from . import writers

        return getattr(writers, name)
    raise AttributeError(name)

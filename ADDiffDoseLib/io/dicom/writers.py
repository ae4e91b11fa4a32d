"""All DICOM writers in one namespace."""

from .ct_writer import write_ct_series
from .rtdose_writer import write_rtdose
from .rtplan_writer import write_rtplan
from .rtstruct_writer import write_rtstruct
from .study_writer import write_dicom_study

__all__ = ["write_ct_series", "write_rtdose", "write_rtplan", "write_rtstruct", "write_dicom_study"]

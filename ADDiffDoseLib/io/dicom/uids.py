"""DICOM UIDs: SOP classes used here and fresh instance UIDs."""

from __future__ import annotations

from pydicom.uid import generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"

SOP_CLASS_MODALITY = {CT_IMAGE: "CT", RT_DOSE: "RTDOSE", RT_STRUCT: "RTSTRUCT", RT_PLAN: "RTPLAN"}

#: pydicom's root; enough for research output (UUID-derived suffix, unique per call).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def new_uid() -> str:
    """A fresh, globally unique UID."""
    return generate_uid(prefix=UID_PREFIX)

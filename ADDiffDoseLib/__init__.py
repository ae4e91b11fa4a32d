"""ADDiffDose library: radiotherapy dose prediction. NOT FOR CLINICAL USE.

Layers (imports go downward only): errors/geometry -> case -> io -> metrics -> model -> cli, slicer.
This package never imports Qt.
"""

__version__ = "0.1.0"

NOT_FOR_CLINICAL_USE = "ADDiffDose research software - NOT FOR CLINICAL USE"

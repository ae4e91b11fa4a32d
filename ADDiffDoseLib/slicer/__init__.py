"""MRML glue: Case and dose arrays <-> nodes of a passed-in ``vtkMRMLScene``. No Qt.

Works in real 3D Slicer and headless with the ``slicer-core`` wheel. Every function takes the scene
(or nodes) explicitly; nothing here touches ``slicer.app``, ``slicer.mrmlScene`` or widgets.
SlicerRT features (DVH, isodose) are used when the running Slicer has them, else equivalent
library code fills in.

Import submodules explicitly (``from ADDiffDoseLib.slicer import nodes``); never bind this package
to the bare name ``slicer``, which is 3D Slicer's own module.
"""

"""PyTorch for the prediction worker, checked from Slicer's GUI process without importing torch there. No Qt.

The worker (PythonSlicer) shares Slicer's Python, so torch must be installed in it; the PyTorch extension
(fepegar/SlicerPyTorch ``PyTorchUtils/PyTorchUtils.py``) installs the build that fits the GPU driver. Its
module imports Qt, so the caller (``ADDiffDose.py``) imports it and passes it in.
"""

from __future__ import annotations

from ..errors import ErrorCode, ModelError

TORCH_REQUIREMENT = ">=2.11"  # as pyproject.toml declares


def ensure_torch(pytorch_utils, requirement: str = TORCH_REQUIREMENT, ask_confirmation: bool = True) -> bool:
    """Make sure torch is installed; True when it was installed now, False when it already was.

    pytorch_utils: the ``PyTorchUtils`` module, or None when the PyTorch extension is missing.
    Raises ModelError (E501) when the extension is missing or the user declines the install:
    ``installTorch`` then returns None (PyTorchUtils.py ~207-214) and a prediction must not start.
    """
    if pytorch_utils is None:
        raise ModelError("the PyTorch extension is not installed: install 'PyTorch' from the Extensions Manager, "
                         "restart Slicer and predict again", code=ErrorCode.DEPENDENCY_MISSING)
    logic_class = pytorch_utils.PyTorchUtilsLogic
    # static: reads torch's package metadata, so a broken torch does not get imported into Slicer here
    if logic_class.torchInstalled():
        return False
    torch = logic_class().installTorch(askConfirmation=ask_confirmation, torchVersionRequirement=requirement)
    if torch is None:
        raise ModelError("PyTorch was not installed (installation declined), so the prediction did not start; "
                         "press Predict again and accept the installation", code=ErrorCode.DEPENDENCY_MISSING)
    return True

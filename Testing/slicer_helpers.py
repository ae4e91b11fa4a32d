"""Helpers shared by the test_slicer_*.py files: a real MRML scene and an OpenKBP case as nodes."""

from __future__ import annotations

from ADDiffDoseLib.case import Case
from ADDiffDoseLib.io.openkbp import read_openkbp_npz


def openkbp_case(npz_path) -> Case:
    """An OpenKBP validation patient as a Case (TG-263 names: Parotid_R, Parotid_L, ...)."""
    return read_openkbp_npz(npz_path)


def new_scene():
    """A fresh, real MRML scene (slicer-core registers every core node class)."""
    import slicer

    return slicer.vtkMRMLScene()


def node_count(scene) -> int:
    return scene.GetNumberOfNodes()

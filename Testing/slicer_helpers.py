"""Helpers shared by the test_slicer_*.py files: a real MRML scene and an OpenKBP case as nodes."""

from __future__ import annotations

import pytest

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


@pytest.fixture(scope="module")
def case(openkbp_npz):
    """The OpenKBP validation case shared by a test module (import this fixture into the module)."""
    return openkbp_case(openkbp_npz)


@pytest.fixture()
def loaded(case):
    """(scene, ct_node, seg_node): the case as volume and segmentation nodes in a fresh scene."""
    from ADDiffDoseLib.slicer import nodes

    scene = new_scene()
    ct_node, seg_node = nodes.add_case_to_scene(scene, case)
    return scene, ct_node, seg_node

"""The module's SlicerRT branch against stand-ins that write what SlicerRT writes (Testing/slicerrt_fakes.py, each
behaviour with its SlicerRT source file and line) on real slicer-core MRML: role names, the "Intensity" column,
unique table/model names, ComputeDvh stopping at a segment that does not overlap the dose (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

import slicerrt_fakes  # noqa: E402
from slicer_helpers import case, loaded  # noqa: E402,F401  (fixtures)

from ADDiffDoseLib.errors import ErrorCode, GeometryError  # noqa: E402
from ADDiffDoseLib.geometry import Grid  # noqa: E402
from ADDiffDoseLib.metrics.dvh import compute_dvh  # noqa: E402
from ADDiffDoseLib.slicer import dose_output, dvh, nodes  # noqa: E402

KEYS = ("PTV70", "Parotid_L", "SpinalCord")


@pytest.fixture()
def rt(monkeypatch):
    """A fake SlicerRT DVH logic installed as slicer.modules.dosevolumehistogram."""
    logic = slicerrt_fakes.FakeDoseVolumeHistogramLogic()
    slicerrt_fakes.install(monkeypatch, dvh_logic=logic)
    return logic


def _dose(scene, ct_node, case, name="pred"):
    return dose_output.add_dose_node(scene, case.dose_gy, case.grid, name, reference_node=ct_node, prescription_gy=70)


def _seg(scene, case, ct_node, extra: dict | None = None):
    masks = {k: case.structures[k].mask for k in KEYS}
    seg = nodes.add_segmentation_node(scene, masks, case.grid, "structures", reference_node=ct_node)
    for name, (mask, grid) in (extra or {}).items():
        seg.AddSegmentFromBinaryLabelmapRepresentation(nodes._oriented_image(mask, grid), name, [1.0, 0.0, 0.0])
    return seg


def _far_grid(case) -> Grid:
    """A small grid 1 m away from the dose: its segment cannot overlap."""
    g = case.grid
    return Grid((4, 4, 4), g.spacing_mm, g.origin_lps + 1000.0, g.direction)


def test_tables_are_found_by_slicerrt_role_names(loaded, case, rt):
    """vtkMRMLDoseVolumeHistogramNode.cxx ~47, ~343-357: roles "DoseVolumeHistogram.<dose>_<seg>_<segmentID>"."""
    scene, ct_node, _ = loaded
    dose, seg = _dose(scene, ct_node, case), _seg(scene, case, ct_node)
    out = dvh.compute_dvh_nodes(scene, dose, seg, use_slicerrt=True, dashed=True)
    assert out.engine == "slicerrt" and set(out.tables) == set(KEYS)
    metrics = out.metrics_table
    roles = [metrics.GetNthNodeReferenceRole(n) for n in range(metrics.GetNumberOfNodeReferenceRoles())]
    assert sum(r.startswith(f"DoseVolumeHistogram.{dose.GetID()}_{seg.GetID()}_") for r in roles) == len(KEYS)
    assert out.chart.GetNumberOfPlotSeriesNodes() == len(KEYS)
    for key in KEYS:
        ref = compute_dvh(case.dose_gy, case.structures[key].mask, case.grid, mode="slicerrt")
        dose_gy, volume_pct = dvh.table_arrays(out.tables[key])
        np.testing.assert_allclose(dose_gy, ref.dose_bins_gy)
        np.testing.assert_allclose(volume_pct, ref.volume_pct)
        assert out.series[key].GetXColumnName() == "Dose" and out.series[key].GetName() == f"{key} (pred)"
    # the user's names in SlicerRT's Structure column; the normalized name appended after SlicerRT's columns
    table = metrics.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert names[:4] == ["Show", "Structure", "Volume name", "Volume (cc)"] and names[-1] == "Normalized name"
    rows = {metrics.GetCellText(r, 1): metrics.GetCellText(r, len(names) - 1) for r in range(metrics.GetNumberOfRows())}
    assert rows == {"PTV70": "PTV70", "Parotid_L": "Parotid_L", "SpinalCord": "SpinalCord"}


def test_a_second_run_reads_its_own_uniquely_named_tables(loaded, case, rt):
    """logic .cxx ~620: "<segmentID>_DvhTable" through GenerateUniqueName, so a second DVH gets "_1" names."""
    scene, ct_node, _ = loaded
    dose, seg = _dose(scene, ct_node, case), _seg(scene, case, ct_node)
    first = dvh.compute_dvh_nodes(scene, dose, seg, use_slicerrt=True)
    second = dvh.compute_dvh_nodes(scene, dose, seg, use_slicerrt=True)
    for key in KEYS:
        assert second.tables[key] is not first.tables[key]
        assert second.tables[key].GetName().endswith("_DvhTable_1")
    assert second.metrics_table.GetName() == "DvhMetrics_1"


def test_empty_and_outside_segments_are_skipped_and_named(loaded, case, rt):
    """One segment outside the dose and one empty: the others get their DVH, those two are reported."""
    scene, ct_node, _ = loaded
    far = _far_grid(case)
    extra = {"Outside": (np.ones(far.shape, bool), far), "Empty": (np.zeros(case.grid.shape, bool), case.grid)}
    dose, seg = _dose(scene, ct_node, case), _seg(scene, case, ct_node, extra)
    for engine in (True, False):
        out = dvh.compute_dvh_nodes(scene, dose, seg, use_slicerrt=engine)
        assert set(out.tables) == set(KEYS)
        assert out.skipped == {"Outside": dvh.NO_OVERLAP, "Empty": dvh.EMPTY}
        assert "Outside (does not overlap the dose volume)" in out.skipped_text()
    # SlicerRT was asked only for the overlapping segments, in one call
    ids = {seg.GetSegmentation().GetSegment(s).GetName(): s for s in nodes.segment_ids(seg)}
    assert rt.calls[-1] == [ids[k] for k in KEYS]


def test_compute_dvh_stopping_at_a_non_overlapping_segment_falls_back_per_segment(loaded, case, rt, monkeypatch):
    """logic .cxx ~439/~604: ComputeDvh returns "Dose volume and the structure do not overlap" at the first such
    segment and computes no later one. If our check lets one through (here: the check is switched off), the
    segments after it are computed one by one and the culprit reported with SlicerRT's message."""
    scene, ct_node, _ = loaded
    far = _far_grid(case)
    masks = {"PTV70": (case.structures["PTV70"].mask, case.grid), "Outside": (np.ones(far.shape, bool), far),
             "SpinalCord": (case.structures["SpinalCord"].mask, case.grid)}
    seg = nodes.add_segmentation_node(scene, {}, case.grid, "order matters", reference_node=ct_node)
    for name, (mask, grid) in masks.items():
        seg.AddSegmentFromBinaryLabelmapRepresentation(nodes._oriented_image(mask, grid), name, [0.0, 1.0, 0.0])
    ids = nodes.segment_ids(seg)
    everything = lambda seg_node, dose_node, segment_ids=None: (  # noqa: E731
        nodes.export_segments(seg_node, nodes.grid_from_volume_node(dose_node), segment_ids), {})
    monkeypatch.setattr(dvh, "overlapping_segments", everything)
    dose = _dose(scene, ct_node, case)
    out = dvh.compute_dvh_nodes(scene, dose, seg, use_slicerrt=True)
    assert set(out.tables) == {"PTV70", "SpinalCord"}
    assert out.skipped == {"Outside": "SlicerRT: Dose volume and the structure do not overlap"}
    assert rt.calls == [ids, [ids[1]], [ids[2]]]  # all (stops at Outside), then the ones without a table


def test_no_overlapping_segment_raises_grid_mismatch(loaded, case, rt):
    scene, ct_node, _ = loaded
    far = _far_grid(case)
    seg = nodes.add_segmentation_node(scene, {}, case.grid, "far away")
    far_image = nodes._oriented_image(np.ones(far.shape, bool), far)
    seg.AddSegmentFromBinaryLabelmapRepresentation(far_image, "Far", [1.0, 0.0, 0.0])
    with pytest.raises(GeometryError, match="Far: does not overlap") as info:
        dvh.compute_dvh_nodes(scene, _dose(scene, ct_node, case), seg, use_slicerrt=True)
    assert info.value.code == ErrorCode.GRID_MISMATCH


def test_unmarked_volume_gets_slicerrts_intensity_column(loaded, case, rt):
    """logic .cxx ~765: x column "Intensity" when the volume is not a dose; the series and arrays follow it."""
    scene, ct_node, _ = loaded
    plain = nodes.add_volume_node(scene, case.dose_gy, case.grid, "planned, unmarked")
    seg = _seg(scene, case, ct_node)
    out = dvh.compute_dvh_nodes(scene, plain, seg, use_slicerrt=True)
    for key in KEYS:
        assert dvh.x_column(out.tables[key]) == "Intensity"
        assert out.series[key].GetXColumnName() == "Intensity"
        x, volume = dvh.table_arrays(out.tables[key])
        assert len(x) == 101 and (x[0], volume[0]) == (0.0, 100.0)  # 100 samples + the (0, 100 %) point
        assert x[-1] == pytest.approx(compute_dvh(case.dose_gy, case.structures[key].mask, case.grid,
                                                  mode="slicerrt").max_gy)
    dose_output.mark_as_dose(scene, plain, reference_node=ct_node)
    again = dvh.compute_dvh_nodes(scene, plain, seg, use_slicerrt=True)
    assert all(dvh.x_column(t) == "Dose" for t in again.tables.values())


def _isodose_parameter_nodes(scene):
    found = scene.GetNodesByClass("vtkMRMLScriptedModuleNode")
    return [found.GetItemAsObject(i) for i in range(found.GetNumberOfItems())
            if isinstance(found.GetItemAsObject(i), slicerrt_fakes.FakeIsodoseNode)]


def test_isodose_keeps_one_parameter_node_per_dose_and_returns_its_model(loaded, case, monkeypatch):
    """vtkSlicerIsodoseModuleLogic.cxx ~790: the model is named with GenerateUniqueName and kept in the parameter
    node, so a stale "<dose>_IsodoseLevels" (here a model left by an earlier run) must not be returned."""
    from ADDiffDoseLib.slicer import isodose

    logic = slicerrt_fakes.FakeIsodoseLogic()
    slicerrt_fakes.install(monkeypatch, isodose_logic=logic)
    scene, ct_node, _ = loaded
    dose = _dose(scene, ct_node, case)
    stale = scene.AddNewNodeByClass("vtkMRMLModelNode", "pred_IsodoseLevels")
    model = isodose.create_isodose(scene, dose)
    assert model is not stale and model.GetName() == "pred_IsodoseLevels_1"  # GenerateUniqueName
    parameters = _isodose_parameter_nodes(scene)
    assert len(parameters) == 1 and parameters[0].GetIsosurfacesModelNode() is model
    table = parameters[0].GetColorTableNode()
    assert table.GetName() == "pred_IsodoseColorTable"
    assert [table.GetColorName(i) for i in range(table.GetNumberOfColors())] == ["35", "56", "63", "66.5", "70", "73.5"]
    rgba = [0.0] * 4
    table.GetColor(0, rgba)
    assert rgba[:3] == pytest.approx(isodose.CLINICAL_COLORS[50.0])
    again = isodose.create_isodose(scene, dose, levels_pct=(95, 100, 107))
    assert again is model and len(_isodose_parameter_nodes(scene)) == 1 and logic.created == 2
    assert table.GetNumberOfColors() == 3 and table.GetColorName(2) == "74.9"
    assert isodose.legend_of(dose).GetCellText(2, 0) == "107 %"


def test_isodose_failure_is_our_error(loaded, case, monkeypatch):
    """CreateIsodoseSurfaces returns false (e.g. no SH item for the dose); we raise E503, no stale model."""
    from ADDiffDoseLib.errors import DoseError
    from ADDiffDoseLib.slicer import isodose

    slicerrt_fakes.install(monkeypatch, isodose_logic=slicerrt_fakes.FakeIsodoseLogic(fail=True))
    scene, ct_node, _ = loaded
    with pytest.raises(DoseError, match="could not create the isodose") as info:
        isodose.create_isodose(scene, _dose(scene, ct_node, case))
    assert info.value.code == ErrorCode.EXTERNAL_FAILED

"""Dose node, DVH, isodose and comparison nodes on a real MRML scene with a real OpenKBP case."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

from slicer_helpers import case, loaded, new_scene, openkbp_case  # noqa: E402,F401  (fixtures)

from ADDiffDoseLib import NOT_FOR_CLINICAL_USE  # noqa: E402
from ADDiffDoseLib.errors import DoseError  # noqa: E402
from ADDiffDoseLib.metrics.dvh import compute_dvh  # noqa: E402
from ADDiffDoseLib.slicer import compare, dose_output, dvh, isodose, nodes  # noqa: E402

PROVENANCE = {"model": "heuristic", "model_sha256": "ab" * 32, "seed": 3, "steps": 10,
              "beams": [{"gantry_deg": 0.0}, {"gantry_deg": 180.0}]}


def _dose_node(scene, ct_node, case, dose=None, name="pred"):
    return dose_output.add_dose_node(scene, case.dose_gy if dose is None else dose, case.grid, name,
                                     reference_node=ct_node, provenance=PROVENANCE, prescription_gy=70.0)


def test_dose_node_is_marked_the_slicerrt_way(loaded, case):
    scene, ct_node, _ = loaded
    node = _dose_node(scene, ct_node, case)
    assert node.GetAttribute("DicomRtImport.DoseVolume") == "1"
    assert dose_output.is_dose_node(node)
    np.testing.assert_array_equal(nodes.array_from_volume_node(node), case.dose_gy)
    assert nodes.grid_from_volume_node(node).same_as(case.grid, atol_mm=1e-6)
    sh = nodes.subject_hierarchy(scene)
    import slicer

    study_level = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
    item = sh.GetItemByDataNode(node)
    assert sh.GetAttributeFromItemAncestor(item, "DicomRtImport.DoseUnitName", study_level) == "Gy"
    assert sh.GetItemAncestorAtLevel(item, study_level) == nodes.study_item_of(scene, ct_node)
    prov = dose_output.provenance_of(node)
    assert prov["Model"] == "heuristic" and prov["ModelSHA256"] == "ab" * 32
    assert prov["Seed"] == "3" and prov["Steps"] == "10" and "180.0" in prov["Beams"]
    assert prov["NotForClinicalUse"] == NOT_FOR_CLINICAL_USE
    display = node.GetDisplayNode()
    assert display.GetWindowLevelMin() == 0.0 and display.GetWindowLevelMax() == pytest.approx(77.0)
    assert display.GetColorNode().GetName() == dose_output.FALLBACK_DOSE_COLOR_TABLE


def test_dose_colour_table_prefers_slicerrt_and_negative_dose_refused(loaded, case):
    scene, ct_node, _ = loaded
    rt_table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "Dose_ColorTable")
    node = _dose_node(scene, ct_node, case)
    assert node.GetDisplayNode().GetColorNodeID() == rt_table.GetID()
    before = scene.GetNumberOfNodes()
    with pytest.raises(DoseError, match="negative"):
        _dose_node(scene, ct_node, case, dose=case.dose_gy - 1.0)
    assert scene.GetNumberOfNodes() == before
    tiny = case.dose_gy.copy()
    tiny[0, 0, 0] = -1e-4  # interpolation noise: clipped, not refused
    assert nodes.array_from_volume_node(_dose_node(scene, ct_node, case, dose=tiny)).min() == 0.0


def test_uncertainty_node_is_not_a_dose(loaded, case):
    scene, ct_node, _ = loaded
    std = dose_output.add_uncertainty_node(scene, np.full(case.grid.shape, 0.5, np.float32), case.grid, "std",
                                           reference_node=ct_node, provenance=PROVENANCE)
    assert not dose_output.is_dose_node(std)
    assert std.GetAttribute("ADDiffDose.Uncertainty") == "std_gy"


def test_dvh_nodes_equal_the_library(loaded, case):
    scene, ct_node, seg_node = loaded
    node = _dose_node(scene, ct_node, case)
    out = dvh.compute_dvh_nodes(scene, node, seg_node, dashed=True)
    assert out.engine == "library"
    assert set(out.tables) == set(case.structures)
    for key in ("PTV70", "Parotid_L", "SpinalCord"):
        ref = compute_dvh(case.dose_gy, case.structures[key].mask, case.grid, mode="slicerrt", name=key)
        dose_gy, volume_pct = dvh.table_arrays(out.tables[key])
        np.testing.assert_allclose(dose_gy, ref.dose_bins_gy)
        np.testing.assert_allclose(volume_pct, ref.volume_pct)
        assert (dose_gy[0], volume_pct[0]) == (0.0, 100.0)  # SlicerRT's first row
        assert out.tables[key].GetAttribute("DoseVolumeHistogram.DVH") == "1"
        series = out.series[key]
        assert series.GetTableNode() is out.tables[key]
        import slicer

        assert series.GetLineStyle() == slicer.vtkMRMLPlotSeriesNode.LineStyleDash
    assert out.chart.GetNumberOfPlotSeriesNodes() == len(case.structures)
    metrics = out.metrics_table
    rows = {metrics.GetCellText(r, 0): r for r in range(metrics.GetNumberOfRows())}
    ptv = compute_dvh(case.dose_gy, case.structures["PTV70"].mask, case.grid, mode="slicerrt")
    col = {metrics.GetColumnName(c): c for c in range(metrics.GetNumberOfColumns())}
    assert list(col)[:2] == ["Structure", "Normalized name"]  # the user's name first (issue 15.10)
    assert float(metrics.GetCellText(rows["PTV70"], col["Mean dose (Gy)"])) == pytest.approx(ptv.mean_gy, abs=1e-3)
    assert float(metrics.GetCellText(rows["PTV70"], col["D95% (Gy)"])) == pytest.approx(ptv.d_percent(95), abs=1e-3)
    assert out.skipped == {}


def test_isodose_segments_threshold_the_dose(loaded, case):
    """Issue 15.9: 50/80/90/95/100/105 % of the prescription stored on the dose node, a legend in Gy."""
    scene, ct_node, _ = loaded
    node = _dose_node(scene, ct_node, case)  # stores ADDiffDose.PrescriptionGy = 70
    seg = isodose.create_isodose(scene, node)
    levels = isodose.default_levels_gy(70.0)
    assert levels == [35.0, 56.0, 63.0, 66.5, 70.0, 73.5]
    infos = nodes.export_segments(seg, case.grid)
    assert [i.name for i in infos] == [f"{p:g} % ({v:g} Gy)" for p, v in zip((50, 80, 90, 95, 100, 105), levels)]
    for level, info in zip(levels, infos):
        np.testing.assert_array_equal(info.mask, case.dose_gy >= level)
    assert infos[1].color_rgb == pytest.approx(isodose.CLINICAL_COLORS[80.0])  # SlicerRT's 80 % purple
    sh = nodes.subject_hierarchy(scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == sh.GetItemByDataNode(node)
    legend = isodose.legend_of(node)
    rows = [[legend.GetCellText(r, c) for c in range(4)] for r in range(legend.GetNumberOfRows())]
    assert rows[0] == ["50 %", "50", "35", "#00ffff"] and rows[4][:3] == ["100 %", "100", "70"]
    again = isodose.create_isodose(scene, node, levels_pct=(90, 100))  # one segmentation and legend per dose
    assert scene.GetNodeByID(seg.GetID()) is None and isodose.legend_of(node) is legend
    assert legend.GetNumberOfRows() == 2 and again.GetSegmentation().GetNumberOfSegments() == 2


def test_isodose_without_prescription_uses_slicerrts_gy_table(loaded, case):
    scene, ct_node, _ = loaded
    node = dose_output.add_dose_node(scene, case.dose_gy, case.grid, "no rx", reference_node=ct_node)
    assert dose_output.prescription_of(node) is None
    isodose.create_isodose(scene, node)
    legend = isodose.legend_of(node)
    assert [legend.GetCellText(r, 2) for r in range(legend.GetNumberOfRows())] == ["5", "10", "15", "20", "25", "30"]
    assert legend.GetCellText(0, 1) == "" and legend.GetCellText(0, 3) == "#00ff00"  # Isodose_ColorTable.ctbl
    from ADDiffDoseLib.errors import InputError

    with pytest.raises(InputError, match="need a prescription"):
        isodose.create_isodose(scene, node, levels_pct=(95,))


def test_compare_planned_and_predicted(loaded, case):
    scene, ct_node, seg_node = loaded
    planned = _dose_node(scene, ct_node, case, name="planned")
    shifted = np.roll(case.dose_gy, 1, axis=1) * np.float32(0.97)  # 1 voxel shift, 3 % low
    predicted = _dose_node(scene, ct_node, case, dose=shifted, name="predicted")
    result = compare.compare_doses(scene, planned, predicted, seg_node)
    rows = {(r["structure"], r["metric"]): r for r in result.rows}
    ref = compute_dvh(case.dose_gy, case.structures["PTV70"].mask, case.grid, mode="slicerrt")
    pred = compute_dvh(shifted, case.structures["PTV70"].mask, case.grid, mode="slicerrt")
    r = rows[("PTV70", "D95%")]
    assert r["planned_gy"] == pytest.approx(ref.d_percent(95))
    assert r["predicted_gy"] == pytest.approx(pred.d_percent(95))
    assert r["difference_gy"] == pytest.approx(pred.d_percent(95) - ref.d_percent(95))
    assert rows[("PTV70", "Dmean")]["difference_gy"] < 0  # 3 % low
    table = result.metrics_table
    assert table.GetNumberOfRows() == len(result.rows) == 4 * len(case.structures)
    # 1 voxel (<= 4 mm) shift and -3 %: 3 %/3 mm gamma mostly passes, but not everywhere
    assert 50.0 < result.gamma_pass_rate_pct < 100.0
    np.testing.assert_allclose(nodes.array_from_volume_node(result.difference_node), shifted - case.dose_gy, atol=1e-5)
    assert not dose_output.is_dose_node(result.difference_node)
    assert result.chart.GetNumberOfPlotSeriesNodes() == 2 * len(case.structures)
    assert result.constraint_rows and result.constraints_table.GetNumberOfRows() == len(result.constraint_rows)
    cord = [c for c in result.constraint_rows if c["structure"] == "SpinalCord"]
    assert cord and cord[0]["constraint"].startswith("D0.1cc")
    cord_dvh = compute_dvh(case.dose_gy, case.structures["SpinalCord"].mask, case.grid, mode="slicerrt")
    assert cord[0]["planned"] == pytest.approx(cord_dvh.d_cc(0.1))
    assert cord[0]["planned_passed"] == (cord_dvh.d_cc(0.1) < cord[0]["limit"])


def _owner_plugin_searches(scene):
    """(item, DoseVolume attribute at that moment) for every SubjectHierarchyItemOwnerPluginSearchRequested."""
    import slicer
    import vtk

    sh = nodes.subject_hierarchy(scene)
    seen = []

    @vtk.calldata_type(vtk.VTK_LONG)
    def on_search(caller, event, item):
        node = sh.GetItemDataNode(item)
        seen.append((item, node.GetAttribute("DicomRtImport.DoseVolume") if node else None))

    sh.AddObserver(slicer.vtkMRMLSubjectHierarchyNode.SubjectHierarchyItemOwnerPluginSearchRequested, on_search)
    return seen


def test_dose_node_asks_for_an_owner_plugin_search_once_marked(loaded, case):
    """Issue 15.4: SH plugins pick the owner when the item is made (qSlicerSubjectHierarchyPluginLogic.cxx
    ~222-289), before the dose attribute exists; RequestOwnerPluginSearch (vtkMRMLSubjectHierarchyNode.cxx ~2596)
    invokes SubjectHierarchyItemOwnerPluginSearchRequested, which the app's plugin logic answers."""
    scene, ct_node, _ = loaded
    seen = _owner_plugin_searches(scene)
    node = _dose_node(scene, ct_node, case)
    item = nodes.subject_hierarchy(scene).GetItemByDataNode(node)
    assert (item, "1") in seen  # asked again after DicomRtImport.DoseVolume was set
    assert node.GetAttribute(dose_output.PRESCRIPTION_ATTRIBUTE) == "70"
    assert dose_output.prescription_of(node) == 70.0


def test_a_planned_dose_the_user_picks_is_marked_as_dose(loaded, case):
    """Issue 15.6: an unmarked volume gets SlicerRT's "Intensity" DVH column (vtkSlicerDoseVolumeHistogram
    ModuleLogic.cxx ~765); marking it sets the attribute, Gy on its study and asks for an owner plugin search."""
    scene, ct_node, _ = loaded
    planned = nodes.add_volume_node(scene, case.dose_gy, case.grid, "plan dose from nrrd")
    assert not dose_output.is_dose_node(planned)
    seen = _owner_plugin_searches(scene)
    assert dose_output.mark_as_dose(scene, planned, reference_node=ct_node) is True
    assert dose_output.is_dose_node(planned)
    sh = nodes.subject_hierarchy(scene)
    item = sh.GetItemByDataNode(planned)
    assert (item, "1") in seen
    assert nodes.study_item_of(scene, planned) == nodes.study_item_of(scene, ct_node)
    import slicer

    level = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
    assert sh.GetAttributeFromItemAncestor(item, "DicomRtImport.DoseUnitName", level) == "Gy"
    assert dose_output.mark_as_dose(scene, planned) is False  # already a dose: left alone


def _table_rows(table) -> list[dict]:
    cols = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    return [{c: table.GetCellText(r, i) for i, c in enumerate(cols)} for r in range(table.GetNumberOfRows())]


def test_compare_shows_user_names_marks_the_planned_dose_and_skips_outside_segments(loaded, case):
    """Issue 15.10: the user's segment names in every table and chart, the normalized name as the second column;
    15.6: an unmarked planned dose is marked; 15.2: a segment outside the dose is skipped, not fatal."""
    scene, ct_node, _ = loaded
    from ADDiffDoseLib.geometry import Grid

    user = {"ptv 70": "PTV70", "L Parotid": "Parotid_L", "spinal cord": "SpinalCord"}
    seg = nodes.add_segmentation_node(scene, {u: case.structures[k].mask for u, k in user.items()}, case.grid,
                                      "user names", reference_node=ct_node)
    far = Grid((4, 4, 4), case.grid.spacing_mm, case.grid.origin_lps + 1000.0, case.grid.direction)
    seg.AddSegmentFromBinaryLabelmapRepresentation(nodes._oriented_image(np.ones(far.shape, bool), far), "Elsewhere",
                                                   [1.0, 0.0, 0.0])
    planned = nodes.add_volume_node(scene, case.dose_gy, case.grid, "planned (nrrd)")
    predicted = _dose_node(scene, ct_node, case, dose=case.dose_gy * np.float32(0.98), name="predicted")
    result = compare.compare_doses(scene, planned, predicted, seg, gamma_criteria=None)
    assert result.planned_marked_as_dose and dose_output.is_dose_node(planned)
    assert result.skipped == {"Elsewhere": dvh.NO_OVERLAP}
    assert result.normalized == user
    metric_rows = _table_rows(result.metrics_table)
    assert list(metric_rows[0])[:3] == ["Structure", "Normalized name", "Metric"]
    assert {(r["Structure"], r["Normalized name"]) for r in metric_rows} == set(user.items())
    constraint_rows = _table_rows(result.constraints_table)
    assert constraint_rows and {r["Structure"] for r in constraint_rows} <= set(user)
    assert ("spinal cord", "SpinalCord") in {(r["Structure"], r["Normalized name"]) for r in constraint_rows}
    series = [result.chart.GetNthPlotSeriesNode(i).GetName() for i in range(result.chart.GetNumberOfPlotSeriesNodes())]
    assert "spinal cord (predicted)" in series and "spinal cord (planned (nrrd))" in series
    assert not any("SpinalCord" in s for s in series)

"""Issue 16.3 in Slicer: a prediction's <output>_bands.json becomes band tables kept with the dose node, two dashed
series per structure in its colour in every DVH chart of that dose, and lo/hi columns in the metric tables."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

import slicerrt_fakes  # noqa: E402
from slicer_helpers import case, loaded  # noqa: E402,F401  (fixtures)

from ADDiffDoseLib.io.nrrd import write_dose_nrrd  # noqa: E402
from ADDiffDoseLib.model.bands import dvh_bands, write_bands  # noqa: E402
from ADDiffDoseLib.slicer import bands, compare, dose_output, dvh, nodes  # noqa: E402
from ADDiffDoseLib.slicer.logic import load_prediction, prepare_inputs  # noqa: E402

USER = {"ptv 70": "PTV70", "L Parotid": "Parotid_L", "spinal cord": "SpinalCord"}  # segment name -> normalized


@pytest.fixture()
def predicted(loaded, case, tmp_path):
    """(scene, ct, seg, dose node, bands dict): a worker output folder as `predict --samples 5` leaves it."""
    scene, ct_node, _ = loaded
    seg = nodes.add_segmentation_node(scene, {u: case.structures[k].mask for u, k in USER.items()}, case.grid,
                                      "user names", reference_node=ct_node)
    prepared = prepare_inputs(ct_node, seg)
    assert set(prepared.case.structures) == set(USER.values())  # the worker sees normalized names
    out = tmp_path / "dose.nrrd"
    write_dose_nrrd(out, case.dose_gy, case.grid)
    samples = np.stack([case.dose_gy * np.float32(f) for f in (0.94, 0.97, 1.0, 1.03, 1.06)])
    band_dict = dvh_bands(prepared.case, samples, point_dose=case.dose_gy)
    write_bands(out, band_dict)  # dose_bands.json + .csv, as cli/predict.py does beside the dose
    node = load_prediction(scene, prepared, out)
    return scene, ct_node, seg, node, band_dict


def test_bands_are_kept_with_the_dose_under_user_names(predicted):
    scene, _, _, node, band_dict = predicted
    kept = bands.bands_of(node)
    assert set(kept.curves) == set(USER) and kept.structures == USER
    ptv = band_dict["structures"]["PTV70"]["metrics"]["D95%"]
    assert kept.intervals["ptv 70"]["D95%"]["lo"] == pytest.approx(ptv["lo"], abs=1e-4)
    assert kept.intervals["ptv 70"]["D95%"]["hi"] == pytest.approx(ptv["hi"], abs=1e-4)
    sh = nodes.subject_hierarchy(scene)
    for table in [*kept.curves.values(), kept.intervals_table]:
        assert sh.GetItemParent(sh.GetItemByDataNode(table)) == sh.GetItemByDataNode(node)


@pytest.mark.parametrize("use_slicerrt", [False, True], ids=["library", "slicerrt"])
def test_dvh_chart_shows_two_dashed_band_edges_in_the_segment_colour(predicted, monkeypatch, use_slicerrt):
    import slicer

    scene, _, seg, node, band_dict = predicted
    if use_slicerrt:
        slicerrt_fakes.install(monkeypatch, dvh_logic=slicerrt_fakes.FakeDoseVolumeHistogramLogic())
    out = dvh.compute_dvh_nodes(scene, node, seg, dashed=True, use_slicerrt=use_slicerrt)
    assert set(out.band_series) == set(USER)
    assert out.chart.GetNumberOfPlotSeriesNodes() == 3 * len(USER)  # curve + lower + upper
    colors = {seg.GetSegmentation().GetSegment(s).GetName(): tuple(seg.GetSegmentation().GetSegment(s).GetColor())
              for s in nodes.segment_ids(seg)}
    for name, (lower, upper) in out.band_series.items():
        assert lower.GetLineStyle() == upper.GetLineStyle() == slicer.vtkMRMLPlotSeriesNode.LineStyleDash
        assert (lower.GetYColumnName(), upper.GetYColumnName()) == ("Lower", "Upper")
        assert tuple(lower.GetColor()) == pytest.approx(colors[name]) == tuple(upper.GetColor())
        assert lower.GetName() == f"{name} band lower"
    if not use_slicerrt:  # our metrics table: lo/hi of every banded metric
        table = out.metrics_table
        col = {table.GetColumnName(c): c for c in range(table.GetNumberOfColumns())}
        row = {table.GetCellText(r, 0): r for r in range(table.GetNumberOfRows())}
        lo = float(table.GetCellText(row["ptv 70"], col["Band lo D95% (Gy)"]))
        assert lo == pytest.approx(band_dict["structures"]["PTV70"]["metrics"]["D95%"]["lo"], abs=1e-4)
        assert table.GetCellText(row["spinal cord"], col["Band lo D95% (Gy)"]) == ""  # OARs have no D95% band
        hi = float(table.GetCellText(row["spinal cord"], col["Band hi D0.1cc (Gy)"]))
        assert hi == pytest.approx(band_dict["structures"]["SpinalCord"]["metrics"]["D0.1cc"]["hi"], abs=1e-4)


def test_comparison_metric_table_gets_the_predicted_interval(predicted, case):
    scene, ct_node, seg, node, band_dict = predicted
    planned = dose_output.add_dose_node(scene, case.dose_gy, case.grid, "planned", reference_node=ct_node)
    result = compare.compare_doses(scene, planned, node, seg, gamma_criteria=None)
    table = result.metrics_table
    cols = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert cols[-3:] == list(compare.BAND_TABLE_COLUMNS)
    row = next(r for r in result.rows if r["structure"] == "ptv 70" and r["metric"] == "D95%")
    iv = band_dict["structures"]["PTV70"]["metrics"]["D95%"]
    assert row["band_lo_gy"] == pytest.approx(iv["lo"], abs=1e-4) and row["planned_inside"] is True
    assert not any("band_lo_gy" in r for r in result.rows if r["metric"] == "Dmax")  # no Dmax band
    assert result.chart.GetNumberOfPlotSeriesNodes() == 2 * len(USER) + 2 * len(USER)


def test_a_prediction_without_samples_drops_the_old_bands(predicted, tmp_path):
    scene, ct_node, seg, node, _ = predicted
    old = list(bands.bands_of(node).curves.values())
    prepared = prepare_inputs(ct_node, seg)
    out = tmp_path / "again" / "dose.nrrd"
    out.parent.mkdir()
    write_dose_nrrd(out, nodes.array_from_volume_node(node), prepared.case.grid)
    assert load_prediction(scene, prepared, out, output_node=node) is node
    assert bands.bands_of(node) is None and all(not scene.IsNodePresent(t) for t in old)


def test_a_real_worker_run_with_samples_leaves_bands_on_the_dose(loaded, tmp_path):
    """End to end through `addiffdose predict --samples 2` (heuristic model): the file the worker writes beside
    its dose (cli/predict.py -> model/bands.py bands_paths) is the one the logic picks up."""
    import json

    from ADDiffDoseLib.slicer.logic import DoseLogic

    scene, ct_node, seg_node = loaded
    model = tmp_path / "heuristic.json"
    model.write_text(json.dumps({"family": "heuristic", "config": {}}))
    node = DoseLogic().predict_dose(scene, ct_node, seg_node, beams="0,72,144,216,288", model=str(model), samples=2)
    kept = bands.bands_of(node)
    assert kept is not None and kept.curves and "PTV70" in kept.intervals

"""DVH bands from coherent dose samples (issue 16): on a real OpenKBP patient."""

from __future__ import annotations

import numpy as np
import pytest

from ADDiffDoseLib.errors import InputError
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.bands import (FAMILIES, band_sample_count, band_scales_of, bands_rows, coherent_samples,
                                       dvh_bands, gaussian_random_fields, reference_in_bands)


@pytest.fixture(scope="module")
def case(openkbp_npz):
    return read_openkbp_npz(openkbp_npz)


@pytest.fixture(scope="module")
def scale(case):
    """A stand-in error map: 1 Gy + 5 % of the dose inside the body, 0 outside."""
    return np.where(case.body_mask, 1.0 + 0.05 * case.dose_gy, 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def samples(case, scale):
    return coherent_samples(case.dose_gy, scale, 8, 0, 30.0, case.grid.spacing_mm)


def test_samples_are_seeded_and_nonnegative(case, scale, samples):
    assert samples.shape == (8,) + tuple(case.grid.shape) and samples.dtype == np.float32
    assert samples.min() >= 0
    again = coherent_samples(case.dose_gy, scale, 8, np.random.default_rng(0), 30.0, case.grid.spacing_mm)
    np.testing.assert_array_equal(samples, again)
    other = coherent_samples(case.dose_gy, scale, 8, 1, 30.0, case.grid.spacing_mm)
    assert not np.array_equal(samples, other)
    outside = ~case.body_mask
    expected = np.broadcast_to(case.dose_gy[outside], samples[:, outside].shape)
    np.testing.assert_array_equal(samples[:, outside], expected)


def test_fields_are_unit_variance_and_spatially_correlated():
    spacing = np.array([4.0, 4.0, 2.5])
    f = gaussian_random_fields((96, 96, 96), 6, 3, 30.0, spacing)
    assert abs(float(f.std()) - 1.0) < 0.1
    # correlation at lag 2 voxels (8 mm) along axis 0: exp(-8^2 / (2 * 30^2)) ~ 0.96; at 100 mm: ~0
    near = np.mean([np.corrcoef(x[:-2].ravel(), x[2:].ravel())[0, 1] for x in f])
    far = np.mean([np.corrcoef(x[:-25].ravel(), x[25:].ravel())[0, 1] for x in f])
    assert near > 0.85 and abs(far) < 0.3
    # not voxel noise: the field of one structure-sized box does not average away
    assert float(np.abs(f[:, 40:50, 40:50, 40:50].mean(axis=(1, 2, 3))).mean()) > 0.2


def test_intervals_contain_the_median_and_widen_with_the_scale(case, scale, samples):
    bands = dvh_bands(case, samples, point_dose=case.dose_gy)
    assert bands["K"] == 8 and set(bands["band_scales"]) == set(FAMILIES)
    assert {"PTV70", "SpinalCord"} <= set(bands["structures"])
    ptv = bands["structures"]["PTV70"]
    assert set(ptv["metrics"]) == {"D99%", "D95%", "D1%", "Dmean", "V95%Rx"}
    assert set(bands["structures"]["SpinalCord"]["metrics"]) == {"Dmean", "D0.1cc", "D2cc", "D1%"}
    for entry in bands["structures"].values():
        for iv in entry["metrics"].values():
            assert iv["lo"] <= iv["median"] <= iv["hi"]
        c = entry["curve"]
        assert len(c["dose_gy"]) == len(c["lo_pct"]) == len(c["hi_pct"])
        assert np.all(np.array(c["lo_pct"]) <= np.array(c["median_pct"]) + 1e-9)
        assert np.all(np.array(c["median_pct"]) <= np.array(c["hi_pct"]) + 1e-9)

    def width(b, s, m):
        return b["structures"][s]["metrics"][m]["hi"] - b["structures"][s]["metrics"][m]["lo"]

    # a larger error map -> wider intervals
    wider = dvh_bands(case, coherent_samples(case.dose_gy, 3 * scale, 8, 0, 30.0, case.grid.spacing_mm))
    assert width(wider, "PTV70", "D95%") > width(bands, "PTV70", "D95%")
    assert width(wider, "SpinalCord", "D0.1cc") > width(bands, "SpinalCord", "D0.1cc")
    # a family factor widens that family only
    scaled = dvh_bands(case, samples, band_scales={"oar_max": 2.0})
    assert width(scaled, "SpinalCord", "D0.1cc") == pytest.approx(2 * width(bands, "SpinalCord", "D0.1cc"))
    assert width(scaled, "PTV70", "D95%") == pytest.approx(width(bands, "PTV70", "D95%"))


def test_reference_rows_and_csv_rows(case, samples):
    bands = dvh_bands(case, samples, point_dose=case.dose_gy)
    rows = reference_in_bands(case, bands)
    assert rows and all(r["lo"] <= r["hi"] for r in rows)
    # samples centred on the reference dose: most reference metrics lie inside their interval
    assert np.mean([r["inside"] for r in rows]) > 0.6
    flat = bands_rows(bands)
    assert {"structure", "metric", "family", "lo", "hi", "median", "value"} <= set(flat[0])


def test_band_scales_from_the_model_and_bad_inputs(case, scale):
    class Net:
        config = None
        record = {"band_scales": {"target": 1.5}}

    assert band_scales_of(Net()) == {"target": 1.5, "oar_mean": 1.0, "oar_max": 1.0}
    Net.record = {"band_scales": {"nonsense": 2}}
    with pytest.raises(InputError):
        band_scales_of(Net())
    with pytest.raises(InputError):
        coherent_samples(case.dose_gy, -scale, 2, 0, 30.0, case.grid.spacing_mm)
    with pytest.raises(InputError):
        dvh_bands(case, np.zeros((2, 4, 4, 4), np.float32))


def test_bands_draw_at_least_the_calibrated_sample_count():
    """Factors fitted at K = 8 are too narrow for the 5/95 % quantiles of 4 samples: draw the calibrated K."""
    class Net:
        record = {"band_scales": {"target": 1.8}, "band_fit": {"K": 8}}

    assert band_sample_count(Net(), 4) == 8 and band_sample_count(Net(), 16) == 16
    Net.record = {"band_fit": {"K": 8}}  # no factors: nothing was calibrated, the user's K stands
    assert band_sample_count(Net(), 4) == 4
    Net.record = {}
    assert band_sample_count(Net(), 3) == 3


def test_cli_predict_samples_writes_bands(openkbp_npz, tmp_path):
    """`addiffdose predict --samples 4` with the bundled U-Net: dose + std + <output>_bands.json/.csv, the bands
    drawn with the 8 samples its factors were calibrated with."""
    import csv
    import json

    from ADDiffDoseLib.cli.main import main

    out = tmp_path / "pred.npz"
    assert main(["predict", str(openkbp_npz), "-o", str(out), "--samples", "4", "--device", "cpu"]) == 0
    bands = json.loads((tmp_path / "pred_bands.json").read_text())
    assert bands["K"] == 8 and "PTV70" in bands["structures"] and bands["center"] in ("median", "point")
    assert set(bands["band_scales"]) == set(FAMILIES)
    rows = list(csv.DictReader((tmp_path / "pred_bands.csv").open()))
    assert rows and {"structure", "metric", "lo", "hi"} <= set(rows[0])
    assert all(float(r["lo"]) <= float(r["hi"]) for r in rows)
    # the point prediction lies inside its own interval for nearly every metric
    inside = [float(r["lo"]) - 1e-6 <= float(r["value"]) <= float(r["hi"]) + 1e-6 for r in rows]
    assert np.mean(inside) > 0.8
    # evaluate finds pred_bands.json beside the prediction: reference inside each interval, report shaded
    report, out_json = tmp_path / "report.html", tmp_path / "eval.json"
    assert main(["evaluate", "--pred", str(out), "--ref", str(openkbp_npz), "--no-gamma", "--json", str(out_json),
                 "--report", str(report)]) == 0
    check = json.loads(out_json.read_text())["cases"]["pt_201"]["intervals"]
    assert 0 <= check["band_coverage"] <= 1 and check["rows"]
    assert {"structure", "metric", "reference", "lo", "hi", "inside"} <= set(check["rows"][0])
    assert report.stat().st_size > 10000


def test_report_shades_the_bands(case, samples, monkeypatch):
    from matplotlib.axes import Axes

    from ADDiffDoseLib.metrics.evaluate import evaluate_case_full
    from ADDiffDoseLib.metrics.report_images import dvh_figure

    calls = []
    original = Axes.fill_between
    monkeypatch.setattr(Axes, "fill_between", lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    ev = evaluate_case_full(case.dose_gy, case, gamma=False)
    dvh_figure(ev.ref_dvhs, ev.pred_dvhs, ev.bands, "no bands")
    assert not calls
    ev.bands = dvh_bands(case, samples)
    dvh_figure(ev.ref_dvhs, ev.pred_dvhs, ev.bands, "bands")
    assert len(calls) == len(set(ev.bands["structures"]) & set(ev.ref_dvhs)) > 0


def test_band_coverage_summary():
    from ADDiffDoseLib.model.bands import band_coverage

    rows = [{"family": "target", "metric": "D95%", "lo": 60.0, "hi": 64.0, "inside": True},
            {"family": "target", "metric": "V95%Rx", "lo": 90.0, "hi": 100.0, "inside": False},
            {"family": "oar_max", "metric": "D0.1cc", "lo": 30.0, "hi": 36.0, "inside": True}]
    c = band_coverage(rows)
    assert c["band_coverage"] == pytest.approx(2 / 3) and c["band_coverage_target"] == 0.5
    assert c["band_width_gy_target"] == 4.0 and c["band_width_gy"] == 5.0
    assert np.isnan(c["band_coverage_oar_mean"])


def test_benchmark_samples_prints_the_interval_table(openkbp_npz, tmp_path, capsys):
    import json
    import shutil

    from ADDiffDoseLib.cli.main import main

    root = tmp_path / "data" / "openkbp" / "validation"
    root.mkdir(parents=True)
    shutil.copy(openkbp_npz, root)
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--data", str(tmp_path / "data"), "--models", "default", "--samples", "8", "--limit", "1",
                 "--no-gamma", "--no-beam-check", "--json", str(out), "--device", "cpu"]) == 0
    stdout = capsys.readouterr().out
    assert "DVH-metric intervals (nominal 90 %, K = 8)" in stdout
    means = json.loads(out.read_text())["summary"]["means"]["default"]
    assert 0 <= means["band_coverage"] <= 1 and means["band_width_gy_oar_max"] > 0


def test_slicer_chart_gets_the_band_edges(case, samples):
    pytest.importorskip("slicer")
    import slicer

    from ADDiffDoseLib.slicer.bands import add_band_series
    from ADDiffDoseLib.slicer.dvh import new_chart

    scene = slicer.vtkMRMLScene()
    chart = new_chart(scene)
    bands = dvh_bands(case, samples)
    out = add_band_series(scene, chart, bands, colors={"PTV70": (1.0, 0.0, 0.0)})
    assert set(out) == set(bands["structures"])
    assert chart.GetNumberOfPlotSeriesNodes() == 2 * len(out)
    table, lower, upper = out["PTV70"]
    assert lower.GetLineStyle() == slicer.vtkMRMLPlotSeriesNode.LineStyleDash and upper.GetYColumnName() == "Upper"
    assert table.GetNumberOfRows() == len(bands["structures"]["PTV70"]["curve"]["dose_gy"])
    assert tuple(lower.GetColor()) == (1.0, 0.0, 0.0)

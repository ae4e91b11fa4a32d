"""HTML report: self-contained, N embedded PNGs, required words; slice orientation letters follow LPS."""

from html.parser import HTMLParser

import numpy as np

from ADDiffDoseLib.geometry import Grid
from ADDiffDoseLib.io.openkbp import openkbp_grid, read_openkbp_npz
from ADDiffDoseLib.metrics.evaluate import evaluate_case_full
from ADDiffDoseLib.metrics.report import oriented_slice, write_report


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.external = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.external.append(tag)


def _marker_volume(grid: Grid, lps_point):
    vol = np.zeros(grid.shape, np.float32)
    vol[tuple(np.round(grid.lps_to_index(lps_point)).astype(int))] = 1
    return vol


def test_orientation_letters_openkbp_grid():
    grid = openkbp_grid((3.0, 3.0, 2.5))  # axes (+y, +x, -z)
    centre = (np.asarray(grid.shape) - 1) / 2
    # a point at the patient's left (+x), anterior (-y), superior (+z) of the centre
    vol = _marker_volume(grid, grid.index_to_lps(centre) + np.array([30.0, -30.0, 30.0]))
    centre_at_marker = np.argwhere(vol)[0]
    img, _, letters = oriented_slice(vol, grid, centre_at_marker, "axial")
    r, c = np.argwhere(img)[0]
    assert letters == ("A", "P", "R", "L")
    assert r < img.shape[0] / 2 and c > img.shape[1] / 2  # anterior = top, left = right side of the image
    img, _, letters = oriented_slice(vol, grid, centre_at_marker, "coronal")
    r, c = np.argwhere(img)[0]
    assert letters[0] == "S" and r < img.shape[0] / 2 and c > img.shape[1] / 2
    img, _, letters = oriented_slice(vol, grid, centre_at_marker, "sagittal")
    r, c = np.argwhere(img)[0]
    assert letters == ("S", "I", "A", "P") and r < img.shape[0] / 2 and c < img.shape[1] / 2


def test_report_is_self_contained(openkbp_npz, tmp_path):
    case = read_openkbp_npz(openkbp_npz)
    pred = np.clip(case.dose_gy * 0.97 + 0.5, 0, None) * case.body_mask
    ev = evaluate_case_full(pred, case, gamma=True)
    out = write_report(tmp_path / "r.html", [(ev, case)], {"model": "test-model", "seed": 7, "steps": 8, "beams": 9})
    text = out.read_text()
    parser = _Imgs()
    parser.feed(text)
    assert len(parser.srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert not parser.external
    for word in ("NOT FOR CLINICAL USE", "test-model", "gamma_3mm3pct", "dose_score", "SpinalCord", "Provenance",
                 'class="fail"', "ADDiffDose 0.1.0"):
        assert word in text, word


def test_metric_table_colours_and_order():
    from ADDiffDoseLib.metrics.report import _metric_table, render_report

    metrics = {"dose_score": 2.0, "gamma_3mm3pct": 96.0, "gamma_2mm2pct": 80.0, "dice_100": 0.5, "dice_20": 0.9,
               "dice_10": 0.95, "constraints": {"pred": [{"passed": True}, {"passed": False}]}}
    table = _metric_table(metrics)
    assert '<td class="pass">96.000 (pass)</td>' in table and '<td class="fail">80.000 (FAIL)</td>' in table
    assert table.index("dice_10<") < table.index("dice_20<") < table.index("dice_100<")
    assert '<td class="fail">1 / 2</td>' in table
    assert render_report([]).count("NOT FOR CLINICAL USE") == 2  # top and bottom, once each


def test_maps_show_ct_and_hide_unevaluated_gamma(openkbp_npz):
    """The gamma map leaves voxels below the cut-off (NaN) transparent over the CT instead of painting them 0."""
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from ADDiffDoseLib.metrics.report import _panel

    case = read_openkbp_npz(openkbp_npz)
    centre = np.argwhere(case.structures["PTV70"].mask).mean(axis=0)
    value = np.where(case.dose_gy > 20, 1.0, np.nan).astype(np.float32)
    fig = Figure()
    axis = fig.subplots()
    layers = {"value": value, "ct": case.ct_hu, "body": case.body_mask, "target": case.structures["PTV70"].mask}
    _panel(axis, "axial", layers, case.grid, centre, "coolwarm", Normalize(0, 2))
    ct_img, layer_img = axis.get_images()
    assert ct_img.get_cmap().name == "gray"
    shown = layer_img.get_array()
    assert np.ma.is_masked(shown) and 0 < shown.mask.mean() < 1  # NaN voxels masked, others shown
    assert ct_img.get_array().shape == shown.shape  # CT and layer cropped alike
    assert shown.shape[0] < case.grid.shape[0]  # cropped to the body
    assert len(axis.collections) >= 1  # target outline drawn


def test_report_names_structures_as_read(breast_dir, tmp_path):
    from ADDiffDoseLib.io import read_case
    from ADDiffDoseLib.metrics.evaluate import evaluate_case_full
    from ADDiffDoseLib.metrics.report import write_report

    case = read_case(breast_dir)
    ev = evaluate_case_full(case.dose_gy * 0.9, case, gamma=False)
    text = write_report(tmp_path / "r.html", [(ev, case)]).read_text()
    assert "<td>Lt Lung</td><td>Lung_L</td>" in text and "<td>BODY</td><td>External</td>" in text

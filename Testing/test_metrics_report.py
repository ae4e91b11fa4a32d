"""HTML report: self-contained, every embedded PNG decodes, sections in order, names in words (no raw keys), the
user's structure names, interval columns; slices follow the radiological convention (patient left on image right)."""

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


class _Text(HTMLParser):
    """The visible text of a page (what a reader sees; attributes and CSS excluded)."""

    def __init__(self):
        super().__init__()
        self.parts, self.headings, self._skip, self._h = [], [], False, None

    def handle_starttag(self, tag, attrs):
        self._skip = tag in ("style", "script")
        self._h = tag if tag in ("h1", "h2", "h3") else None

    def handle_endtag(self, tag):
        self._skip, self._h = False, None

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)
            if self._h:
                self.headings.append(data.strip())


def _decoded_pngs(srcs):
    import base64
    import io

    import matplotlib.image as mpimg

    out = []
    for s in srcs:
        raw = base64.b64decode(s[len("data:image/png;base64,"):], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        out.append(mpimg.imread(io.BytesIO(raw), format="png"))
    return out


SECTIONS = ("Case pt_201", "Dose", "Dose difference (prediction - reference)", "Gamma 3 %/3 mm", "Metrics", "DVH",
            "DVH metrics per structure", "Beams", "Dose constraints", "Provenance")


def test_report_is_self_contained(openkbp_npz, tmp_path):
    case = read_openkbp_npz(openkbp_npz)
    pred = np.clip(case.dose_gy * 0.97 + 0.5, 0, None) * case.body_mask
    ev = evaluate_case_full(pred, case, gamma=True)
    out = write_report(tmp_path / "r.html", [(ev, case)], {"model": "test-model", "seed": 7, "steps": 8, "beams": 9})
    text = out.read_text()
    parser = _Imgs()
    parser.feed(text)
    assert len(parser.srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert not parser.external
    for img in _decoded_pngs(parser.srcs):  # dose, difference, gamma, DVH
        assert img.ndim == 3 and 300 <= img.shape[0] <= 2000 and 300 <= img.shape[1] <= 2000, img.shape
        assert img[..., :3].std() > 0.05  # not blank
    visible = _Text()
    visible.feed(text)
    shown = " ".join(visible.parts)
    assert visible.headings[:1] == ["ADDiffDose evaluation report"]
    positions = [visible.headings.index(h) for h in SECTIONS]
    assert positions == sorted(positions), visible.headings  # the sections in the documented order
    for word in ("NOT FOR CLINICAL USE", "test-model", "Gamma 3 %/3 mm pass rate (%)", "OpenKBP dose score",
                 "Mean dose (Gy)", "GDP-HMM mean absolute dose error (Gy)", "Isodose Dice at 10 % of prescription",
                 "SpinalCord", "LeftParotid", "Margin (prediction)", "Gantry (°)", "320.0", "IMRT", "ADDiffDose 0.1.0",
                 "105 % = 73.5 Gy", "Date"):
        assert word in shown, word
    for raw in ("gdphmm_mae", "gamma_3mm3pct", "dose_score", "dice_mean", "mae_body", "{"):
        assert raw not in shown, raw
    assert 'class="fail"' in text and "@media print" in text and "page-break-inside:avoid" in text
    assert "<dl>" in text[text.index("<h2>Provenance</h2>"):]  # provenance: a definition list at the end
    assert text.index("<h2>Provenance</h2>") > text.index("<h3>Dose constraints</h3>")


def _left_hot_phantom(case):
    """50 Gy on the patient's left (+x in LPS) of the PTV70 centre, inside the body, 0 elsewhere."""
    centre = np.argwhere(case.structures["PTV70"].mask).mean(axis=0)
    x = case.grid.index_to_lps(np.moveaxis(np.indices(case.grid.shape), 0, -1))[..., 0]
    x0 = case.grid.index_to_lps(centre)[0]
    return np.where((x > x0) & case.body_mask, 50.0, 0.0).astype(np.float32), centre


def test_axial_image_shows_patient_left_on_image_right(openkbp_npz):
    """Radiological convention: a dose on the patient's left appears on the right of the axial image, in the
    arrays that are drawn (before PNG encoding) and in what matplotlib was handed."""
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from ADDiffDoseLib.metrics.report_images import _dose_panel, panel_arrays

    case = read_openkbp_npz(openkbp_npz)
    dose, centre = _left_hot_phantom(case)
    for plane in ("axial", "coronal"):
        arrays = panel_arrays({"value": dose, "ct": case.ct_hu, "body": case.body_mask}, case.grid, centre, plane)
        img = arrays["value"]
        half = img.shape[1] // 2
        assert img[:, half + 2:].mean() > 10 * max(img[:, :half - 2].mean(), 0.1), plane
        assert arrays["letters"][2:] == ("R", "L")
        assert arrays["ct"].shape == img.shape
    fig = Figure()
    axis = fig.subplots()
    arrays = panel_arrays({"value": dose, "ct": case.ct_hu, "body": case.body_mask}, case.grid, centre, "axial")
    _dose_panel(axis, arrays, case.grid, centre, "axial", 70.0, Normalize(0, 75), "t")
    ct_img, wash = axis.get_images()
    shown = wash.get_array()
    half = shown.shape[1] // 2
    assert shown[:, :half - 2].mask.all()  # below 10 % of Rx: transparent, the CT shows
    assert not shown[:, half + 2:].mask.all()
    assert len(axis.collections) >= 1  # the 50 % isodose line


def test_report_bands_intervals_and_inside_column(openkbp_npz, tmp_path):
    from ADDiffDoseLib.metrics.intervals import interval_check, structure_metrics

    case = read_openkbp_npz(openkbp_npz)
    pred = case.dose_gy * 0.98
    ev = evaluate_case_full(pred, case, gamma=False)
    bands = {"structures": {}}
    for key, dvh in ev.pred_dvhs.items():
        s = case.structures[key]
        metrics = structure_metrics(dvh, s.role, s.prescription_gy)
        bands["structures"][key] = {
            "metrics": {m: {"lo": v - 0.2, "hi": v + (5.0 if m == "Dmean" else 0.2), "median": v, "family": "target"}
                        for m, v in metrics.items()},  # Dmean wide enough to hold the reference, the rest not
            "curve": {"dose_gy": list(dvh.dose_bins_gy), "lo_pct": list(np.maximum(dvh.volume_pct - 3, 0)),
                      "hi_pct": list(np.minimum(dvh.volume_pct + 3, 100))}}
    ev.bands = bands
    ev.metrics["intervals"] = interval_check(case, bands)
    text = write_report(tmp_path / "r.html", [(ev, case)]).read_text()
    for word in ("90 % interval low", "90 % interval high", "Reference in interval", ">inside<", ">outside<",
                 "band shaded", "Reference DVH metrics inside the predicted 90 % interval (%)",
                 "Gamma was not computed"):
        assert word in text, word
    parser = _Imgs()
    parser.feed(text)
    assert len(parser.srcs) == 3  # dose, difference, DVH (no gamma)
    _decoded_pngs(parser.srcs)


def test_metric_table_colours_and_order():
    from ADDiffDoseLib.metrics.report import _metric_table, render_report

    metrics = {"dose_score": 2.0, "gamma_3mm3pct": 96.0, "gamma_2mm2pct": 80.0, "dice_100": 0.5, "dice_20": 0.9,
               "dice_10": 0.95, "constraints": {"pred": [{"passed": True}, {"passed": False}]}}
    table = _metric_table(metrics)
    assert '<td class="pass">96.00 (pass)</td>' in table and '<td class="fail">80.00 (FAIL)</td>' in table
    assert "Gamma 2 %/2 mm pass rate (%)" in table and "dose_score" not in table
    at = table.index
    assert at("Dice at 10 %") < at("Dice at 20 %") < at("Dice at 100 %")
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
    assert 'Lt Lung <small class="norm">Lung_L</small>' in text and 'BODY <small class="norm">External</small>' in text
    visible = _Text()
    visible.feed(text)
    assert "Lt Lung" in " ".join(visible.parts)


def test_report_without_reference(openkbp_npz, tmp_path):
    """A prediction alone (evaluate_prediction): dose over the CT and the DVH; no difference, gamma, agreement
    metrics or reference columns, and one line says why."""
    from ADDiffDoseLib.metrics.evaluate import evaluate_prediction
    from ADDiffDoseLib.metrics.report import NO_REFERENCE_NOTE

    case = read_openkbp_npz(openkbp_npz)
    pred = case.dose_gy * 0.98
    case = case.replace(dose_gy=None)
    ev = evaluate_prediction(pred, case)
    assert ev.ref_dose_gy is None and not ev.ref_dvhs and ev.metrics["constraints"]["pred"]
    text = write_report(tmp_path / "r.html", [(ev, case)], {"model": "m"}).read_text()
    parser = _Imgs()
    parser.feed(text)
    assert len(parser.srcs) == 2  # dose, DVH
    for img in _decoded_pngs(parser.srcs):
        assert img.ndim == 3 and 300 <= img.shape[0] <= 2000 and img[..., :3].std() > 0.05
    visible = _Text()
    visible.feed(text)
    shown = " ".join(visible.parts)
    assert "Dose difference (prediction - reference)" not in visible.headings
    assert "Gamma 3 %/3 mm" not in visible.headings
    positions = [visible.headings.index(h) for h in SECTIONS if h not in (
        "Dose difference (prediction - reference)", "Gamma 3 %/3 mm")]
    assert positions == sorted(positions), visible.headings
    assert text.count(NO_REFERENCE_NOTE) == 1 and "No reference dose: no agreement metrics" in shown
    for absent in ("OpenKBP dose score", "Gamma 3 %/3 mm pass rate", "Reference in interval", "Margin (reference)",
                   "reference solid", "Reference solid"):
        assert absent not in shown, absent
    for word in ("Mean dose (Gy)", "Margin (prediction)", "Dose constraints met by the prediction", "Prediction.",
                 "105 % = 73.5 Gy", "Beams of the plan", "320.0"):
        assert word in shown, word


def test_beam_table_shows_the_predictions_beams(openkbp_npz, tmp_path):
    """Evaluation.beams (Beam objects or the dicts of our dose npz) replace the reference plan's beams."""
    from ADDiffDoseLib.case import Beam

    case = read_openkbp_npz(openkbp_npz)
    ev = evaluate_case_full(case.dose_gy * 0.98, case, gamma=False)
    ev.beams = (Beam(10.0, 5.0).to_dict(), Beam(130.0, 5.0, energy_mv=10, technique="VMAT"))
    text = write_report(tmp_path / "r.html", [(ev, case)]).read_text()
    table = text[text.index("<h3>Beams</h3>"):text.index("<h3>Dose constraints</h3>")]
    assert "<caption>Beams of the prediction</caption>" in table and table.count("<tr><td>") == 2
    assert "<tr><td>2</td><td>130.0</td><td>5.0</td><td>0.0</td><td>10 MV</td><td>VMAT</td></tr>" in table

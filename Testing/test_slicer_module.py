"""The Slicer module files without Slicer: ADDiffDose.py parses, stays thin, uses only names that exist;
every self.ui.<name> it uses is in the .ui with the right class; packaging files agree."""

from __future__ import annotations

import ast
import importlib
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "ADDiffDose" / "ADDiffDose.py"
UI = REPO / "ADDiffDose" / "Resources" / "UI" / "ADDiffDose.ui"

# what each widget name must be (the code calls class-specific API on them)
EXPECTED_CLASSES = {
    "ctSelector": "qMRMLNodeComboBox", "segmentationSelector": "qMRMLNodeComboBox",
    "outputSelector": "qMRMLNodeComboBox", "plannedDoseSelector": "qMRMLNodeComboBox",
    "rolesTable": "QTableWidget", "refreshRolesButton": "QPushButton", "predictButton": "QPushButton",
    "cancelButton": "QPushButton", "compareButton": "QPushButton", "isodoseButton": "QPushButton",
    "progressBar": "QProgressBar", "logTextEdit": "QPlainTextEdit", "modelComboBox": "QComboBox",
    "compareResultLabel": "QLabel",
}


def _tree():
    return ast.parse(MODULE.read_text(encoding="utf-8"))


def _ui_widgets() -> dict[str, str]:
    root = ET.parse(UI).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def test_module_is_thin_and_parses():
    text = MODULE.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 400
    tree = _tree()
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"ADDiffDose", "ADDiffDoseWidget", "ADDiffDoseLogic", "ADDiffDoseTest", "ADDiffDoseParameterNode"} <= classes
    assert "import numpy" not in text.split("class ADDiffDoseTest")[0]  # no maths in the module itself


def test_ui_root_and_widget_classes():
    widgets = _ui_widgets()
    root = ET.parse(UI).getroot()
    assert root.find("widget").get("class") == "qMRMLWidget"
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text(encoding="utf-8")))
    missing = used - set(widgets)
    assert not missing, f"widgets used by ADDiffDose.py but absent from the .ui: {missing}"
    for name, cls in EXPECTED_CLASSES.items():
        assert widgets.get(name) == cls, (name, widgets.get(name))
    assert "ctkCollapsibleButton" in widgets.values()
    assert widgets["notForClinicalUseLabel"] == "QLabel"
    label = next(w for w in root.iter("widget") if w.get("name") == "notForClinicalUseLabel")
    assert "NOT FOR CLINICAL USE" in "".join(label.itertext())


def test_node_combos_have_node_types_and_scene_connections():
    root = ET.parse(UI).getroot()
    combos = [w for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"]
    connected = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    for w in combos:
        types = [s.text for p in w.findall("property") if p.get("name") == "nodeTypes" for s in p.iter("string")]
        assert types and all(t.startswith("vtkMRML") for t in types), w.get("name")
        assert w.get("name") in connected, w.get("name")


def test_parameter_names_in_ui_exist_in_the_wrapper():
    tree = _tree()
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ADDiffDoseParameterNode")
    fields = {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    root = ET.parse(UI).getroot()
    bound = {p.findtext("string") for p in root.iter("property") if p.get("name") == "SlicerParameterName"}
    assert bound and bound <= fields, bound - fields
    assert {"ctVolume", "segmentation", "gantryAngles", "samples", "seed", "steps", "device"} <= bound


def test_library_names_used_by_the_module_exist():
    tree = _tree()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ADDiffDoseLib"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                    f"{node.module}.{alias.name}"
    text = MODULE.read_text(encoding="utf-8")
    from ADDiffDoseLib.slicer.logic import DoseLogic

    for method in set(re.findall(r"self\.core\.(\w+)", text)):
        assert hasattr(DoseLogic, method), method


def test_packaging_files_agree():
    entry = json.loads((REPO / "ADDiffDose.json").read_text(encoding="utf-8"))
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert entry["category"] == "Radiotherapy" and entry["scm_url"]
    assert set(entry) <= {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                          "build_subdirectory", "enabled", "tier", "dicom_support_rule"}
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    depends = re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', top).group(1).split()
    assert sorted(depends) == sorted(entry["build_dependencies"]) == ["PyTorch", "SlicerRT"]
    module_cmake = (REPO / "ADDiffDose" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule" in module_cmake and "ADDiffDoseLib/*.py" in module_cmake
    for resource in re.findall(r"(Resources/\S+)", module_cmake.split("slicerMacroBuildScriptedModule")[0]):
        path = REPO / "ADDiffDose" / resource.replace("${MODULE_NAME}", "ADDiffDose")
        assert path.is_file(), path
    from PIL import Image

    assert Image.open(REPO / "ADDiffDose" / "Resources" / "Icons" / "ADDiffDose.png").size == (128, 128)


def test_library_slicer_package_is_qt_free_and_never_shadows_slicer():
    for path in (REPO / "ADDiffDoseLib" / "slicer").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
                assert not names & {"qt", "ctk"}, path.name
                assert not any(a.asname == "slicer" and a.name != "slicer" for a in node.names), path.name
            if isinstance(node, ast.ImportFrom):
                assert not any((a.asname or a.name) == "slicer" for a in node.names), (path.name, "binds `slicer`")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer":
                assert node.attr not in ("app", "mrmlScene"), (path.name, node.attr)


def _logic_methods() -> dict[str, ast.FunctionDef]:
    logic = next(n for n in _tree().body if isinstance(n, ast.ClassDef) and n.name == "ADDiffDoseLogic")
    return {f.name: f for f in logic.body if isinstance(f, ast.FunctionDef)}


def test_console_api_of_the_issue_exists():
    """`slicer.util.getModuleLogic('ADDiffDose')` gives ADDiffDoseLogic with: one blocking call taking CT and
    segmentation nodes plus beam settings and returning the dose node, one for a folder of DICOM studies, and
    the RT Dose export."""
    methods = _logic_methods()
    args = {name: [a.arg for a in f.args.args + f.args.kwonlyargs] for name, f in methods.items()}
    assert args["predictDose"][:3] == ["self", "ctNode", "segmentationNode"]
    beam_and_model = {"beams", "energyMV", "technique", "model", "steps", "samples", "seed", "device"}
    assert beam_and_model <= set(args["predictDose"])
    assert args["predictFolder"][:3] == ["self", "inputFolder", "outputFolder"]
    assert args["exportDoseAsRtDose"][:3] == ["self", "doseNode", "path"]


def test_keywords_passed_to_the_library_logic_exist():
    """Every keyword the module passes to self.core.<method>(...) is a parameter of DoseLogic.<method>."""
    import inspect

    from ADDiffDoseLib.slicer.logic import DoseLogic

    for node in ast.walk(_tree()):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "core"):
            params = inspect.signature(getattr(DoseLogic, node.func.attr)).parameters
            accepts_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
            for kw in node.keywords:
                if kw.arg is not None and not accepts_any:
                    assert kw.arg in params, (node.func.attr, kw.arg)


def test_cmake_policy_range_matches_slicers_extension_template():
    """Issue 15.8: the top level asks for CMake like Slicer's extension template (Slicer/Slicer @583e9b37
    ``Utilities/Templates/Extensions/Default/CMakeLists.txt`` line 1: ``cmake_minimum_required(VERSION
    3.28.0...3.28.0)``); the module CMakeLists, like ``Utilities/Templates/Modules/Scripted/CMakeLists.txt``,
    has none of its own (it inherits the top level's)."""
    top = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert top.splitlines()[0] == "cmake_minimum_required(VERSION 3.28.0...3.28.0)"
    module_cmake = (REPO / "ADDiffDose" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "cmake_minimum_required" not in module_cmake

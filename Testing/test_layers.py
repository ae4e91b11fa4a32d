"""Import layering of ADDiffDoseLib, checked by parsing every module with ast (a future violation fails CI).

Imports go DOWN only: errors/geometry -> case, names -> io -> metrics -> model -> cli, slicer.
- errors, geometry, case, names import none of io / metrics / model / cli / slicer;
- io never imports metrics / model / cli / slicer; metrics never imports model / cli / slicer;
- model never imports cli / slicer; cli and slicer never import each other;
- nothing imports Qt (qt, PythonQt, ctk) or touches slicer.app; only ADDiffDoseLib/slicer imports `slicer`;
- no pickle.load / pickle.loads / torch.load, no np.load(..., allow_pickle=True), and pickle itself is imported
  only by the restricted GDP-HMM unpickler (io/gdphmm.py).
Lazy imports inside functions count too (ast.walk sees them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ADDiffDoseLib"
LAYERS = ("io", "metrics", "model", "cli", "slicer")
#: module layer -> sub-packages it must not import.
FORBIDDEN = {
    "base": {"io", "metrics", "model", "cli", "slicer"},
    "io": {"metrics", "model", "cli", "slicer"},
    "metrics": {"model", "cli", "slicer"},
    "model": {"cli", "slicer"},
    "cli": {"slicer"},
    "slicer": {"cli"},
}
QT_MODULES = {"qt", "PythonQt", "ctk", "PyQt5", "PyQt6", "PySide2", "PySide6"}
PICKLE_ALLOWED = {"io/gdphmm.py"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 and rel[0] in LAYERS else "base"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path)[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{a.name}") for a in node.names]  # `from . import metrics`
    return out


def _sub_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ADDiffDoseLib" and parts[1] in LAYERS else None


def _violations(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE).as_posix()
    layer = _layer(path)
    found = []
    for line, module in imported_modules(path):
        sub = _sub_package(module)
        if sub in FORBIDDEN[layer]:
            found.append(f"{rel}:{line} ({layer}) imports {module}")
        top = module.split(".")[0]
        if top in QT_MODULES or module.startswith(("slicer.app", "slicer.qt")):
            found.append(f"{rel}:{line} imports {module} (Qt / the Slicer application)")
        if top == "slicer" and layer != "slicer":
            found.append(f"{rel}:{line} imports slicer outside ADDiffDoseLib/slicer")
        if top in ("pickle", "_pickle", "cPickle", "dill", "joblib") and rel not in PICKLE_ALLOWED:
            found.append(f"{rel}:{line} imports {module}")
    return found


def _unsafe_calls(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "slicer" and node.attr == "app":
                found.append(f"{rel}:{node.lineno} uses slicer.app")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        name = node.func.attr
        if owner in ("pickle", "torch") and name in ("load", "loads"):
            found.append(f"{rel}:{node.lineno} calls {owner}.{name}")
        if owner in ("np", "numpy") and name == "load":
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{rel}:{node.lineno} calls np.load with allow_pickle not False")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_imports_follow_the_layers(path):
    assert not _violations(path)


def test_no_unsafe_loading_or_slicer_app():
    found = [v for p in _modules() for v in _unsafe_calls(p)]
    assert not found, found


def test_checker_catches_violations(tmp_path):
    """The checker itself: each rule fires on a planted file (so the tests above can fail)."""
    global PACKAGE
    saved = PACKAGE
    try:
        PACKAGE = tmp_path / "ADDiffDoseLib"
        (PACKAGE / "io").mkdir(parents=True)
        (PACKAGE / "cli").mkdir()
        bad_io = PACKAGE / "io" / "x.py"
        bad_io.write_text("from ..metrics.dvh import compute_dvh\nimport pickle\n")
        bad_base = PACKAGE / "case.py"
        bad_base.write_text("def f():\n    from .model import unet\n    import qt\n")
        bad_cli = PACKAGE / "cli" / "y.py"
        bad_cli.write_text("from ADDiffDoseLib.slicer import logic\nimport torch\ntorch.load('m.pt')\n"
                           "import numpy as np\nnp.load('a.npz', allow_pickle=True)\n")
        assert any("imports ADDiffDoseLib.metrics" in v for v in _violations(bad_io))
        assert any("pickle" in v for v in _violations(bad_io))
        assert any("ADDiffDoseLib.model" in v for v in _violations(bad_base))
        assert any("Qt" in v for v in _violations(bad_base))
        assert any("ADDiffDoseLib.slicer" in v for v in _violations(bad_cli))
        unsafe = _unsafe_calls(bad_cli)
        assert any("torch.load" in v for v in unsafe) and any("allow_pickle" in v for v in unsafe)
    finally:
        PACKAGE = saved

"""Dose-constraint tables and their evaluation against a DVH.

A table is YAML or JSON: ``{"constraints": [{structure, metric, comparator, limit, source?}, ...]}`` (a bare list
is accepted too). Metrics: ``Dmean``, ``Dmax``, ``Dmin``, ``D<x>cc``, ``D<x>%`` (Gy), ``V<x>Gy%`` (% of the
structure), ``V<x>Gy`` / ``V<x>Gycc`` (cc). D/V follow the definitions in :mod:`.dvh`.
The default table (``ADDiffDoseLib/data/constraints_hn.yaml``) documents its sources (QUANTEC, Marks et al. 2010).
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from pathlib import Path

from ..case import Role
from ..errors import ErrorCode, InputError
from ..names import normalize_structure_name
from .dvh import DVH

DEFAULT_TABLE = Path(__file__).resolve().parents[1] / "data" / "constraints_hn.yaml"
COMPARATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_METRIC = re.compile(r"^(?:(Dmean|Dmax|Dmin)|D(\d+(?:\.\d+)?)(cc|%)|V(\d+(?:\.\d+)?)Gy(%|cc)?)$", re.IGNORECASE)
# side words and organ synonyms, so OpenKBP (LeftParotid), TG-263 (Parotid_L, Bone_Mandible) and DICOM
# spellings (Spinal Cord, Brain Stem, Oesophagus) meet on one key.
_SYNONYMS = {"cord": "spinalcord", "oesophagus": "esophagus", "bonemandible": "mandible", "brainstemprv": "brainstemprv"}


def canonical_name(name: str) -> str:
    """A matching key: the TG-263 name from :func:`ADDiffDoseLib.names.normalize_structure_name` (lower case) for
    known organs/targets/body; otherwise lower-case letters/digits with the side as a suffix ('lens_l')."""
    info = normalize_structure_name(name)
    if info.role != Role.OTHER:
        return info.name.lower()
    s = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    side = ""
    for pattern, tag in ((r"^(left|lt|l)_|_(left|lt|l)$|^left", "l"), (r"^(right|rt|r)_|_(right|rt|r)$|^right", "r")):
        if re.search(pattern, s):
            side = tag
            s = re.sub(pattern, "_", s, count=1)
            break
    base = s.replace("_", "")
    base = _SYNONYMS.get(base, base)
    return f"{base}_{side}" if side else base


@dataclass(frozen=True)
class Constraint:
    structure: str
    metric: str
    comparator: str
    limit: float
    source: str = ""

    def __post_init__(self):
        if self.comparator not in COMPARATORS:
            raise InputError(f"constraint comparator must be one of {list(COMPARATORS)}, got {self.comparator!r}",
                             code=ErrorCode.INVALID_CONFIG)
        if not _METRIC.match(self.metric):
            raise InputError(f"unknown constraint metric {self.metric!r} (Dmean, Dmax, D0.1cc, D95%, V30Gy%, ...)",
                             code=ErrorCode.INVALID_CONFIG)

    @property
    def unit(self) -> str:
        m = _METRIC.match(self.metric)
        if m.group(4):
            return "%" if m.group(5) == "%" else "cc"
        return "Gy"


def metric_value(dvh: DVH, metric: str) -> float:
    """Value of a constraint metric string on `dvh` (Gy, % or cc)."""
    m = _METRIC.match(metric)
    if not m:
        raise InputError(f"unknown metric {metric!r}", code=ErrorCode.INVALID_CONFIG)
    if m.group(1):
        return {"dmean": dvh.mean_gy, "dmax": dvh.max_gy, "dmin": dvh.min_gy}[m.group(1).lower()]
    if m.group(2):
        x = float(m.group(2))
        return dvh.d_cc(x) if m.group(3).lower() == "cc" else dvh.d_percent(x)
    return dvh.v_gy(float(m.group(4)), "%" if m.group(5) == "%" else "cc")


def load_constraints(path: str | Path | None = None) -> list[Constraint]:
    """Read a YAML/JSON constraint table; None = the default H&N table."""
    path = Path(path) if path else DEFAULT_TABLE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read constraint table: {exc.strerror}", path=path, code=ErrorCode.FILE_NOT_FOUND) from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml/json syntax errors of any kind
        raise InputError(f"constraint table is not valid YAML/JSON: {exc}", path=path, code=ErrorCode.INVALID_CONFIG) from exc
    rows = data.get("constraints") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise InputError("constraint table needs a list under 'constraints'", path=path, code=ErrorCode.INVALID_CONFIG)
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(Constraint(str(row["structure"]), str(row["metric"]), str(row["comparator"]),
                                  float(row["limit"]), str(row.get("source", ""))))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"constraint {i + 1}: needs structure, metric, comparator, limit ({exc})", path=path,
                             code=ErrorCode.INVALID_CONFIG) from exc
        except InputError as exc:
            raise InputError(exc.message, path=path, code=exc.code) from exc
    return out


def find_structure(name: str, dvhs: dict[str, DVH], original_names: dict[str, str] | None = None) -> str | None:
    """Key of `dvhs` whose name (or original name) matches `name` canonically, else None."""
    want = canonical_name(name)
    original_names = original_names or {}
    for key in dvhs:
        if canonical_name(key) == want or canonical_name(original_names.get(key, key)) == want:
            return key
    return None


def check_constraints(dvhs: dict[str, DVH], constraints: list[Constraint] | None = None,
                      original_names: dict[str, str] | None = None) -> list[dict]:
    """Evaluate each constraint whose structure exists. Row: structure (matched key), metric, comparator, limit,
    unit, value, passed, margin (limit - value for '<'/'<=', value - limit for '>'/'>='; > 0 = room left), source."""
    constraints = load_constraints() if constraints is None else constraints
    rows = []
    for c in constraints:
        key = find_structure(c.structure, dvhs, original_names)
        if key is None:
            continue
        value = float(metric_value(dvhs[key], c.metric))
        passed = bool(COMPARATORS[c.comparator](value, c.limit))
        margin = c.limit - value if c.comparator.startswith("<") else value - c.limit
        rows.append({"structure": key, "constraint_structure": c.structure, "metric": c.metric,
                     "comparator": c.comparator, "limit": c.limit, "unit": c.unit, "value": value,
                     "passed": passed, "margin": margin, "source": c.source})
    return rows

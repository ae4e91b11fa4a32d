"""Structure names: map what clinics and data sets call a structure to one TG-263 style name and a role.

* Organs get their TG-263 name (``SpinalCord``, ``Brainstem``, ``Parotid_L``, ``Bone_Mandible``, ...).
* ``PTV_70``, ``PTV70``, ``PTV 70Gy``, ``PTV_7000`` (cGy) become target ``PTV70`` with 70 Gy.
* The body outline (``BODY``, ``External``, ``Skin``, ``Outline``) becomes ``External`` (role EXTERNAL).
* PRVs, rings, optimisation and boolean (``A-B``) structures keep their name with role OTHER: a
  ``SpinalCord_05`` is *not* the spinal cord.
* Unknown names keep their name with role OTHER; a user mapping file can say otherwise.

OpenKBP's names map through :data:`OPENKBP_TO_TG263`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .case import Role
from .errors import ErrorCode, InputError

# OpenKBP structure name -> TG-263 name (targets keep their names).
OPENKBP_TO_TG263: dict[str, str] = {
    "Brainstem": "Brainstem",
    "SpinalCord": "SpinalCord",
    "RightParotid": "Parotid_R",
    "LeftParotid": "Parotid_L",
    "Esophagus": "Esophagus",
    "Larynx": "Larynx",
    "Mandible": "Bone_Mandible",
    "PTV56": "PTV56",
    "PTV63": "PTV63",
    "PTV70": "PTV70",
}
TG263_TO_OPENKBP: dict[str, str] = {v: k for k, v in OPENKBP_TO_TG263.items()}

# Organ aliases: key = lower-case letters of the name with laterality removed.
# value = (canonical stem, lateral): lateral stems get "_L"/"_R" appended.
_ORGANS: dict[str, tuple[str, bool]] = {}


def _organ(canonical: str, *aliases: str, lateral: bool = False) -> None:
    for alias in (canonical, *aliases):
        _ORGANS[re.sub(r"[^a-z]", "", alias.lower())] = (canonical, lateral)


_organ("SpinalCord", "Cord", "Spinal Cord", "SpineCord", "Spinal_Cord", "Medulla Spinalis")
_organ("Brainstem", "Brain Stem", "Stem")
_organ("Parotid", "Parotid Gland", "Glnd Parotid", lateral=True)
_organ("Parotids", "Parotid Glands", "Both Parotids", "Parotid Total")
_organ("Esophagus", "Oesophagus", "Esoph", "Esophagus Cervical")
_organ("Larynx", "Glottis Larynx")
_organ("Bone_Mandible", "Mandible", "Jaw", "Mandibula")
_organ("Glnd_Submand", "Submandibular", "Submand", "Submandibular Gland", lateral=True)
_organ("Cavity_Oral", "Oral Cavity", "OCavity", "Oral_Cavity")
_organ("Brain")
_organ("Lung", lateral=True)
_organ("Lungs", "Lung Total", "Total Lung", "Lungs Total", "Both Lungs")
_organ("Heart")
_organ("Eye", "Globe", lateral=True)
_organ("Eyes")
_organ("Lens", lateral=True)
_organ("OpticNrv", "Optic Nerve", "OpticNerve", "ON", "Optic Nrv", "Opt Nerve", "Opt Nrv", "OpticN", lateral=True)
_organ("OpticChiasm", "Chiasm", "Chiasim", "Optic Chiasm")
_organ("Cochlea", lateral=True)
_organ("Trachea")
_organ("Glnd_Thyroid", "Thyroid", "Thyroid Gland")
_organ("Musc_Constrict", "Pharyngeal Constrictors", "PharConst", "Constrictors", "Pharynx")
_organ("Lips", "Lip")
_organ("BrachialPlex", "Brachial Plexus", "BrachialPlexus", lateral=True)
_organ("Liver")
_organ("Kidney", lateral=True)
_organ("Bladder")
_organ("Rectum")
_organ("Femur_Head", "Femoral Head", "FemoralHead", "Femur Head", "Femoral Hd", "Fem Head", "Femur Hd", "Fem Hd",
       "Hip", lateral=True)
_organ("Breast", lateral=True)
_organ("Stomach")
_organ("Bowel", "Bowel Bag", "BowelBag", "Small Bowel", "SmallBowel", "Bowel_Small")
_organ("Spleen")
_organ("Duodenum")

_EXTERNAL = {"body", "external", "skin", "outline", "ext", "bodycontour", "patient", "patientoutline",
             "externalcontour", "bodyoutline"}
_LEFT = {"l", "lt", "left", "lft"}
_RIGHT = {"r", "rt", "right", "rgt"}
# words marking a helper/derived structure (checked per token, lower case)
_HELPER_TOKENS = {"prv", "ring", "opt", "optim", "avoid", "avd", "dose", "hot", "cold", "dummy", "help", "helper",
                  "temp", "tmp", "exp", "expand", "mm", "crop", "cropped", "minus", "plus", "shell", "wall",
                  "control", "block", "bolus", "couch", "table", "all", "sum", "union", "eval", "ptvopt", "derived",
                  "nt", "normaltissue", "avoidance", "spacer", "override"}
# a dose-fall-off ring or a margin named by its distance: D2CM, D1.5cm, PTV_5mm, Cord 3mm
_DISTANCE_RE = re.compile(r"(?<![a-z])d?\d+(?:\.\d+)?\s*(?:cm|mm)(?![a-z])", re.IGNORECASE)
# a boolean structure: letters (or a number) on both sides of '-' / '+' (Parotids-PTV, PTV70-Cord), not PTV-70
_BOOLEAN_RE = re.compile(r"[A-Za-z0-9]\s*[-+]\s*[A-Za-z]")
#: Shortest truncated name matched as a prefix of one organ alias (Eclipse cuts names at 16 characters).
_MIN_TRUNCATED = 6
_TARGET_RE = re.compile(
    r"^(?P<kind>PTV)[\s_\-]*(?P<num>\d+(?:[.,]\d+)?)?[\s_]*(?P<unit>c?gy)?$", re.IGNORECASE)
_LEVEL_TARGET_RE = re.compile(r"^PTV[\s_\-]*(high|hi|mid|middle|int|low|lo|boost|primary|nodes?|[a-e])$", re.IGNORECASE)
_TOKEN_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


@dataclass(frozen=True)
class NameInfo:
    """name: normalized name; role: Role; prescription_gy: total Gy for targets whose name gives it."""

    name: str
    role: Role
    prescription_gy: float | None = None


def _tokens(name: str) -> list[str]:
    return _TOKEN_RE.findall(name)


def _parse_target(name: str) -> NameInfo | None:
    m = _TARGET_RE.match(name.strip())
    if not m:
        if _LEVEL_TARGET_RE.match(name.strip()):
            return NameInfo(name.strip(), Role.TARGET, None)  # PTV_High: a target, dose unknown
        return None
    num, unit = m.group("num"), (m.group("unit") or "").lower()
    if num is None:
        return NameInfo("PTV", Role.TARGET, None)
    value = float(num.replace(",", "."))
    if unit == "cgy" or (unit == "" and value > 200):
        value /= 100.0  # PTV_7000 is in cGy
    elif unit == "" and value < 10:
        return NameInfo(name.strip(), Role.TARGET, None)  # PTV1, PTV2: an index, not a dose
    return NameInfo(f"PTV{value:g}", Role.TARGET, value)


def _is_helper(name: str, tokens: list[str]) -> bool:
    if _BOOLEAN_RE.search(name) or _DISTANCE_RE.search(name):  # Parotids-PTV, D2CM, Cord 5mm
        return True
    lower = [t.lower() for t in tokens]
    lower = [t for i, t in enumerate(lower) if not (t == "opt" and lower[i + 1:i + 2] and lower[i + 1][0] == "n")]
    if re.match(r"^z[\s_\-.]", name, re.IGNORECASE) or name.lower().startswith(("x_", "zz")):
        return True
    if any(t in _HELPER_TOKENS or t.startswith(("prv", "ring")) for t in lower):
        return True
    return "prv" in name.lower() or "ring" in name.lower()


def _lookup_organ(tokens: list[str]) -> NameInfo | None:
    lower = [t.lower() for t in tokens]
    side = None
    rest = []
    for i, t in enumerate(lower):
        # a side word only counts at the start or the end (Lens_L, L Parotid), not inside a name
        at_edge = i == 0 or i == len(lower) - 1
        if at_edge and t in _LEFT and side is None and len(lower) > 1:
            side = "L"
        elif at_edge and t in _RIGHT and side is None and len(lower) > 1:
            side = "R"
        else:
            rest.append(t)
    key = "".join(rest)
    if key not in _ORGANS:
        # glued forms: LEFTPAROTID, PAROTIDLEFT, ParotidLt
        for word, s in [(w, "L") for w in ("left", "lt")] + [(w, "R") for w in ("right", "rt")]:
            if side is None and key.startswith(word) and key[len(word):] in _ORGANS:
                key, side = key[len(word):], s
                break
            if side is None and key.endswith(word) and key[: -len(word)] in _ORGANS:
                key, side = key[: -len(word)], s
                break
    if key not in _ORGANS and len(key) >= _MIN_TRUNCATED:  # truncated: 'Right Optic Nerv' (16 characters)
        found = {v for alias, v in _ORGANS.items() if alias.startswith(key)}
        if len(found) == 1:
            key = next(alias for alias, v in _ORGANS.items() if v in found and alias.startswith(key))
    if key not in _ORGANS:
        return None
    canonical, lateral = _ORGANS[key]
    if lateral and side:
        return NameInfo(f"{canonical}_{side}", Role.OAR)
    if lateral and not side:
        return None  # "Parotid" without a side is ambiguous
    if not lateral and side:
        return None  # "Brainstem_L" is not the brainstem
    return NameInfo(canonical, Role.OAR)


def _from_mapping(name: str, mapping: Mapping) -> NameInfo | None:
    entry = mapping.get(name)
    if entry is None:
        lowered = {str(k).lower(): v for k, v in mapping.items()}
        entry = lowered.get(name.lower())
    if entry is None:
        return None
    if isinstance(entry, str):
        guess = normalize_structure_name(entry)
        # a name we know (PTV_66 -> PTV66) is normalized; one we don't is the user's organ name
        return guess if guess.role != Role.OTHER else NameInfo(entry, Role.OAR, None)
    if isinstance(entry, Mapping):
        target_name = str(entry.get("name", name))
        guess = normalize_structure_name(target_name)
        role = Role(entry["role"]) if "role" in entry else (guess.role if guess.role != Role.OTHER else Role.OAR)
        rx = entry.get("prescription_gy", guess.prescription_gy)
        return NameInfo(target_name, role, float(rx) if rx is not None else None)
    raise InputError(f"name mapping entry for {name!r} must be a name or an object, got {entry!r}",
                     code=ErrorCode.INVALID_CONFIG)


def is_derived_structure(name: str) -> bool:
    """A ring, PRV, margin, optimisation or boolean structure (D2CM, z_Ring, Cord_PRV5, Lung-PTV, PTV_5mm): never
    a target or an organ, whatever its RTROIInterpretedType says. Targets named with a dose (PTV-70) are not."""
    name = str(name).strip()
    return _parse_target(name) is None and _is_helper(name, _tokens(name))


def normalize_structure_name(name: str, mapping: Mapping | None = None) -> NameInfo:
    """Normalized name, role and (for targets) prescription in Gy read from the name.

    `mapping` (original -> canonical name or {name, role, prescription_gy}) overrides the rules;
    keys match exactly first, then case-insensitively.
    """
    name = str(name).strip()
    if mapping:
        hit = _from_mapping(name, mapping)
        if hit is not None:
            return hit
    if name in OPENKBP_TO_TG263:
        name = OPENKBP_TO_TG263[name]
    target = _parse_target(name)
    if target is not None:
        return target
    tokens = _tokens(name)
    if re.sub(r"[^a-z]", "", name.lower()) in _EXTERNAL:
        return NameInfo("External", Role.EXTERNAL)
    if not tokens or _is_helper(name, tokens):
        return NameInfo(name, Role.OTHER)
    if any(t.isdigit() for t in tokens):  # SpinalCord_05, Cord5: expansions, not the organ
        return NameInfo(name, Role.OTHER)
    organ = _lookup_organ(tokens)
    return organ if organ is not None else NameInfo(name, Role.OTHER)


def assign_names(original_names, mapping: Mapping | None = None) -> tuple[list[NameInfo], list[str]]:
    """Normalize several names at once; a second structure with the same normalized name keeps its
    original name with role OTHER. Returns the infos (in input order) and warnings."""
    infos, warnings, seen = [], [], set()
    for original in original_names:
        info = normalize_structure_name(original, mapping)
        if info.name in seen:
            warnings.append(f"structure {original!r} also maps to {info.name!r}; kept as {original!r} (role other)")
            info = NameInfo(str(original), Role.OTHER, None)
            k = 2
            while info.name in seen:
                info = NameInfo(f"{original}_{k}", Role.OTHER, None)
                k += 1
        seen.add(info.name)
        infos.append(info)
    return infos, warnings


def load_name_mapping(path: str | Path) -> dict:
    """Read a user mapping file (JSON or YAML): {original: canonical name or {name, role, prescription_gy}}."""
    path = Path(path)
    if not path.is_file():
        raise InputError("name mapping file not found", path=path, code=ErrorCode.FILE_NOT_FOUND)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json/yaml syntax errors
        raise InputError(f"cannot parse name mapping: {exc}", path=path, code=ErrorCode.INVALID_CONFIG) from exc
    if not isinstance(data, dict):
        raise InputError("name mapping must be an object {original: canonical}", path=path,
                         code=ErrorCode.INVALID_CONFIG)
    for key, value in data.items():
        if isinstance(value, dict):
            if "role" in value and value["role"] not in {r.value for r in Role}:
                raise InputError(f"mapping for {key!r}: role must be one of {[r.value for r in Role]}", path=path,
                                 code=ErrorCode.INVALID_CONFIG)
        elif not isinstance(value, str):
            raise InputError(f"mapping for {key!r} must be a name or an object", path=path,
                             code=ErrorCode.INVALID_CONFIG)
    return data


_MIRROR_PATTERNS = [
    (re.compile(r"(?<=[_\s])L(?=$|[_\s])"), re.compile(r"(?<=[_\s])R(?=$|[_\s])"), "L", "R"),
    (re.compile(r"^L(?=[_\s])"), re.compile(r"^R(?=[_\s])"), "L", "R"),
    (re.compile(r"Left"), re.compile(r"Right"), "Left", "Right"),
    (re.compile(r"left"), re.compile(r"right"), "left", "right"),
    (re.compile(r"LEFT"), re.compile(r"RIGHT"), "LEFT", "RIGHT"),
    (re.compile(r"(?<![A-Za-z])Lt(?![a-z])"), re.compile(r"(?<![A-Za-z])Rt(?![a-z])"), "Lt", "Rt"),
]


def mirror_structure_name(name: str) -> str:
    """Swap left and right in a name (Parotid_L <-> Parotid_R, LeftParotid <-> RightParotid).

    Used by left-right flip augmentation; names without a side come back unchanged.
    """
    for left_re, right_re, left, right in _MIRROR_PATTERNS:
        if left_re.search(name) or right_re.search(name):
            swapped = left_re.sub("\0R\0", name)
            swapped = right_re.sub(left, swapped)
            return swapped.replace("\0R\0", right)
    return name

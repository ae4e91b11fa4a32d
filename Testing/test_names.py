"""Structure-name normalization: TG-263 names, targets with prescriptions, helpers kept apart."""

import json

import pytest

from ADDiffDoseLib.case import Role
from ADDiffDoseLib.errors import ErrorCode, InputError
from ADDiffDoseLib.names import (OPENKBP_TO_TG263, assign_names, load_name_mapping, mirror_structure_name,
                                 normalize_structure_name)

T, O, E, X = Role.TARGET, Role.OAR, Role.EXTERNAL, Role.OTHER

TABLE = [
    # organs and aliases
    ("Cord", "SpinalCord", O, None), ("Spinal Cord", "SpinalCord", O, None), ("SpinalCord", "SpinalCord", O, None),
    ("spinal_cord", "SpinalCord", O, None), ("SPINAL CORD", "SpinalCord", O, None),
    ("Brainstem", "Brainstem", O, None), ("BrainStem", "Brainstem", O, None), ("Brain Stem", "Brainstem", O, None),
    ("Parotid_L", "Parotid_L", O, None), ("L Parotid", "Parotid_L", O, None), ("LeftParotid", "Parotid_L", O, None),
    ("Lt Parotid", "Parotid_L", O, None), ("Parotid Left", "Parotid_L", O, None), ("PAROTID_LT", "Parotid_L", O, None),
    ("RightParotid", "Parotid_R", O, None), ("Parotid_R", "Parotid_R", O, None), ("R Parotid", "Parotid_R", O, None),
    ("Esophagus", "Esophagus", O, None), ("Oesophagus", "Esophagus", O, None), ("Larynx", "Larynx", O, None),
    ("Mandible", "Bone_Mandible", O, None), ("Bone_Mandible", "Bone_Mandible", O, None),
    ("OpticNerve_L", "OpticNrv_L", O, None), ("Chiasm", "OpticChiasm", O, None), ("Lung_R", "Lung_R", O, None),
    ("Lungs", "Lungs", O, None), ("Heart", "Heart", O, None), ("Glnd_Submand_R", "Glnd_Submand_R", O, None),
    # targets
    ("PTV_70", "PTV70", T, 70.0), ("PTV70", "PTV70", T, 70.0), ("PTV 70Gy", "PTV70", T, 70.0),
    ("PTV70_Gy", "PTV70", T, 70.0), ("PTV_7000", "PTV70", T, 70.0), ("PTV 5600cGy", "PTV56", T, 56.0),
    ("PTV_59.4", "PTV59.4", T, 59.4), ("ptv63", "PTV63", T, 63.0), ("PTV", "PTV", T, None),
    ("PTV_High", "PTV_High", T, None), ("PTV1", "PTV1", T, None),
    # body
    ("BODY", "External", E, None), ("External", "External", E, None), ("Skin", "External", E, None),
    ("Outline", "External", E, None),
    # helpers and derived structures keep their names, role other
    ("SpinalCord_05", "SpinalCord_05", X, None), ("Cord_PRV5", "Cord_PRV5", X, None),
    ("SpinalCord_PRV", "SpinalCord_PRV", X, None), ("Parotids-PTV", "Parotids-PTV", X, None),
    ("z_ring", "z_ring", X, None), ("opt_PTV70", "opt_PTV70", X, None), ("ring5", "ring5", X, None),
    ("RingPTV70", "RingPTV70", X, None), ("PTV70OPT", "PTV70OPT", X, None), ("BrainStem_03", "BrainStem_03", X, None),
    ("PTV56-PTV63", "PTV56-PTV63", X, None), ("Brainstem+3mm", "Brainstem+3mm", X, None),
    ("Parotid", "Parotid", X, None), ("Bolus", "Bolus", X, None), ("Core", "Core", X, None),
]


@pytest.mark.parametrize("original,name,role,rx", TABLE)
def test_name_table(original, name, role, rx):
    info = normalize_structure_name(original)
    assert (info.name, info.role, info.prescription_gy) == (name, role, rx)


def test_openkbp_names_all_map():
    for okbp, tg263 in OPENKBP_TO_TG263.items():
        assert normalize_structure_name(okbp).name == tg263
        assert normalize_structure_name(okbp).role != Role.OTHER


def test_mapping_overrides(tmp_path):
    p = tmp_path / "map.json"
    p.write_text(json.dumps({"Tumour": "PTV_66", "MyGland": "Gland_X",
                             "SpinalCord_05": {"name": "SpinalCord", "role": "oar"},
                             "Boost": {"name": "Boost", "role": "target", "prescription_gy": 66}}))
    m = load_name_mapping(p)
    assert normalize_structure_name("Tumour", m) == normalize_structure_name("PTV66")
    assert normalize_structure_name("mygland", m).role == Role.OAR  # case-insensitive key; user said organ
    assert normalize_structure_name("SpinalCord_05", m).name == "SpinalCord"
    boost = normalize_structure_name("Boost", m)
    assert (boost.role, boost.prescription_gy) == (Role.TARGET, 66.0)
    y = tmp_path / "map.yaml"
    y.write_text("Tumour: PTV_60\n")
    assert normalize_structure_name("Tumour", load_name_mapping(y)).prescription_gy == 60.0


def test_mapping_file_errors(tmp_path):
    with pytest.raises(InputError) as e:
        load_name_mapping(tmp_path / "none.json")
    assert e.value.code == ErrorCode.FILE_NOT_FOUND
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError) as e:
        load_name_mapping(bad)
    assert e.value.code == ErrorCode.INVALID_CONFIG
    bad.write_text(json.dumps({"A": {"role": "organ"}}))
    with pytest.raises(InputError) as e:
        load_name_mapping(bad)
    assert e.value.code == ErrorCode.INVALID_CONFIG


def test_duplicates_keep_original_name():
    infos, warnings = assign_names(["Cord", "Spinal_Cord", "PTV70"])
    assert (infos[0].name, infos[0].role) == ("SpinalCord", Role.OAR)
    assert (infos[1].name, infos[1].role) == ("Spinal_Cord", Role.OTHER)  # second cord kept apart
    assert infos[2].name == "PTV70" and len(warnings) == 1


@pytest.mark.parametrize("name,mirrored", [
    ("Parotid_L", "Parotid_R"), ("Parotid_R", "Parotid_L"), ("LeftParotid", "RightParotid"),
    ("RightParotid", "LeftParotid"), ("Lt Parotid", "Rt Parotid"), ("L Parotid", "R Parotid"),
    ("Femur_Head_L", "Femur_Head_R"), ("Glnd_Submand_R", "Glnd_Submand_L"), ("Brainstem", "Brainstem"),
    ("PTV70", "PTV70"), ("Larynx", "Larynx"),
])
def test_mirror(name, mirrored):
    assert mirror_structure_name(name) == mirrored
    assert mirror_structure_name(mirror_structure_name(name)) == name


# Spellings seen in exports of Eclipse, RayStation, Monaco, Pinnacle and GammaPlan (laterality written Lt/Rt,
# L_/_R, Left/Right, before or after; abbreviations; case; spaces; Eclipse's 16-character truncation).
TPS_SPELLINGS = [
    ("Left Eye", "Eye_L", O), ("Rt. Eye", "Eye_R", O), ("EYE_R", "Eye_R", O), ("L_Eye", "Eye_L", O),
    ("Lt Lung", "Lung_L", O), ("Lung Lt", "Lung_L", O), ("L_Lung", "Lung_L", O), ("LungL", "Lung_L", O),
    ("Rt Lung", "Lung_R", O), ("LUNG_R", "Lung_R", O), ("Total Lung", "Lungs", O), ("Lung Total", "Lungs", O),
    ("Left Optic Nerve", "OpticNrv_L", O), ("Right Optic Nerv", "OpticNrv_R", O), ("Optic Nerv L", "OpticNrv_L", O),
    ("Lt Opt Nerve", "OpticNrv_L", O), ("Rt Opt Nrv", "OpticNrv_R", O), ("ON_R", "OpticNrv_R", O),
    ("Lt Femoral Head", "Femur_Head_L", O), ("Rt Femoral Hd", "Femur_Head_R", O), ("Lt Fem Head", "Femur_Head_L", O),
    ("Femur_Head_R", "Femur_Head_R", O), ("Left Submandibul", "Glnd_Submand_L", O), ("Brainst", "Brainstem", O),
    ("L. Parotid", "Parotid_L", O), ("Rt Parotid Gland", "Parotid_R", O), ("Parotid (R)", "Parotid_R", O),
    ("Lt Brachial Plex", "BrachialPlex_L", O), ("Lt Cochlea", "Cochlea_L", O), ("Lens R", "Lens_R", O),
    ("Rt Kidney", "Kidney_R", O), ("Esoph", "Esophagus", O), ("CORD", "SpinalCord", O),
    ("BODY", "External", E), ("Body", "External", E), ("EXTERNAL", "External", E), ("Skin", "External", E),
]
# Rings, PRVs, margins and derived structures: never targets or organs, whatever their DICOM type says.
DERIVED = ["D2CM PTV", "D2CM", "D1.5cm", "PTV_5mm", "Cord 5mm", "z_Ring", "z_PTV_opt", "ring_PTV", "PTV_Ring",
           "Ring PTV", "Lung-PTV", "Lungs-GTV", "Parotid_L-PTV", "PTV70-Cord", "Cord+5mm", "Cord_PRV5", "PRV Cord",
           "Brainstem_PRV", "BrainStem PRV 3mm"]


@pytest.mark.parametrize("original,name,role", TPS_SPELLINGS)
def test_tps_spellings(original, name, role):
    info = normalize_structure_name(original)
    assert (info.name, info.role) == (name, role)


@pytest.mark.parametrize("original", DERIVED)
def test_rings_prvs_and_derived_are_never_targets_or_organs(original):
    from ADDiffDoseLib.io.dicom.rtstruct import role_of
    from ADDiffDoseLib.names import is_derived_structure

    assert is_derived_structure(original)
    assert normalize_structure_name(original) == normalize_structure_name(original).__class__(original, X, None)
    for dicom_type in ("PTV", "CTV", "ORGAN", "AVOIDANCE", "CONTROL", ""):
        assert role_of(original, dicom_type) == X


@pytest.mark.parametrize("original", ["PTV-70", "PTV_7000", "GTV-1", "CTV_54", "Tumor Bed"])
def test_targets_are_not_derived(original):
    from ADDiffDoseLib.io.dicom.rtstruct import role_of
    from ADDiffDoseLib.names import is_derived_structure

    assert not is_derived_structure(original) and role_of(original, "PTV") == T

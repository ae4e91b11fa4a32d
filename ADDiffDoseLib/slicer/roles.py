"""The per-segment role/prescription table the user checks before predicting.

One :class:`RoleRow` per segment: the structure name the model sees (TG-263 style, from
:func:`ADDiffDoseLib.names.normalize_structure_name`), its role and, for targets, the prescription.
Segment tags written by ADDiffDose (or a previous edit) win over the name rules. The table
round-trips through JSON so the module's parameter node can hold it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from ..case import Role
from ..errors import ErrorCode, InputError
from ..names import normalize_structure_name
from . import nodes

ROLE_CHOICES = tuple(r.value for r in Role) + ("ignore",)  # "ignore": leave the segment out


@dataclass(frozen=True)
class RoleRow:
    """segment_id/segment_name: as in the segmentation; structure: name sent to the model;
    role: one of ROLE_CHOICES; prescription_gy: total Gy for targets, else None."""

    segment_id: str
    segment_name: str
    structure: str
    role: str
    prescription_gy: float | None = None

    def __post_init__(self):
        if self.role not in ROLE_CHOICES:
            raise InputError(f"segment {self.segment_name!r}: role must be one of {ROLE_CHOICES}, got {self.role!r}",
                             code=ErrorCode.INVALID_VALUE)
        if self.prescription_gy is not None:
            rx = float(self.prescription_gy)
            if not rx > 0:
                raise InputError(f"segment {self.segment_name!r}: prescription must be > 0 Gy, got {rx}",
                                 code=ErrorCode.INVALID_VALUE)
            object.__setattr__(self, "prescription_gy", rx)

    @property
    def used(self) -> bool:
        return self.role != "ignore"


def _row_from_tags(sid: str, name: str, tags: dict[str, str]) -> RoleRow | None:
    role = tags.get(nodes.SEGMENT_ROLE_TAG, "")
    if not role:
        return None
    rx = tags.get(nodes.SEGMENT_RX_TAG, "")
    return RoleRow(sid, name, tags.get(nodes.SEGMENT_STRUCTURE_TAG) or name, role, float(rx) if rx else None)


def default_roles(seg_node, mapping: dict | None = None) -> list[RoleRow]:
    """A row per segment: from its ADDiffDose tags when present, else from the name rules."""
    segmentation = seg_node.GetSegmentation()
    rows = []
    for sid in nodes.segment_ids(seg_node):
        name = segmentation.GetSegment(sid).GetName()
        row = _row_from_tags(sid, name, nodes.read_segment_tags(seg_node, sid))
        if row is None:
            info = normalize_structure_name(name, mapping)
            row = RoleRow(sid, name, info.name, info.role.value, info.prescription_gy)
        rows.append(row)
    return _unique_structures(rows)


def _unique_structures(rows: list[RoleRow]) -> list[RoleRow]:
    """Two segments normalizing to one name: the later ones keep their segment name."""
    seen: set[str] = set()
    out = []
    for row in rows:
        if row.used and row.structure in seen:
            row = replace(row, structure=row.segment_name if row.segment_name not in seen else f"{row.segment_name}_{row.segment_id}")
        seen.add(row.structure)
        out.append(row)
    return out


def edit_row(rows: list[RoleRow], segment_id: str, **changes) -> list[RoleRow]:
    """A copy of `rows` with one row changed (role, structure, prescription_gy)."""
    if not any(r.segment_id == segment_id for r in rows):
        raise InputError(f"no segment {segment_id!r} in the role table", code=ErrorCode.MISSING_FIELD)
    return [replace(r, **changes) if r.segment_id == segment_id else r for r in rows]


def roles_to_json(rows: list[RoleRow]) -> str:
    return json.dumps([asdict(r) for r in rows])


def roles_from_json(text: str) -> list[RoleRow]:
    if not text:
        return []
    try:
        return [RoleRow(**d) for d in json.loads(text)]
    except (TypeError, ValueError) as exc:
        raise InputError(f"role table is not valid: {exc}", code=ErrorCode.INVALID_VALUE) from exc


def structures_spec(rows: list[RoleRow]) -> dict[str, tuple[str, Role, float | None]]:
    """segment ID -> (structure, Role, Rx) for :func:`nodes.case_from_nodes`; ignored rows left out."""
    return {r.segment_id: (r.structure, Role(r.role), r.prescription_gy if r.role == Role.TARGET.value else None)
            for r in rows if r.used}


def write_roles_to_segments(seg_node, rows: list[RoleRow]) -> None:
    """Keep the user's table with the segmentation (segment tags, saved in the scene)."""
    for row in rows:
        if row.used and seg_node.GetSegmentation().GetSegment(row.segment_id) is not None:
            nodes.tag_segment(seg_node, row.segment_id, row.structure, row.role, row.prescription_gy)


def check_roles(rows: list[RoleRow], seg_label: str = "segmentation") -> None:
    """Refuse a table without a target with a prescription (E203)."""
    targets = [r for r in rows if r.role == Role.TARGET.value]
    if not targets:
        raise InputError(f"{seg_label} has no target segment: mark a PTV as 'target' and give its prescription",
                         code=ErrorCode.NO_TARGET)
    if not any(r.prescription_gy for r in targets):
        raise InputError(f"{seg_label}: no target has a prescription (Gy); enter one in the role table",
                         code=ErrorCode.NO_TARGET)


def normalized_names(seg_node) -> dict[str, str]:
    """segment ID -> the structure name the model sees (segment tag, else the name rules). Tables show it only as
    a second column beside the user's own segment name (issue 15.10)."""
    return {r.segment_id: r.structure for r in default_roles(seg_node)}

"""Combine trained checkpoints of one family into one ensemble model file (ADDiffDoseLib/model/ensemble.py).

    python scripts/make_ensemble.py runs/a/best.safetensors runs/b/best.safetensors -o /tmp/ens

Each member keeps its own config but averages the left-right flip (the release default) and drops its own
post-prediction priors: an
ensemble's coverage and OAR priors are fitted on its averaged dose afterwards (fit_coverage_prior.py,
fit_oar_prior.py with --write on the ensemble file). The record lists the members' sources and records.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ADDiffDoseLib.errors import ADDiffDoseError
from ADDiffDoseLib.model.ensemble import DoseEnsemble
from ADDiffDoseLib.model.weights import load_checkpoint, save_checkpoint

#: Member settings: flip averaging on; the priors belong to the ensemble (fitted on its mean), so off here.
MEMBER_OVERRIDES = {"tta_flip": True, "coverage_strength": 0.0, "oar_scales": {}}


def as_member(model):
    """The model with MEMBER_OVERRIDES applied to the config fields it has, weights untouched."""
    fields = {f.name for f in dataclasses.fields(model.config)}
    model.config = dataclasses.replace(model.config, **{k: v for k, v in MEMBER_OVERRIDES.items() if k in fields})
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("members", nargs="+", type=Path, help="two or more .safetensors checkpoints (json beside)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="output stem (.safetensors + .json)")
    args = ap.parse_args(argv)
    if len(args.members) < 2:
        ap.error("an ensemble needs two or more members")
    try:
        models = [as_member(load_checkpoint(p)) for p in args.members]
        ensemble = DoseEnsemble.of(models)
        record = {"members": [{"source": str(p), "record": m.record} for p, m in zip(args.members, models)]}
        path = save_checkpoint(ensemble, args.output, record, overwrite=False)
    except ADDiffDoseError as exc:
        print(f"error: {exc}")
        return 2
    print(f"wrote {path} ({len(models)} members of family {models[0].family})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

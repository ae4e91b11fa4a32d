"""Turn trained checkpoints into the bundled release models and write Resources/Models/manifest.json.

    python scripts/release_models.py --unet runs/unet_errorhead_cpu/last.safetensors \
        --diffusion runs/diffusion_denoiser_cpu/best.safetensors --heuristic Resources/Models/heuristic.json \
        --benchmark benchmark_validation.json --default unet --versions unet=0.2.0,diffusion=0.1.1

Release weights are stored as float16 safetensors (half the size; loading casts back to float32) with the
JSON config and the training record beside them. Each file must stay <= 15 MB and all together <= 40 MB.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ADDiffDoseLib.model.conditioning import CHANNELS, DOSE_SCALE_GY, MODEL_SHAPE
from ADDiffDoseLib.model.weights import (ModelEntry, load_checkpoint, save_checkpoint, sha256_of,
                                         write_manifest)

OUT = Path("Resources/Models")
ENVELOPE = {
    "sites": ["head-and-neck"],
    "techniques": ["IMRT"],
    "energies_mv": [6.0],
    "beam_counts": [5, 9],
    "coplanar_only": True,
    "spacing_mm": [1.5, 6.0],
    "patient_positions": ["HFS"],
    "prescriptions_gy": "targets of 54-70 Gy in 30-35 fractions (OpenKBP PTV70/63/56)",
}
TRAINING_DATA = ("OpenKBP train split (169 patients, clinical 6 MV 9-field IMRT; MIT licence, cite Babier et al. "
                 "Med Phys 2021) minus the 20-patient model-selection subset (ADDiffDoseLib/data/splits.json), plus "
                 "the pyRadPlan beam-varied physical plans on those training anatomies (data-source token "
                 "'pyradplan'). OpenKBP validation was used only for the reported figures.")
LIMIT_FILE, LIMIT_ALL = 15_000_000, 40_000_000


def input_contract(model) -> dict:
    return {"channels": list(CHANNELS), "dose_units": f"dose / {DOSE_SCALE_GY:g} Gy",
            "model_grid": f"{'x'.join(map(str, MODEL_SHAPE))} voxels, OpenKBP orientation (axis 0 posterior, "
                          "1 patient left, 2 inferior), the case's own voxel size (clamped to 1.5-6 mm)",
            "resolution_factor": int(getattr(model.config, "resolution_factor", 1)),
            "tokens": "1 global + 1 per beam (gantry/couch sin-cos, energy, technique, counts, prescriptions, "
                      "fractions, site, data source)"}


def release(src: Path, name: str, description: str, metrics: dict, version: str) -> ModelEntry:
    model = load_checkpoint(src)
    record = dict(model.record)
    if src.resolve().parent != OUT.resolve():  # re-releasing a bundled file keeps where it first came from
        record["released_from"] = str(src)
    if model.family == "heuristic":
        (OUT / f"{name}.json").write_text(json.dumps({"family": "heuristic", "config": model.config.to_dict(),
                                                      "record": record}, indent=2) + "\n")
        weights = None
    else:
        weights = save_checkpoint(model, OUT / name, record, half=True)
        if weights.stat().st_size > LIMIT_FILE:
            raise SystemExit(f"{weights} is {weights.stat().st_size / 1e6:.1f} MB > 15 MB")
    return ModelEntry(name=name, family=model.family, config_file=f"{name}.json",
                      file=weights.name if weights else None, sha256=sha256_of(weights) if weights else None,
                      version=version, description=description,
                      training_data=(TRAINING_DATA if model.family != "heuristic" else
                                     f"fall-off length fitted on {len(record.get('fitted_on', []))} clinical OpenKBP "
                                     "training patients (scripts/fit_heuristic.py)"),
                      input_contract=input_contract(model), supported_envelope=ENVELOPE, metrics=metrics, folder=OUT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet")
    ap.add_argument("--diffusion")
    ap.add_argument("--heuristic", default=str(OUT / "heuristic.json"))
    ap.add_argument("--benchmark", help="benchmark JSON whose summary.means fill each entry's metrics")
    ap.add_argument("--default", default="unet")
    ap.add_argument("--version", default="0.1.0", help="version of every released model ...")
    ap.add_argument("--versions", default="", help="... unless named here: unet=0.2.0,diffusion=0.1.1")
    args = ap.parse_args()
    means = {}
    if args.benchmark:
        means = json.loads(Path(args.benchmark).read_text())["summary"]["means"]
    versions = dict(kv.split("=", 1) for kv in args.versions.split(",") if kv)
    entries = []
    specs = (("unet", args.unet, "3D U-Net (C3D-style) at half resolution with a full-resolution error head and "
                                 "the target-coverage prior; CPU training"),
             ("diffusion", args.diffusion, "ADDiff-Dose latent conditional diffusion (VAE + latent denoiser)"),
             ("heuristic", args.heuristic, "model-free: prescription in targets, exponential fall-off"))
    for name, src, desc in specs:
        if src:
            metrics = {k: v for k, v in means.get(name, {}).items() if isinstance(v, (int, float))}
            entries.append(release(Path(src), name, desc, metrics, versions.get(name, args.version)))
    for e in entries:
        e.default = e.name == args.default
    total = sum((OUT / e.file).stat().st_size for e in entries if e.file)
    if total > LIMIT_ALL:
        raise SystemExit(f"model files total {total / 1e6:.1f} MB > 40 MB")
    write_manifest(OUT, entries)
    print(f"wrote {OUT / 'manifest.json'}: " + ", ".join(f"{e.name}{'*' if e.default else ''}" for e in entries)
          + f"; weights {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

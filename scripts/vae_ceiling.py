"""The diffusion model's VAE ceiling: OpenKBP scores of decode(encode(reference dose)) on the model-selection split.

    python scripts/vae_ceiling.py --data ../shared/data --model Resources/Models/diffusion.safetensors

A diffusion model cannot beat its own autoencoder: this is the floor of its error (issue 5, item 2).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from ADDiffDoseLib.metrics.openkbp_score import case_openkbp_scores
from ADDiffDoseLib.model.conditioning import DOSE_SCALE_GY
from ADDiffDoseLib.model.data import case_tensors, list_cases, load_case
from ADDiffDoseLib.model.resolution import resolution_factor
from ADDiffDoseLib.model.weights import load_checkpoint


@torch.no_grad()
def reconstruct(model, case) -> np.ndarray:
    s = case_tensors(case)
    f = resolution_factor(model)
    ch, dose = (F.avg_pool3d(s[k][None].float(), f) for k in ("channels", "dose"))
    feats = model.vae.encode_anatomy(ch)
    out = model.vae.decode(model.vae.encode(dose, feats).mean, feats).float()
    out = F.interpolate(out, size=s["dose"].shape[1:], mode="trilinear", align_corners=False)
    return (out[0, 0].clamp(min=0).numpy() * DOSE_SCALE_GY) * case.body_mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="Resources/Models/diffusion.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(args.model)
    refs = [r for r in list_cases(args.data, "train", include_pyradplan=False) if r.selection]
    scores = []
    for ref in refs:
        case = load_case(ref)
        s = case_openkbp_scores(case, reconstruct(model, case))
        scores.append((s["dose_score"], s["dvh_score"]))
    dose, dvh = np.mean(scores, axis=0)
    print(json.dumps({"cases": len(refs), "vae_dose_score_gy": round(float(dose), 3),
                      "vae_dvh_score_gy": round(float(dvh), 3)}))


if __name__ == "__main__":
    main()

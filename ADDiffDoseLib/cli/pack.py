"""`addiffdose pack --data DIR -o FILE`: the compact training set for the GPU machine (< 50 MiB)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("pack", help="pack the training split into one compact file (for a GPU machine)")
    p.add_argument("--data", required=True, help="data root holding openkbp/ and openkbp-pyradplan/")
    p.add_argument("-o", "--output", default="packed/train.zip", help="output file (default packed/train.zip)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from ..model.data import pack_training_set

    bar = tqdm(desc="packing", unit="plan")

    def progress(done, total, name):
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix_str(name)

    stats = pack_training_set(args.data, args.output, overwrite=args.overwrite, progress=progress)
    bar.close()
    print(f"wrote {args.output}: {stats['plans']} plans on {stats['anatomies']} anatomies, "
          f"{stats['bytes'] / 2**20:.1f} MiB")
    return 0

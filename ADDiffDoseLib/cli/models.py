"""`addiffdose models list|import|verify`: the bundled and user model manifests."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list, verify or import models")
    sub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    lst = sub.add_parser("list", help="list known models")
    lst.add_argument("--json", action="store_true")
    ver = sub.add_parser("verify", help="check a model's file and SHA-256")
    ver.add_argument("name", nargs="?", default="default")
    imp = sub.add_parser("import", help="register a .safetensors model (offline; its .json config beside it)")
    imp.add_argument("file")
    imp.add_argument("--name", required=True)
    imp.add_argument("--description", default="")
    imp.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..model.weights import all_models, find_model, import_model, verify

    if args.models_command == "list":
        entries = all_models()
        if args.json:
            print(json.dumps([e.to_dict() | {"folder": str(e.folder)} for e in entries], indent=2))
        else:
            for e in entries:
                mark = "*" if e.default else " "
                print(f"{mark} {e.name:24s} {e.family:10s} v{e.version:6s} {e.description}")
        return 0
    if args.models_command == "verify":
        entry = find_model(args.name)
        verify(entry)
        print(f"{entry.name}: OK ({entry.sha256 or 'no weights file'})")
        return 0
    entry = import_model(args.file, args.name, overwrite=args.overwrite, description=args.description)
    print(f"imported {entry.name} ({entry.family}) into {entry.folder}")
    return 0

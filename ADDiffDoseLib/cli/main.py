"""`addiffdose` entry point.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser whose
``func(args) -> int`` does the work. Library errors print one line and exit non-zero; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from .. import NOT_FOR_CLINICAL_USE, __version__
from ..errors import ADDiffDoseError, one_line

SUBCOMMANDS = ("demo", "inspect", "convert", "dvh", "evaluate", "predict", "train", "benchmark", "pack", "models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="addiffdose",
        description=f"Radiotherapy dose prediction. {NOT_FOR_CLINICAL_USE}.",
    )
    parser.add_argument("--version", action="version", version=f"addiffdose {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__package__}.{name}")
        module.register(subparsers)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings (numpy, torch, pydicom outside the readers) as one `warning:` line, like ours."""
    source = str(filename).replace("\\", "/").split("/site-packages/")[-1].split("/")[0]
    print(f"warning: {source}: {one_line(message)}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    shown, pydicom_log = warnings.showwarning, logging.getLogger("pydicom")
    pydicom_level = pydicom_log.level
    if not args.debug:
        warnings.showwarning = _show_warning
        # pydicom logs what it also warns (or raises): the warnings reach the user as ours, once
        pydicom_log.setLevel(logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except ADDiffDoseError as exc:
        if args.debug:
            raise
        print(f"error {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print("error: out of memory", file=sys.stderr)
        return 3
    finally:
        warnings.showwarning = shown
        pydicom_log.setLevel(pydicom_level)


if __name__ == "__main__":
    sys.exit(main())

"""The `recops` command: one entry point for the operator, the workloads and the tools.

Subcommands import their modules lazily, so `recops operator` never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from recops import __version__

# name -> (module, help); each module has add_arguments(parser) and main(args) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "operator": ("recops.controllers.command", "run the Kubernetes operator (Kopf)"),
    "data": ("recops.shop.command", "work with training data (synth)"),
    "serve": ("recops.serve.command", "serve a complete model: ranking, embeddings, feedback and metrics over HTTP"),
    "train": ("recops.train.command", "fine-tune, evaluate, gate and write a deployable model (a FineTuneJob pod)"),
    "fetch-model": ("recops.serve.fetch", "copy a complete model (e.g. from s3://) into a local directory"),
}


def _version(_: argparse.Namespace) -> int:
    print(__version__)
    return 0


def _crds(args: argparse.Namespace) -> int:
    from recops.api.crd import all_crds

    out_dir = Path(args.dir)
    wanted = all_crds()
    if args.check:
        stale = []
        for name, text in wanted.items():
            path = out_dir / name
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        extra = sorted(str(p) for p in out_dir.glob("*.recops.dev.yaml") if p.name not in wanted)
        for path_text in stale:
            print(f"{path_text}: differs from what recops.api generates; run `recops crds`", file=sys.stderr)
        for path_text in extra:
            print(f"{path_text}: no recops.api model generates it", file=sys.stderr)
        return 1 if stale or extra else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in wanted.items():
        (out_dir / name).write_text(text)
        print(out_dir / name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recops", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"recops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    version = sub.add_parser("version", help="print the recops version")
    version.set_defaults(func=_version)

    crds = sub.add_parser("crds", help="write (or --check) the CRDs generated from recops.api")
    crds.add_argument("--dir", default="crds", help="directory of the CRD files (default: crds)")
    crds.add_argument("--check", action="store_true", help="exit non-zero, naming the file, when crds/ is stale")
    crds.set_defaults(func=_crds)

    import importlib

    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text)
        module.add_arguments(cmd)
        main: Callable[[argparse.Namespace], int] = module.main
        cmd.set_defaults(func=main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

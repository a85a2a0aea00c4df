"""`recops fetch-model`: copy a complete model into a local directory (the init container of
serving pods whose model is on s3://, as KServe's storage initializer does).

Only a complete model is fetched: recops.json, which the trainer writes last, must exist, and
it is copied last, so a half-copied directory is never mistaken for a model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from recops.api.contracts import MODEL_MANIFEST

log = logging.getLogger("recops.serve.fetch")


class FetchError(RuntimeError):
    """The model cannot be fetched (incomplete, unreadable)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="URI",
                        help="complete model: s3://bucket/key, a directory, file:// or pvc://CLAIM/path")
    parser.add_argument("--dest", required=True, metavar="DIR", help="local directory to copy it into")


def fetch(uri: str, dest: Path) -> int:
    """Copy the model at `uri` into `dest`; returns the number of files copied."""
    from recops.uris import filesystem

    fs, remote = filesystem(uri)
    remote = remote.rstrip("/")
    if not fs.exists(f"{remote}/{MODEL_MANIFEST}"):
        raise FetchError(f"{uri}: the model is incomplete ({MODEL_MANIFEST} is missing; the trainer writes it last)")
    files = sorted((f for f in fs.find(remote) if not f.endswith("/")), key=lambda f: f.endswith(MODEL_MANIFEST))
    dest.mkdir(parents=True, exist_ok=True)
    for remote_file in files:
        relative = remote_file[len(remote):].lstrip("/")
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote_file, str(target))
    return len(files)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        count = fetch(args.model, Path(args.dest))
    except FetchError as error:
        print(f"recops fetch-model: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # one line for the termination message
        print(f"recops fetch-model: {args.model}: could not fetch the model: {error}", file=sys.stderr)
        return 1
    log.info("fetched %d files of %s into %s", count, args.model, args.dest)
    return 0

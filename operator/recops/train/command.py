"""`recops train`: fine-tune, evaluate, gate and write a deployable model (Contracts: `recops.api.contracts`).

Imports torch and transformers only inside `main`, so the operator's CLI stays light.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from recops.api.contracts import TERMINATION_MESSAGE_PATH, TerminationMessage

log = logging.getLogger("recops.train")

ERROR_LINE_LIMIT = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="FineTuneJob manifest or its bare spec (YAML or JSON)")
    parser.add_argument("--output", metavar="URI", help="model prefix (default: spec.output.uri)")
    parser.add_argument("--model-version", metavar="V",
                        help="model version (default: <name>-<first 8 of uid> from the manifest)")
    parser.add_argument("--current-model", metavar="URI",
                        help="the complete model serving now: evaluated on the same test split for the gate")
    parser.add_argument("--termination-message-path", metavar="P",
                        help=f"where to write the termination message (default: {TERMINATION_MESSAGE_PATH})")


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:ERROR_LINE_LIMIT]


def _setup_environment() -> None:
    # Nothing is ever fetched from a hub; no telemetry.
    for name, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                        "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
                        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "MPLBACKEND": "Agg"}.items():
        os.environ.setdefault(name, value)


def _setup_logging(rank: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s recops train: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("recops")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False


def write_termination_message(message: TerminationMessage, path: str, given: bool) -> None:
    try:
        Path(path).write_text(message.to_json())
    except OSError as err:
        if given:
            print(f"recops train: cannot write the termination message to {path}: {err}", file=sys.stderr)
        # The default /dev/termination-log exists only in a pod: skip it silently elsewhere.


def main(args: argparse.Namespace) -> int:
    _setup_environment()
    rank = int(os.environ.get("RANK", "0"))
    _setup_logging(rank)
    from recops.train.job import JobError, resolve_job
    from recops.train.output import OutputError
    from recops.uris import UriError

    try:
        from recops.train.errors import DataError
    except ImportError:  # part 1 not merged yet
        DataError = JobError  # type: ignore[misc,assignment]

    known: tuple[type[BaseException], ...] = (JobError, OutputError, UriError, DataError)
    termination_path = args.termination_message_path or TERMINATION_MESSAGE_PATH
    given = args.termination_message_path is not None
    message = TerminationMessage()
    code = 0
    try:
        job = resolve_job(args.config, output=args.output, version=args.model_version,
                          current_model=args.current_model, termination_path=args.termination_message_path)
        message = TerminationMessage(modelVersion=job.model_version)
        log.info("FineTuneJob %s/%s: task %s, model %s", job.namespace, job.name or "-", job.spec.task, job.model_uri)
        from recops.train.pipeline import run

        result = run(job)
        if result is not None:
            message = result
    except known as err:
        cause = one_line(err)
        print(f"recops train: error: {cause}", file=sys.stderr)
        message = message.model_copy(update={"error": cause, "model_uri": None})
        code = 1
    except Exception as err:
        traceback.print_exc()
        cause = f"{type(err).__name__}: {one_line(err)}"
        print(f"recops train: error: {cause}", file=sys.stderr)
        message = message.model_copy(update={"error": cause, "model_uri": None})
        code = 1
    if rank == 0:
        write_termination_message(message, termination_path, given)
    return code


if __name__ == "__main__":  # `python -m recops.train.command ...`: no other subcommand is imported
    _parser = argparse.ArgumentParser(prog="recops train", description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))

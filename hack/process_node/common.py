"""What every part of the process node shares: paths, clocks, the log, waiting on a process."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent  # run as `python hack/process_node`
HACK = PACKAGE.parent
REPO = HACK.parent
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
IP_BLOCK_LOCKS = Path("/tmp/recops-pod-ip-blocks")  # machine-wide: one lock file per 127.N block
MARKER = "RECOPS_PROCESS_NODE_DIR"  # env var in every container process: lets `down` sweep leftovers


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log(msg: str) -> None:
    print(f"{now()} {msg}", flush=True)



class NotReadyYet(Exception):
    """A referenced ConfigMap/Secret is missing: retry, as the kubelet does."""


# ================================================================ the node


def proc_wait(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None



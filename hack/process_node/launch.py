"""The launcher, run inside a container's fresh mount namespace: bind the volumes, exec the command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .common import REPO


def launch(spec_file: str) -> None:
    """Runs as root inside the container's fresh mount namespace: bind the volumes, enter
    the working directory, exec the command. Failures are written to statusFile."""
    spec = json.loads(Path(spec_file).read_text())
    # Open every mount source (and the status file's dir) BEFORE mounting anything: a
    # volume mounted over e.g. /tmp would otherwise hide sources that live under /tmp.
    status = Path(spec["statusFile"])
    status_dir = os.open(status.parent, os.O_PATH)
    sources = [(m, os.open(m["source"], os.O_PATH), os.path.isdir(m["source"])) for m in spec["mounts"]]
    # The checkout (its .venv holds `recops`) must stay visible: a volume over one of its parents
    # (an emptyDir at /tmp, with the checkout under /tmp) gets the checkout bound back inside it.
    repo_fd = os.open(REPO, os.O_PATH)

    def fail(reason: str, message: str, code: int) -> None:
        fd = os.open(status.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=status_dir)
        os.write(fd, json.dumps({"reason": reason, "message": message}).encode())
        os.close(fd)
        print(f"process-node: {reason}: {message}", file=sys.stderr, flush=True)
        sys.exit(code)

    for m, fd, is_dir in sorted(sources, key=lambda s: len(Path(s[0]["target"]).parts)):
        dst = Path(m["target"])
        try:
            # Mount points must exist; they are created (empty) in the shared filesystem.
            if is_dir:
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    dst.touch()
            # The source opened above, wherever it is now (not canonicalised: mount would resolve
            # the fd's link to a path that an earlier mount may hide).
            src = f"/proc/{os.getpid()}/fd/{fd}"
            subprocess.run(["mount", "--no-canonicalize", "--bind", src, str(dst)], check=True, capture_output=True,
                           text=True)
            if m["readOnly"]:
                subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True, capture_output=True,
                               text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            err = getattr(e, "stderr", "") or str(e)
            fail("CreateContainerError", f"cannot mount {m['source']} at {dst}: {err.strip()}", 128)
    if any(REPO.is_relative_to(m["target"]) and Path(m["target"]) != REPO for m in spec["mounts"]):
        try:
            REPO.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{repo_fd}", str(REPO)],
                           check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            fail("CreateContainerError", f"cannot keep {REPO} visible: {getattr(e, 'stderr', '') or e}", 128)
    os.close(repo_fd)
    for _, fd, _ in sources:
        os.close(fd)
    env = spec["env"]
    if spec.get("workingDir"):
        os.makedirs(spec["workingDir"], exist_ok=True)
        os.chdir(spec["workingDir"])
    argv = spec["argv"]
    exe = argv[0]
    path = exe if "/" in exe else shutil.which(exe, path=env.get("PATH"))
    if not path or not os.access(path, os.X_OK) or os.path.isdir(path):
        fail("ExecutableNotFound",
             f"executable {exe!r} not found on this machine (the process node runs commands locally "
             f"and does not pull image {spec.get('image')!r})", 127)
    os.close(status_dir)
    os.execve(path, argv, env)


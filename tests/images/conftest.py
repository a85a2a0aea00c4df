"""The images as built by `make images` (hack/images, podman): built once a session (seconds when nothing
changed), then run as a kubelet would run them under Pod Security "restricted"."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HACK_IMAGES = ROOT / "hack" / "images"
IMAGES = ("operator", "server", "trainer-cpu")
BUILD_TIMEOUT_S = 2400  # a cold build of all three (the trainer's torch) on a busy 2-core machine
# What a restricted pod gets: a non-root uid, no capabilities, no privilege escalation, a read-only root.
RESTRICTED = ["--user", "10001:10001", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
              "--read-only", "--tmpfs", "/tmp:rw,mode=1777"]


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """podman with hack/images' settings (runc, cgroupfs, its storage root)."""
    return subprocess.run([str(HACK_IMAGES), "podman", *args], capture_output=True, text=True, timeout=timeout,
                          check=check)


def image(name: str) -> str:
    return f"localhost/recops-{name}:dev"


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: apt-get install podman runc debootstrap fuse-overlayfs "
                    "uidmap (.ci/run installs them)")
    build = subprocess.run([str(HACK_IMAGES), *IMAGES], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert build.returncode == 0, build.stderr[-4000:]
    return {name: image(name) for name in IMAGES}


def readable(path: Path) -> Path:
    """A host directory the container's uid 10001 may read (pytest's tmp dirs are root's, mode 0700)."""
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o555 if p.is_dir() else p.stat().st_mode | 0o444)
    return path


@dataclass
class Container:
    name: str
    started: float

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exit_code(self) -> int | None:
        state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name, check=False)
        status, _, code = state.stdout.strip().partition(" ")
        return int(code) if status in ("exited", "stopped") else None


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names of the containers a test started; removed afterwards whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        podman("rm", "--force", "--time", "5", name, check=False, timeout=60)


def wait_http(url: str, container: Container, timeout_s: float = 180) -> float:
    """Seconds from the container's start until `url` answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - container.started
        except OSError:
            pass
        code = container.exit_code()
        if code is not None:
            raise AssertionError(f"{container.name} exited with {code}:\n{container.logs()[-4000:]}")
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout_s}s:\n{container.logs()[-4000:]}")

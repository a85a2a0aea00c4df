"""hack/system-packages, which `make test` and .ci/run call: it names exactly the Debian packages whose
commands are missing, in one line, instead of letting the Argo CD or Prometheus tests fail one by one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "system-packages"
COMMANDS = ("openssl", "make", "prometheus", "promtool", "lua5.1", "podman", "runc", "debootstrap", "fuse-overlayfs",
            "newuidmap")


def check_with(tmp_path: Path, present: set[str]) -> subprocess.CompletedProcess[str]:
    """`hack/system-packages --check` with a PATH that holds only `present` (stand-ins: only their names count)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in present | {"id"}:
        (bin_dir / name).symlink_to(shutil.which("true") or "/bin/true")
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run([bash, str(SCRIPT), "--check"], capture_output=True, text=True,
                          env={**os.environ, "PATH": str(bin_dir)})


def test_nothing_missing_says_nothing(tmp_path: Path) -> None:
    res = check_with(tmp_path, set(COMMANDS))
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


@pytest.mark.parametrize(("absent", "packages"), [
    ({"lua5.1"}, "lua5.1"),
    ({"prometheus", "promtool"}, "prometheus"),  # one package for both commands
    ({"promtool", "lua5.1", "openssl"}, "openssl prometheus lua5.1"),
    ({"newuidmap", "podman"}, "podman uidmap"),
])
def test_missing_commands_are_named_in_one_line_with_the_command_to_run(tmp_path: Path, absent: set[str],
                                                                        packages: str) -> None:
    res = check_with(tmp_path, set(COMMANDS) - absent)
    assert res.returncode == 1 and res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert f"missing {packages}:" in line
    assert f"apt-get install -y --no-install-recommends {packages}`" in line


def test_make_test_and_ci_call_it() -> None:
    makefile = (REPO / "Makefile").read_text()
    test_rule = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert "system-packages" in test_rule.split()
    assert "\nhack/system-packages\n" in (REPO / ".ci" / "run").read_text()

"""The images without a container engine: lint each Dockerfile, then install the image's lock
files and the recops wheel into a fresh virtual environment as the Dockerfile does, and run the
image's ENTRYPOINT with --help (so a lock that misses a package fails here). tests/images builds
and runs the images themselves with podman."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))
UV = shutil.which("uv") or "uv"


def entrypoint(dockerfile: Path) -> list[str]:
    lines = [line for line in dockerfile.read_text().splitlines() if line.startswith("ENTRYPOINT ")]
    assert len(lines) == 1, f"{dockerfile.name}: one ENTRYPOINT expected"
    command: list[str] = json.loads(lines[0].removeprefix("ENTRYPOINT "))
    return command


def locks(dockerfile: Path) -> list[Path]:
    """The lock files the image installs (hashed pins, --no-deps), in order."""
    return [ROOT / name for name in re.findall(r"--require-hashes --no-deps \S* ?-r (images/\S+\.lock)", dockerfile.read_text())]


def pinned(lock: Path) -> set[str]:
    return {line.split("==")[0].lower() for line in lock.read_text().splitlines() if "==" in line and not line.startswith(" ")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([UV, "build", "--wheel", "--out-dir", str(out), str(ROOT)], check=True, capture_output=True)
    (built,) = out.glob("recops-*.whl")
    return built


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_layered_nonroot_and_pinned_by_argument(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert text.count("\nFROM ") >= 2 or text.startswith("FROM")
    assert re.search(r"^ARG BASE_IMAGE=\S+:\S+", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    for label in ("source", "revision", "created", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    assert locks(dockerfile), "the image installs a lock file"
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert "pip wheel" not in final_stage and "apt-get" not in final_stage and "RUN " not in final_stage
    # The final stage builds on the dependency stage (one copy of the environment) and adds recops alone.
    assert final_stage.startswith("deps\n")
    assert re.search(r"^COPY --from=build /opt/app /$", final_stage, re.M)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_runs_from_a_fresh_environment(dockerfile: Path, wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    subprocess.run([UV, "venv", "-q", "-p", sys.executable, str(venv)], check=True, env=env)
    for lock in locks(dockerfile):
        subprocess.run([UV, "pip", "install", "-q", "--require-hashes", "--no-deps", "-r", str(lock)], check=True, env=env)
    subprocess.run([UV, "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=env)
    command = entrypoint(dockerfile)
    result = subprocess.run([str(venv / "bin" / command[0]), *command[1:], "--help"],
                            capture_output=True, text=True, env={**env, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    has_torch = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode == 0
    assert has_torch == ("torch" in pinned(locks(dockerfile)[0])), f"torch importable: {has_torch}"
    if dockerfile.name in ("operator.Dockerfile", "server.Dockerfile"):
        assert not has_torch
    if dockerfile.name == "operator.Dockerfile":
        assert "RECOPS_TRAINER_IMAGE" in result.stdout
    if dockerfile.name == "server.Dockerfile":  # the ONNX path and what it needs import without torch
        probe = "import recops.optimized, recops.serve.model, onnxruntime, tokenizers, cachetools, s3fs"
        subprocess.run([str(venv / "bin" / "python"), "-c", probe], check=True)

"""The operator image as the process node sees it: built by `make images` (hack/images) into the
podman storage that hack/process_node/podman.py reads, with the same settings."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.support.cluster import HACK

# hack/images' name for it; RECOPS_TEST_OPERATOR_IMAGE names an image built some other way (used as is).
DEFAULT_OPERATOR_IMAGE = "localhost/recops-operator:dev"
BUILD_TIMEOUT_S = 1800  # a cold build (the debootstrap base, then the image) on a busy 2-core machine


def podman_runtime() -> Any:
    """A `Podman` of hack/process_node/podman.py (hack/ is not a package)."""
    spec = importlib.util.spec_from_file_location("podman_runtime", HACK / "process_node" / "podman.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Podman()


@functools.cache
def operator_image() -> str:
    """The operator image, in local podman storage and built from this checkout (hack/images rebuilds it
    only when its inputs changed: seconds otherwise). Skips, saying why, without podman."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: apt-get install podman runc debootstrap fuse-overlayfs "
                    "uidmap (.ci/run installs them)")
    image = os.environ.get("RECOPS_TEST_OPERATOR_IMAGE")
    if image is None:
        build = subprocess.run([str(HACK / "images"), "operator"], capture_output=True, text=True,
                               timeout=BUILD_TIMEOUT_S)
        assert build.returncode == 0, f"hack/images operator failed:\n{build.stderr[-4000:]}"
        image = DEFAULT_OPERATOR_IMAGE
    podman = podman_runtime()
    if not podman.has_image(image):
        pytest.skip(f"{image} is not in local podman storage ({podman.root})")
    return image

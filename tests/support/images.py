"""The images `make images` (hack/images) builds, as the process node sees them: through
hack/podman_runtime.py, so the same podman settings and storage."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest

from tests.support.cluster import HACK

OPERATOR_IMAGE = os.environ.get("RECOPS_TEST_OPERATOR_IMAGE", "localhost/recops-operator:dev")


def podman_runtime() -> Any:
    """A `Podman` of hack/podman_runtime.py (hack/ is not a package)."""
    spec = importlib.util.spec_from_file_location("podman_runtime", HACK / "podman_runtime.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Podman()


def require_image(image: str) -> Any:
    """The `Podman` that holds `image`; skips the test, saying why, without podman or the image."""
    podman = podman_runtime()
    if not podman.available:
        pytest.skip("podman is not installed (apt-get install podman runc; see ../shared/notes/containers.md)")
    if not podman.has_image(image):
        pytest.skip(f"{image} is not in local podman storage ({podman.root}): run `make images`")
    return podman

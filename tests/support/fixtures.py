"""Pytest fixtures for tests on the local control plane (marker `cluster`).

`cluster` (session): starts hack/cluster once, with the process node, in a throwaway
dir and stops it (purging the dir) at the end. To reuse a running dev cluster instead,
set RECOPS_TEST_CLUSTER_DIR to its dir: it is brought up if needed and left running.
`namespace` (per test): a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.cluster import HACK, REPO, Cluster


def _cluster_cmd(dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(HACK / "cluster"), *args], env={**os.environ, "RECOPS_CLUSTER_DIR": str(dir)},
                          capture_output=True, text=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    reuse = os.environ.get("RECOPS_TEST_CLUSTER_DIR")
    dir = Path(reuse) if reuse else Path(tempfile.mkdtemp(prefix="recops-cluster-"))
    up = _cluster_cmd(dir, "up", "--process-node")
    if up.returncode != 0:
        _cluster_cmd(dir, "down")
        pytest.fail(f"hack/cluster up failed ({up.returncode}):\n{up.stderr[-4000:]}", pytrace=False)
    try:
        yield Cluster(dir=dir, process_node=True)
    finally:
        if not reuse:
            down = _cluster_cmd(dir, "down", "--purge")
            assert down.returncode == 0, down.stderr


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    prefix = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().removeprefix("test_"))[:40].strip("-") or "t"
    name = cluster.create_namespace(prefix)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> list[str]:
    """The committed crds/ applied (server-side) and Established; returns their names."""
    paths = sorted((REPO / "crds").glob("*.yaml"))
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in paths]
    for p in paths:
        res = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(p), check=False)
        if res.returncode != 0:  # the apiserver's own words, once, without a traceback
            pytest.fail(f"{p.relative_to(REPO)} does not apply:\n{res.stderr}", pytrace=False)
    for name in names:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    return names

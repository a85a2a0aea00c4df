"""Fixtures shared by the cluster tests.

`operator` (one a module): `recops operator` as a subprocess under the cluster-wide RBAC of
config/rbac, started with `running_operator(**operator_options)`. A module that needs other
settings overrides `operator_options` (e.g. a Prometheus URL), not `operator` itself.
`prometheus` (one a module): a real Prometheus scraping the process node's pods (its file_sd file).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.cluster import Cluster
from tests.support.operator import RunningOperator, install_rbac, running_operator
from tests.support.prometheus import PrometheusServer, running_prometheus


@pytest.fixture(scope="module")
def operator_options() -> dict[str, Any]:
    """Keyword arguments of `running_operator` for this module's operator (its defaults here)."""
    return {}


@pytest.fixture(scope="module")
def operator(cluster: Cluster, crds: list[str], operator_options: dict[str, Any],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOperator]:
    """`recops operator` with the cluster-wide RBAC, for the tests of one module."""
    install_rbac(cluster)
    with running_operator(cluster, tmp_path_factory.mktemp("operator"), **operator_options) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus that finds the process node's pods through its file_sd file."""
    sd_file = cluster.dir / "process-node" / "prometheus-sd.json"
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), file_sd=[sd_file]) as server:
        yield server

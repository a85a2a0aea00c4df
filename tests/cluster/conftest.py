"""Fixtures shared by the cluster tests.

`operator` (one a module): `recops operator` as a subprocess under the cluster-wide RBAC of
config/rbac, started with `running_operator(**operator_options)`. A module that needs other
settings overrides `operator_options` (e.g. a Prometheus URL), not `operator` itself.
`prometheus` (one a module): a real Prometheus scraping the process node's pods (its file_sd file).
A failing test's report carries what the module's operator logged while that test ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
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


# (the operator's log, its size when the test began): where a failing test's part of the log starts.
OPERATOR_LOG_START = pytest.StashKey[tuple[Path, int]]()
OPERATOR_LOG_CHARS = 30000


@pytest.fixture(autouse=True)
def _mark_operator_log(request: pytest.FixtureRequest) -> None:
    if "operator" in request.fixturenames:
        log = request.getfixturevalue("operator").log
        request.node.stash[OPERATOR_LOG_START] = (log, log.stat().st_size)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failure shows what the operator logged during the test: the race behind a flake is in there."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    start = item.stash.get(OPERATOR_LOG_START, None)
    if report.failed and start is not None:
        log, offset = start
        with log.open(errors="replace") as text:
            text.seek(offset)
            report.sections.append(("recops operator log during the test", text.read()[-OPERATOR_LOG_CHARS:]))


@pytest.fixture(scope="module")
def prometheus(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus that finds the process node's pods through its file_sd file."""
    sd_file = cluster.dir / "process-node" / "prometheus-sd.json"
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), file_sd=[sd_file]) as server:
        yield server

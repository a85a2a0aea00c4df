"""Thin root conftest: registers the shared fixtures of tests/support and the
`cluster` marker (tests that need the local control plane, see hack/cluster)."""

import pytest

from tests.support.fixtures import cluster, crds, namespace

__all__ = ["cluster", "crds", "namespace"]  # fixtures, used by name


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs the local control plane (hack/cluster); slow to start")

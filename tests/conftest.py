"""Thin root conftest: registers the shared fixtures of tests/support and the
`cluster` marker (tests that need the local control plane, see hack/cluster)."""

import sys
from pathlib import Path

# tests/ is not a package; make `support` importable whatever pytest's import mode is.
sys.path.insert(0, str(Path(__file__).parent))

from support.fixtures import cluster, namespace  # noqa: E402,F401  (fixtures, used by name)


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: needs the local control plane (hack/cluster); slow to start")

"""Shared test helpers (the local control plane fixture, ServiceAccount kubeconfigs)."""

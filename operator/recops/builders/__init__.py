"""Pure functions from recops resources to Kubernetes manifests. No I/O."""

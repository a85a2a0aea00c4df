"""The serving workload (`recops serve`)."""

"""The trainer workload (`recops train`). Imports torch lazily."""

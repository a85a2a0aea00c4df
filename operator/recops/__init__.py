"""recops: fine-tune, serve, monitor and retrain the models behind search and recommendations."""

__version__ = "0.1.0"

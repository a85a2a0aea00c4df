"""Kopf handlers, one module per kind; thin: read, build, apply, write status."""

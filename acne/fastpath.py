"""The fast-path seam: a built model in, a runner out; and, for `auto`, the choice by measurement.

A runner is a callable from the model's input (an NCHW float32 tensor) to its outputs
({"logits": ..., and "density": ... for the counting grader}, float32 tensors):

- "torch": PyTorch fp32, the reference;
- "bf16": PyTorch in bfloat16 (the UNet's encoder and coarse decoder blocks; the grader's matmuls under
  autocast). Fast only on CPUs that compute bf16 natively (AMX, AVX512-BF16). A transformer's attention
  runs on PyTorch's fused kernel (SDPA) or as plain matmuls ("eager"), whichever this machine runs faster
  (fastest_attention);
- "onnx": ONNX Runtime on the same fp32 network (exported once into ACNE_CACHE_DIR, see acne.runtime).

Which is fastest depends on the CPU, the thread count and even the weights, and so does whether
running the two models side by side beats running them one after the other (on one Zen 4 CPU it cost
0.56 s against 0.44 s; on an AMX Xeon it won). So `auto` does not guess: `choose` times each
candidate on a probe photo for a few calls, drops those that fail the accuracy guard
(acne.runtime.agreement against plain fp32), keeps the fastest, and stores the choice as JSON
("wisdom", as FFTW calls it) in ACNE_CACHE_DIR keyed by the CPU model, the thread count and the
weights' fingerprints, so a later start reuses it without measuring.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import runtime

log = logging.getLogger(__name__)

BACKENDS = ("auto", "bf16", "onnx", "torch")
PARALLEL = ("auto", "on", "off")
WISDOM_FILE = "fastpath-wisdom.json"
WISDOM_FORMAT = 3   # 3: freed memory kept, bf16 on its fastest attention; 2: the probe times the skin check
BF16_DECODER_BLOCKS = 3   # of the UNet's 5 decoder blocks, the 3 coarsest run in bf16 too
ATTENTION = ("sdpa", "eager")   # transformers' attention kernels a bf16 runner chooses between, the default first


# --------------------------------------------------------------------------- runners

class TorchRunner:
    """A torch module as a runner: fp32, or bf16 (`bf16=True` casts the module in place)."""

    def __init__(self, module, *, kind: str, bf16: bool = False):
        import torch

        self.kind, self.backend = kind, "bf16" if bf16 else "torch"
        if kind == "unet":
            module = module.to(memory_format=torch.channels_last)
            if bf16:
                _bf16_unet(module)
        elif bf16:
            _bf16_matmul_weights(module)
        self.module = module

    def forward(self, pixel_values, **kwargs):
        """The module's own output object (for explanations): autocast in bf16 as the runner computes."""
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.backend == "bf16" and self.kind != "unet"):
            return self.module(pixel_values=pixel_values, **kwargs) if self.kind != "unet" else self.module(pixel_values)

    def __call__(self, x) -> dict:
        import torch

        with torch.inference_mode():
            out = self.forward(x)
        if self.kind == "unet":
            return {"logits": out.float()}
        density = getattr(out, "density", None)
        return {"logits": out.logits.float(), **({"density": density.float()} if density is not None else {})}


class OnnxRunner:
    """An exported model on ONNX Runtime. `forward` (explanations) uses the fp32 torch module, built on demand."""
    backend = "onnx"

    def __init__(self, session: runtime.OnnxModel, module: runtime.Lazy, kind: str):
        self.session, self._module, self.kind = session, module, kind

    @property
    def path(self) -> Path:
        return self.session.path

    @property
    def input_shape(self) -> tuple:
        return self.session.input_shape

    def forward(self, pixel_values, **kwargs):
        return self._module.get()(pixel_values=pixel_values, **kwargs)

    def __call__(self, x) -> dict:
        import torch

        return {k: torch.from_numpy(v) for k, v in self.session(x.numpy() if hasattr(x, "numpy") else x).items()}


def make_runner(model, backend: str, *, threads: int, cache_dir=None, example=None):
    """Turn a built model into a runner.

    Args:
        model: acne.models.UNetModel or acne.models.ClassifierModel.
        backend: "torch", "bf16" or "onnx".
        threads: ONNX Runtime's intra-op threads (torch reads its threads per calling thread).
        cache_dir: ONNX export cache (None: acne.runtime.default_cache_dir()).
        example: NCHW float32 array the ONNX export is checked on (its shape fixes the grader's input).
    Returns:
        a TorchRunner or OnnxRunner. A failed export logs one line and returns the torch runner.
    """
    kind = "unet" if hasattr(model, "channels") else "classifier"
    runtime.keep_freed_memory()   # every runner's large tensors are then reused, not mapped afresh per call
    if backend == "onnx":
        try:
            session = runtime.cached_onnx(
                cache_dir, runtime.export_key(kind if kind == "unet" else "grader", model.weights_key.get(),
                                              shape="x".join(map(str, example.shape[1:])) if kind != "unet" else ""),
                lambda: _Exportable(model.module.get(), kind), example, threads=threads, dynamic_hw=kind == "unet")
            return OnnxRunner(session, model.module, kind)
        except runtime.ExportError as exc:  # ONNX is an optimisation: PyTorch computes the same
            log.warning("%s %s: ONNX Runtime not used (%s); running on PyTorch.",
                        "Segmenter" if kind == "unet" else "Grader", model.name, exc)
            backend = "torch"
    module = model.module.get()
    if backend != "bf16":
        return TorchRunner(module, kind=kind)
    runner = TorchRunner(copy.deepcopy(module), kind=kind, bf16=True)
    if kind != "unet" and example is not None:
        import torch

        key = dict(machine_key(torch.get_num_threads()), weights=model.weights_key.get(), shape=list(example.shape))
        fastest_attention(runner, example, key=key, cache_dir=cache_dir)
    return runner


class _Exportable:
    """What is exported: pixel values in; logits (and the density map, for the counting grader) out."""

    def __new__(cls, module, kind: str):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = module

            def forward(self, pixel_values):
                if kind == "unet":
                    return self.model(pixel_values)
                out = self.model(pixel_values=pixel_values)
                density = getattr(out, "density", None)
                return out.logits if density is None else (out.logits, density)

        return Wrapped().float().eval()


def _bf16_unet(model) -> None:
    """The UNet's encoder and its coarse decoder blocks in bfloat16; the two finest decoder blocks and the
    head in fp32: lesion centres are read off small peaks at full resolution, and bf16 rounding there moved
    lesion counts (the accuracy guard caught it)."""
    import torch

    blocks = getattr(getattr(model, "decoder", None), "blocks", None)
    parts = [model.encoder] + (list(blocks)[:BF16_DECODER_BLOCKS] if isinstance(blocks, torch.nn.ModuleList) else [])

    def cast(value, dtype):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(dtype)
        if isinstance(value, (list, tuple)):
            return type(value)(cast(v, dtype) for v in value)
        return value

    for part in parts:
        part.to(torch.bfloat16)
        part.register_forward_pre_hook(
            lambda _m, args, kwargs: (cast(args, torch.bfloat16), {k: cast(v, torch.bfloat16) for k, v in kwargs.items()}),
            with_kwargs=True)
        part.register_forward_hook(lambda _m, _args, out: cast(out, torch.float32))


def _bf16_matmul_weights(model) -> None:
    """Store the weights autocast would cast to bf16 on every call (linear and conv layers) as bf16 once:
    bit-identical logits, without the per-call cast. Norms, embeddings and the modules the model keeps
    in fp32 (`_keep_in_fp32_modules`, e.g. our density head) stay fp32."""
    import torch

    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, module in model.named_modules():
        if any(part in keep for part in name.split(".")):
            continue
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            module.to(torch.bfloat16)


def fastest_attention(runner: TorchRunner, example, *, key: dict, cache_dir=None, calls: int = 3) -> str:
    """Run the transformers in a bf16 runner's module on the faster attention kernel for this machine.

    PyTorch's fused attention (SDPA) and the plain matmuls ("eager") compute the same in bf16; which is faster
    depends on the CPU (the README's "Speed" gives figures). The first start times both
    on `example` (NCHW array) and stores the answer in the wisdom file under `key`; later starts reuse it.

    Returns:
        the kernel in use: "sdpa" or "eager" (or "" for a module without transformers).
    """
    import torch

    models = [m for m in runner.module.modules() if callable(getattr(m, "set_attn_implementation", None))]
    if not models:
        return ""
    path = _wisdom_path(cache_dir)
    wisdom_key = json.dumps(dict(key, format=WISDOM_FORMAT, what="attention"), sort_keys=True)
    known = runtime.read_json_dict(path).get(wisdom_key, {}).get("attention")
    if known not in ATTENTION:
        x, times = torch.as_tensor(example), {}
        for kernel in ATTENTION:
            _set_attention(models, kernel)
            runs = []
            for _ in range(calls + 1):   # the first warms up
                start = time.perf_counter()
                runner(x)
                runs.append(time.perf_counter() - start)
            times[kernel] = round(1e3 * min(runs[1:]), 1)
        known = min(times, key=times.get)
        log.info("Attention in bf16: %s (%s)", known, ", ".join(f"{k} {v:.0f} ms" for k, v in times.items()))
        _write_wisdom(path, wisdom_key, {"attention": known, "measured_ms": times})
    _set_attention(models, known)
    return known


def _set_attention(models, kernel: str) -> None:
    for model in models:
        model.set_attn_implementation(kernel)


# --------------------------------------------------------------------------- the choice

@dataclass
class Choice:
    """What runs: the backend, whether both models run side by side, how it was decided ("forced",
    "measured" or "cached") and the measured candidates ({"onnx": {"models_ms": ..., "passed": ...}, ...})."""
    backend: str
    parallel: bool
    how: str
    measured: dict = field(default_factory=dict)


def candidates(requested: str) -> list[str]:
    """The backends worth timing for `requested` ("auto": torch, onnx when installed, bf16 where native).
    Raises ValueError on an unknown name, or on "onnx" without onnxruntime."""
    name = (requested or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"ACNE_BACKEND must be one of {', '.join(BACKENDS)}; got {requested!r}")
    if name == "onnx" and not onnx_available():
        raise ValueError("ACNE_BACKEND=onnx needs the onnxruntime and onnx packages: "
                         "pip install onnxruntime onnx (or set ACNE_BACKEND=torch)")
    if name == "bf16" and not native_bf16():
        log.warning("ACNE_BACKEND=bf16 on a CPU without native bfloat16: it runs, but slower than fp32.")
    if name != "auto":
        return [name]
    # Emulated bf16 is several times slower than fp32: not worth the seconds of timing it.
    return ["torch"] + (["onnx"] if onnx_available() else []) + (["bf16"] if native_bf16() else [])


def parallel_modes(requested: str, threads: int) -> list[bool]:
    """The side-by-side settings to consider: [False], [True] or, for auto with 2+ threads, both."""
    mode = (requested or "auto").strip().lower()
    if mode not in PARALLEL:
        raise ValueError(f"ACNE_PARALLEL must be auto, on or off, got {mode!r}")
    if threads < 2 or mode == "off":
        return [False]
    return [True] if mode == "on" else [False, True]


def choose(backends: list[str], parallels: list[bool], measure: Callable[[str, bool], tuple[float, object]],
           guard: Callable[[object, object], bool], *, key: dict, cache_dir=None, calls: int = 3) -> Choice:
    """Pick the fastest (backend, parallel) that passes the accuracy guard; one candidate needs no timing.

    Args:
        backends: candidate backends; "torch" (plain fp32) is the guard's reference when it is one.
        parallels: candidate side-by-side settings.
        measure: measure(backend, parallel) -> (milliseconds of one run, its result); called `calls`
            times per candidate (the first warms up and is not counted).
        guard: guard(reference result, candidate result) -> does the candidate give fp32's answers?
        key: what the choice depends on (CPU, threads, weights...): the wisdom cache's key.
        cache_dir: where the wisdom file lives (None: acne.runtime.default_cache_dir()).
    Returns:
        a Choice.
    """
    if len(backends) == 1 and len(parallels) == 1:
        return Choice(backends[0], parallels[0], "forced")
    wisdom_key = json.dumps(dict(key, format=WISDOM_FORMAT, backends=backends, parallels=parallels), sort_keys=True)
    path = _wisdom_path(cache_dir)
    known = runtime.read_json_dict(path).get(wisdom_key)
    if known and known.get("backend") in backends and known.get("parallel") in parallels:
        return Choice(known["backend"], bool(known["parallel"]), "cached", known.get("measured", {}))

    start = time.perf_counter()
    measured: dict[str, dict] = {}
    reference = None

    def timed(backend: str, parallel: bool) -> dict:
        times, result = [], None
        for _ in range(calls):
            ms, result = measure(backend, parallel)
            times.append(ms)
        nonlocal reference
        if backend == "torch" and reference is None:
            reference = result
        passed = reference is None or backend == "torch" or bool(guard(reference, result))
        return {"models_ms": round(min(times[1:] or times), 1), "passed": passed}

    first_parallel = parallels[0]
    for backend in sorted(backends, key=lambda b: b != "torch"):   # the reference first
        measured[_label(backend, first_parallel)] = dict(timed(backend, first_parallel), backend=backend,
                                                          parallel=first_parallel)
    fine = [m for m in measured.values() if m["passed"]] or [measured[_label("torch", first_parallel)]]
    best = min(fine, key=lambda m: m["models_ms"])
    for parallel in parallels[1:]:   # the other side-by-side setting, for the fastest backend only
        measured[_label(best["backend"], parallel)] = dict(timed(best["backend"], parallel),
                                                           backend=best["backend"], parallel=parallel)
    best = min((m for m in measured.values() if m["passed"]), key=lambda m: m["models_ms"])
    choice = Choice(best["backend"], best["parallel"], "measured", measured)
    log.info("Fast path: %s%s (measured in %.1f s: %s)", choice.backend, ", models side by side" if choice.parallel
             else "", time.perf_counter() - start,
             ", ".join(f"{k} {m['models_ms']:.0f} ms{'' if m['passed'] else ' (fails the guard)'}"
                       for k, m in measured.items()))
    _write_wisdom(path, wisdom_key, {"backend": choice.backend, "parallel": choice.parallel, "measured": measured})
    return choice


def machine_key(threads: int) -> dict:
    """The machine part of the wisdom key: CPU model, thread count, library versions."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "onnxruntime"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu_model(), "threads": threads, **versions}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _label(backend: str, parallel: bool) -> str:
    return f"{backend}+parallel" if parallel else backend



def _wisdom_path(cache_dir) -> Path:
    return (Path(cache_dir).expanduser() if cache_dir else runtime.default_cache_dir()) / WISDOM_FILE


def _write_wisdom(path: Path, key: str, entry: dict) -> None:
    # Read, update, rename into place: two processes starting together lose at most one entry, never the file.
    data = runtime.read_json_dict(path)
    data[key] = entry
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        log.info("Could not store the fast-path choice in %s (%s); it is measured again next start.", path, exc)


# --------------------------------------------------------------------------- what this machine has

def onnx_available() -> bool:
    """Are onnxruntime (runs the models) and onnx (what torch's exporter writes with) installed?"""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def native_bf16() -> bool:
    """Does this CPU compute bfloat16 natively (AMX or AVX512-BF16)? Elsewhere bf16 is emulated: slow."""
    global _NATIVE_BF16
    if _NATIVE_BF16 is None:
        try:
            flags = set()
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
            _NATIVE_BF16 = bool(flags & {"amx_bf16", "avx512_bf16"})
        except OSError:  # not Linux: no cheap, reliable check
            _NATIVE_BF16 = False
        if _NATIVE_BF16:
            import torch

            _NATIVE_BF16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return _NATIVE_BF16


_NATIVE_BF16: bool | None = None

"""Severity grading with any transformers image classifier whose labels are 'level N'.

The default is the Hub ViT imfarzanansari/skintelligent-acne (levels -1..3); when it cannot be
loaded (offline, no cache) the grader falls back to our own model in weights/grader (levels 0..3).
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import torch

from .errors import WeightsCorruptError, WeightsMissingError
from .report import GraderResult
from . import runtime
from .runtime import Lazy
from .severity import parse_level

__all__ = ["SeverityGrader", "GraderLabelError", "WeightsMissingError"]

log = logging.getLogger(__name__)

FIX = ("Get the Hub model once while online (it is then cached), train our own with "
       "`python scripts/train_grader.py` (it writes weights/grader), or point ACNE_GRADER / "
       "ACNE_GRADER_FALLBACK at a folder saved with save_pretrained.")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class GraderLabelError(ValueError):
    """The model's id2label does not follow the 'level N' scheme: a configuration error, never a fallback."""


class SeverityGrader:
    """`model` is the transformers classifier; with an ONNX Runtime `runner` it may be None (then
    `config` gives the labels) and is loaded by `model_loader` only when needed (explain())."""

    def __init__(self, model: torch.nn.Module | None, processor, *, name: str, device: str = "cpu",
                 config=None, runner=None, model_loader=None, processor_loader=None, preprocess=None,
                 dtype: torch.dtype = torch.float32):
        if model is None and (model_loader is None or config is None):
            raise ValueError("SeverityGrader needs a torch model, or its config and a model_loader")
        if processor is None and processor_loader is None:
            raise ValueError("SeverityGrader needs an image processor or a processor_loader")
        self.device = torch.device(device)
        self.dtype = dtype                   # float32, or bfloat16 (autocast) on CPUs that compute it natively
        self._model_loader = model_loader
        self._model = Lazy(lambda: self._prepare(model_loader()), None if model is None else self._prepare(model))
        self.runner = runner                 # acne.runtime.OnnxModel returning logits, or None
        self.backend = "onnx" if runner is not None else ("bf16" if dtype == torch.bfloat16 else "torch")
        self._processor = Lazy(processor_loader, processor)
        # A checked stand-in for the processor (see _light_preprocess): no transformers import needed.
        self.preprocess = preprocess
        self.name = name
        config = config if config is not None else model.config
        id2label = {int(k): v for k, v in (config.id2label or {}).items()}
        self.labels = [id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
        try:
            self.levels = [parse_level(label) for label in self.labels]
        except ValueError as exc:
            raise GraderLabelError(
                f"Grader {name}: {exc}. Its config.json must map every class to a label "
                f"'level -1' ... 'level 3' (id2label); found {self.labels}.") from None
        self._explain_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SeverityGrader({self.name!r}, labels={self.labels}, backend={self.backend!r})"

    def _prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.float().eval().to(self.device)
        if self.dtype == torch.bfloat16:
            _bf16_matmul_weights(model)
        return model

    @property
    def processor(self):
        """The transformers image processor (loaded on first use when a checked light path replaces it)."""
        return self._processor.get()

    @property
    def model(self) -> torch.nn.Module:
        """The torch classifier (loaded on first use when predictions run on ONNX Runtime)."""
        return self._model.get()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_path: str | os.PathLike, *, fallback: str | os.PathLike | None = None,
             device: str = "cpu", backend: str = "torch", cache_dir: str | os.PathLike | None = None,
             threads: int | None = None, int8: bool = False) -> "SeverityGrader":
        """Load a Hub id or a save_pretrained folder; if that fails, log one line and load `fallback`.

        backend="onnx" runs the classifier on ONNX Runtime (exported once into `cache_dir`; `int8`
        quantises its linear layers' weights); if that fails, one log line and PyTorch.
        """
        name = str(name_or_path)
        options = {"backend": backend, "cache_dir": cache_dir, "threads": threads, "int8": int8}
        try:
            return cls._load_one(name, device, **options)
        except GraderLabelError:
            raise
        except Exception as primary_exc:  # noqa: BLE001 - OSError offline, missing files, bad weights...
            if fallback is None or str(fallback) == name:
                raise _as_weights_error(name, primary_exc) from primary_exc
            try:
                grader = cls._load_one(str(fallback), device, **options)
            except GraderLabelError:
                raise
            except Exception as fallback_exc:  # noqa: BLE001
                raise WeightsMissingError(
                    f"No severity grader could be loaded. Primary {name!r}: {_reason(name, primary_exc)}. "
                    f"Fallback {str(fallback)!r}: {_reason(str(fallback), fallback_exc)}. {FIX}"
                ) from fallback_exc
            log.warning("Severity grader %r could not be loaded (%s); using the fallback %r.",
                        name, _short(primary_exc), str(fallback))
            return grader

    @classmethod
    def _load_one(cls, name: str, device: str, backend: str = "torch", cache_dir=None, threads=None,
                  int8: bool = False) -> "SeverityGrader":
        path = Path(name).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise WeightsMissingError(f"{path / 'config.json'} is missing")
            source, kwargs = str(path), {"local_files_only": True}
        elif not _HUB_ID.match(name) or path.is_absolute() or name.startswith((".", "~")):
            raise WeightsMissingError(f"the folder {path} does not exist")
        else:
            source, kwargs = name, {}
            cached, offline = _hub_cached(name, "config.json") is not None, _hub_offline()
            if offline and not cached:
                # Fails fast, before importing transformers (as it would fail after importing it).
                raise OSError(f"{name} is not in the Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE)")
            if not offline and not _hub_reachable():
                # huggingface_hub would retry for ~25 s, logging each try, before giving up.
                if not cached:
                    raise OSError(f"{name} is not in the Hugging Face cache and the Hub cannot be reached")
                kwargs = {"local_files_only": True}
        if backend == "onnx":
            # A warm ONNX cache needs neither transformers nor torchvision: a faster, leaner start.
            grader = _load_from_cache(cls, name, path if path.is_dir() else None, device, cache_dir, threads, int8)
            if grader is not None:
                return grader
        from transformers import AutoConfig, AutoImageProcessor

        _register_our_models()

        def load_model() -> torch.nn.Module:
            from transformers import AutoModelForImageClassification

            return AutoModelForImageClassification.from_pretrained(source, dtype=torch.float32, **kwargs)

        if backend != "onnx":
            model = load_model()
            return cls(model, AutoImageProcessor.from_pretrained(source, **kwargs), name=name, device=device,
                       dtype=runtime.torch_dtype(backend))
        config = AutoConfig.from_pretrained(source, **kwargs)
        processor = AutoImageProcessor.from_pretrained(source, **kwargs)
        # Labels are checked (in __init__) before anything is exported.
        grader = cls(None, processor, name=name, device=device, config=config, model_loader=load_model)
        grader.runner = _onnx_runner(grader, path if path.is_dir() else None, cache_dir, threads, int8)
        if grader.runner is None:
            grader.model  # noqa: B018 - load the torch model now, not during the first request
        else:
            grader.backend = "onnx"
            grader.preprocess = _write_light_spec(grader, path if path.is_dir() else None, cache_dir, int8)
        return grader

    # ------------------------------------------------------------------ inference
    def _inputs(self, rgb: np.ndarray) -> torch.Tensor:
        if self.preprocess is not None:
            return _light_preprocess(self.preprocess, rgb).to(self.device)
        from PIL import Image

        batch = self.processor(images=Image.fromarray(rgb), return_tensors="pt")
        return batch["pixel_values"].to(self.device, torch.float32)

    def predict(self, rgb: np.ndarray) -> GraderResult:
        pixel_values = self._inputs(rgb)
        if self.runner is not None and tuple(pixel_values.shape[1:]) == self.runner.input_shape[1:]:
            logits = torch.from_numpy(self.runner(pixel_values.numpy()))[0].float()
        else:  # torch backend (or an input shape the export does not cover)
            with torch.inference_mode():
                logits = self._forward(pixel_values).logits[0].float()
        probs = torch.softmax(logits, dim=-1).tolist()
        best = int(np.argmax(probs))
        return GraderResult(model=self.name, level=self.levels[best],
                            level_scores={label: float(p) for label, p in zip(self.labels, probs)})

    def _forward(self, pixel_values: torch.Tensor, **kwargs):
        # bf16 as autocast (matmuls in bf16; layer norms and softmax in fp32): casting the whole model
        # flipped the severity of 8 of 283 valid photos, autocast 5 (the guard allows 2%). The matmul
        # weights are already bf16 (_bf16_matmul_weights): autocast has nothing left to cast there.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16):
            return self.model(pixel_values=pixel_values, **kwargs)

    def explain(self, rgb: np.ndarray) -> np.ndarray:
        """HxW float32 heat map in 0..1 at input resolution: where the grader looked.

        A counting grader (acne.count_model) shows its lesion density map: exactly what its count, and
        so its grade, sums. Otherwise attention rollout (Abnar & Zuidema 2020) for ViT-like models, or
        occlusion sensitivity (a grey square slid over a grid; gradient-free, one batched pass).
        """
        pixel_values = self._inputs(rgb)
        with self._explain_lock, torch.inference_mode():
            heat = self._density(pixel_values)
            if heat is None:
                heat = self._attention_rollout(pixel_values)
            if heat is None:
                heat = self._occlusion(pixel_values)
        heat = heat - heat.min()
        heat = heat / heat.max() if heat.max() > 0 else heat
        return self._to_input_frame(heat.astype(np.float32), rgb.shape[1], rgb.shape[0])

    def _density(self, pixel_values: torch.Tensor) -> np.ndarray | None:
        if not hasattr(self.model, "density_head"):
            return None
        return self._forward(pixel_values).density[0].float().numpy()

    def _attention_rollout(self, pixel_values: torch.Tensor) -> np.ndarray | None:
        patch = getattr(self.model.config, "patch_size", None)
        if not isinstance(patch, int):
            return None
        impl = getattr(self.model.config, "_attn_implementation", None)
        switched = False
        try:
            if impl not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
                # sdpa returns no attention weights; eager does (same numbers, a little slower).
                self.model.set_attn_implementation("eager")
                switched = True
            attentions = self._forward(pixel_values, output_attentions=True).attentions
        except (TypeError, ValueError, NotImplementedError, AttributeError):
            return None
        finally:
            if switched:
                self.model.set_attn_implementation(impl)
        if not attentions or any(a is None for a in attentions):
            return None
        grid_h, grid_w = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
        tokens = attentions[0].shape[-1]
        prefix = tokens - grid_h * grid_w  # CLS (+ register / distillation tokens)
        if prefix < 1:
            return None
        eye = torch.eye(tokens)
        rollout = eye
        for layer in attentions:
            a = layer[0].float().mean(dim=0) + eye  # heads averaged, plus the residual path
            rollout = (a / a.sum(dim=-1, keepdim=True)) @ rollout
        return rollout[0, prefix:].reshape(grid_h, grid_w).numpy()

    def _occlusion(self, pixel_values: torch.Tensor, grid: int = 7, batch: int = 8) -> np.ndarray:
        base = torch.softmax(self._forward(pixel_values).logits[0].float(), dim=-1)
        target = int(base.argmax())
        h, w = pixel_values.shape[-2:]
        ys = np.linspace(0, h, grid + 1).astype(int)
        xs = np.linspace(0, w, grid + 1).astype(int)
        drops = []
        cells = [(i, j) for i in range(grid) for j in range(grid)]
        for start in range(0, len(cells), batch):
            chunk = cells[start:start + batch]
            occluded = pixel_values.repeat(len(chunk), 1, 1, 1)
            for k, (i, j) in enumerate(chunk):
                occluded[k, :, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = 0.0  # 0 = the normalised mean colour
            probs = torch.softmax(self._forward(occluded).logits.float(), dim=-1)[:, target]
            drops.extend((base[target] - probs).tolist())
        return np.clip(np.array(drops, dtype=np.float32).reshape(grid, grid), 0, None)

    def _to_input_frame(self, heat: np.ndarray, width: int, height: int) -> np.ndarray:
        """Resize a heat map over the model's input back onto the photo, undoing a centre crop."""
        p = self.processor
        crop = getattr(p, "crop_size", None) if getattr(p, "do_center_crop", False) else None
        size = getattr(p, "size", None)
        if crop is None or size is None or crop.get("height") is None:
            return cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
        if size.get("shortest_edge"):
            sx = sy = size.get("shortest_edge") / min(width, height)
        elif size.get("height") and size.get("width"):
            sx, sy = size.get("width") / width, size.get("height") / height
        else:
            return cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
        crop_w, crop_h = crop.get("width"), crop.get("height")
        left = (width * sx - crop_w) / 2 / sx
        top = (height * sy - crop_h) / 2 / sy
        x0, y0 = round(left), round(top)
        x1, y1 = round(left + crop_w / sx), round(top + crop_h / sy)
        patch = cv2.resize(heat, (max(1, x1 - x0), max(1, y1 - y0)), interpolation=cv2.INTER_LINEAR)
        out = np.zeros((height, width), np.float32)
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        out[cy0:cy1, cx0:cx1] = patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        return out


def _bf16_matmul_weights(model: torch.nn.Module) -> None:
    """Store the weights autocast would cast to bf16 on every call (linear and conv layers) as bf16 once.
    Autocast rounds them the same way, so the logits are bit-identical; the per-call cast of ~86M weights
    (ViT-B) is saved. Norms, embeddings and layer scales stay fp32: autocast keeps those ops in fp32,
    and so do the modules the model keeps in fp32 (`_keep_in_fp32_modules`, e.g. our density head)."""
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, module in model.named_modules():
        if any(part in keep for part in name.split(".")):
            continue
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            module.to(torch.bfloat16)


def _register_our_models() -> None:
    # Our grader's own model_type (acne.count_model) must be known before the Auto classes read a config.
    from .count_model import register

    register()


class _Logits(torch.nn.Module):
    # The exported graph: pixel values in, logits out.
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).logits


def _onnx_runner(grader: SeverityGrader, folder: Path | None, cache_dir, threads, int8: bool):
    """The classifier on ONNX Runtime, or None (logged) when that is not possible here."""

    # The export has a fixed input shape: only for processors whose output shape never changes.
    shapes = {tuple(grader._inputs(_probe_image(h, w)).shape) for h, w in ((480, 640), (640, 480), (300, 300))}
    if len(shapes) != 1:
        log.info("Grader %s: input shape depends on the photo; running on PyTorch.", grader.name)
        return None
    example = grader._inputs(_probe_image(480, 640)).numpy()
    try:
        weights = _local_weights(folder) if folder is not None else None
        model = None
        if weights is None:  # Hub model: hash the loaded weights
            model = grader._model_loader()
            weights_key = runtime.state_dict_fingerprint(model)
        else:
            weights_key = runtime.fingerprint(*weights)
        key = runtime.export_key("grader", weights_key, shape="x".join(map(str, example.shape[1:])))

        def module():
            return _Logits((model if model is not None else grader._model_loader()).float()).eval()

        return runtime.cached_onnx(cache_dir, key, module, example, threads=runtime.resolve_threads(threads or 0),
                                   int8=int8)
    except runtime.ExportError as exc:  # ONNX is an optimisation: PyTorch computes the same
        log.warning("Grader %s: ONNX Runtime not used (%s); running on PyTorch.", grader.name, exc)
        return None


# ---------------------------------------------------------------------- the warm, transformers-free path
#
# transformers' image processors import torchvision, which imports torch._dynamo: about half of a
# warm start and 250 MB of memory. For the common processors (a fixed-size resize, rescale,
# normalise) the same tensor ops are run here, and only where they reproduce the processor's output
# bit for bit on check images (tested when the model is exported; the result is cached with it).

def _light_preprocess(spec: dict, rgb: np.ndarray) -> torch.Tensor:
    """What the TorchvisionBackend processor does for `spec`: uint8 CHW, antialiased resize, then
    the fused rescale + normalise. Returns 1x3xHxW float32."""
    image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).unsqueeze(0)  # a fresh CHW copy
    height, width = spec["size"]
    if tuple(image.shape[-2:]) != (height, width):
        mode = spec["mode"]
        native = mode == "bicubic" or torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
        x = image if native else image.to(torch.float32)
        x = torch.nn.functional.interpolate(x, size=[height, width], mode=mode, align_corners=False,
                                            antialias=True)
        if not native:
            image = x.round_().to(torch.uint8)
        else:
            image = x
    mean = torch.tensor(spec["mean"]) * (1.0 / spec["rescale_factor"])
    std = torch.tensor(spec["std"]) * (1.0 / spec["rescale_factor"])
    return image.to(torch.float32).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


def _light_spec(processor) -> dict | None:
    """The processor as a spec for _light_preprocess, or None when it does more than that covers."""
    get = lambda name, default=None: getattr(processor, name, default)  # noqa: E731
    size = get("size") or {}
    size = dict(size) if isinstance(size, dict) else dict(vars(size)) if hasattr(size, "__dict__") else {}
    size = {k: v for k, v in size.items() if v is not None}  # SizeDict (a dataclass) or a plain dict
    resample = int(get("resample", 2) if get("resample") is not None else 2)
    if (get("backend") not in (None, "torchvision") or not get("do_resize", True) or set(size) != {"height", "width"}
            or get("do_center_crop") or get("do_pad") or not get("do_rescale") or not get("do_normalize")
            or resample not in (2, 3) or get("image_mean") is None or get("image_std") is None):
        return None
    mean, std = list(get("image_mean")), list(get("image_std"))
    if len(mean) != 3 or len(std) != 3:
        return None
    return {"size": [int(size["height"]), int(size["width"])], "mode": "bilinear" if resample == 2 else "bicubic",
            "rescale_factor": float(get("rescale_factor")), "mean": [float(v) for v in mean],
            "std": [float(v) for v in std]}


def _spec_path(folder: Path, cache_dir, int8: bool) -> Path | None:

    weights = _local_weights(folder)
    if weights is None:
        return None
    extra = [folder / "preprocessor_config.json"] if (folder / "preprocessor_config.json").is_file() else []
    try:
        from importlib.metadata import version

        versions = f"transformers={version('transformers')},torchvision={version('torchvision')}"
    except Exception:  # noqa: BLE001 - no versions, no light path
        return None
    key = runtime.export_key("grader-light", runtime.fingerprint(*weights, *extra), versions=versions, int8=int8)
    return (Path(cache_dir).expanduser() if cache_dir else runtime.default_cache_dir()) / f"{key}.json"


def _write_light_spec(grader: SeverityGrader, folder: Path | None, cache_dir, int8: bool) -> dict | None:
    """After an export: record the light preprocessing if it reproduces the processor exactly here."""
    import json

    spec = _light_spec(grader.processor)
    path = _spec_path(folder, cache_dir, int8) if folder is not None and spec is not None else None
    if path is None:
        return None
    from PIL import Image

    checks = [_probe_image(480, 640), _probe_image(640, 480), _probe_image(300, 300),
              np.random.default_rng(0).integers(0, 256, (513, 701, 3), dtype=np.uint8)]
    for rgb in checks:
        expected = grader.processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
        if not torch.equal(_light_preprocess(spec, rgb), expected.to(torch.float32)):
            log.info("Grader %s: processor not reproduced exactly; keeping transformers' processor.", grader.name)
            return None
    record = dict(spec, onnx=grader.runner.path.name, labels=grader.labels)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        log.info("Grader %s: could not cache the preprocessing spec (%s).", grader.name, exc)
        return spec
    return spec


def _load_from_cache(cls, name: str, folder: Path | None, device: str, cache_dir, threads, int8: bool):
    """The grader from a warm cache (exported model + checked preprocessing), or None."""
    import json
    from types import SimpleNamespace


    if folder is None:
        folder = _hub_snapshot(name)
        if folder is None:
            return None
    path = _spec_path(folder, cache_dir, int8)
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        onnx = path.parent / record["onnx"]
        labels = list(record["labels"])
        spec = {k: record[k] for k in ("size", "mode", "rescale_factor", "mean", "std")}
        runner = runtime.OnnxModel(onnx, runtime.resolve_threads(threads or 0))
    except Exception as exc:  # noqa: BLE001 - a stale or damaged entry: take the full path
        log.info("Grader %s: cached ONNX entry not usable (%s); loading it the full way.", name, exc)
        return None
    source = str(folder)

    def load_model() -> torch.nn.Module:
        from transformers import AutoModelForImageClassification

        _register_our_models()
        return AutoModelForImageClassification.from_pretrained(source, dtype=torch.float32, local_files_only=True)

    def load_processor():
        from transformers import AutoImageProcessor

        _register_our_models()
        return AutoImageProcessor.from_pretrained(source, local_files_only=True)

    config = SimpleNamespace(id2label=dict(enumerate(labels)), num_labels=len(labels))
    return cls(None, None, name=name, device=device, config=config, runner=runner, model_loader=load_model,
               processor_loader=load_processor, preprocess=spec)


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a Hub model already in the Hugging Face cache (no network)."""
    found = [_hub_cached(repo_id, f) for f in ("config.json", "model.safetensors")]
    return None if None in found else found[0].parent


def _hub_cached(repo_id: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # noqa: BLE001 - no cache, bad id: not cached
        return None
    return Path(found) if isinstance(found, str) else None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the Hub endpoint be opened within `timeout` seconds? A behind-a-proxy
    setup cannot be probed this way: then assume yes and let huggingface_hub decide."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        from huggingface_hub import constants

        endpoint = urlparse(constants.ENDPOINT)
    except (ImportError, ValueError):
        return True
    host = endpoint.hostname
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    if not host:
        return True
    outcome: list[bool] = []

    def probe() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(outcome and outcome[0])


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def _probe_image(height: int, width: int) -> np.ndarray:
    # A smooth, deterministic colour image: the export's check input.
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)


def _local_weights(folder: Path) -> list[Path] | None:
    config = folder / "config.json"
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [config, folder / name]
    return None  # sharded or unusual layouts: hash the loaded weights instead


def _as_weights_error(name: str, exc: BaseException) -> WeightsMissingError:
    if isinstance(exc, WeightsMissingError):
        return type(exc)(f"Severity grader {name!r}: {exc}. {FIX}")
    kind = WeightsCorruptError if Path(name).expanduser().is_dir() else WeightsMissingError
    return kind(f"Severity grader {name!r} could not be loaded: {_reason(name, exc)}. {FIX}")


def _reason(name: str, exc: BaseException) -> str:
    path = Path(name).expanduser()
    if isinstance(exc, WeightsMissingError):
        return str(exc)
    if path.is_dir():
        return f"the files in {path} could not be read ({_short(exc)})"
    if isinstance(exc, OSError):
        return ("not a local folder, and not in the Hugging Face cache with the Hub unreachable "
                f"({_short(exc)})")
    return _short(exc)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

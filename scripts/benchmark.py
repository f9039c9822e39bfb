"""Speed benchmark (issue 7): the seed Space's pipeline against our analyzer, in ONE run, alternating.

Variants, run photo by photo in rotating order on the same valid photos:
  reference     the seed Space's pipeline, written here: albumentations Resize(256, 256) + ImageNet
                Normalize + ToTensorV2, eager fp32 UNet-ResNet34, sigmoid, threshold 0.3, mask resized
                back with INTER_NEAREST, cv2.addWeighted overlay, then transformers
                pipeline("image-classification") with a ViT-B/16 with skintelligent-acne's 5 labels;
                model calls under torch.no_grad().
  ours-same     our analyzer doing the same work: UNet input 256, that ViT-B/16 folder as grader.
  ours-default  our analyzer as shipped (Settings defaults; weights/segmenter, weights/grader).
The ViT-B/16 has random weights (same shapes and processor as skintelligent-acne: timing only). When
weights/segmenter is missing, the segmenter training run's best checkpoint (runs/segmenter/best.pt) is
used if there, else a random ResNet34-UNet (2 channels, input 384); when weights/grader is missing, a
random DINOv2-S/14 classifier at 448 px (labels level 0..3). The output says which. The reference and
ours-same use the same UNet weights as ours-default (channel 0 for the reference).

Also measured: cold start (fresh process: imports + model load -> first report), peak RSS (one
subprocess per variant), throughput of `python -m acne analyze` over 50 photos, and each speed lever
on its own (A/B alternated). Prints a table and writes JSON. About 5-8 minutes on an idle 2-core machine.

    python scripts/benchmark.py                       # N=20 photos, 50 for throughput
    python scripts/benchmark.py --n 3 --throughput-n 5 --no-levers   # smoke run
    python scripts/benchmark.py --guard               # accuracy guard, real weights, all valid photos

--guard compares each fast path (ONNX Runtime fp32, PyTorch bfloat16 autocast) with plain fp32 PyTorch on
real valid photos with the real weights in weights/: severity identical on >= 98% of photos, mean mask
Dice >= 0.95, lesion count within +-1 on >= 95% (acne.runtime.GUARD). ACNE_BACKEND=auto checks the same
guard on one probe photo when it chooses; this checks it on many. It exits 1 when a fast path fails.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Read when huggingface_hub is first imported: the shipped grader is a Hub id that must fail fast
# here (no Hub) and fall back to weights/grader, as the app does offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent

VALID_DIR = Path(os.environ.get("ACNE04_DIR", ROOT.parent / "shared" / "data" / "acne04")) / "images" / "valid"
WORK_DIR = ROOT / "runs" / "benchmark"
VARIANTS = ("reference", "ours-same", "ours-default")
STAGES = ("decode", "region", "skin_check", "segment", "grade", "post", "total")
LEVELS_5 = ["level -1", "level 0", "level 1", "level 2", "level 3"]
LEVELS_4 = ["level 0", "level 1", "level 2", "level 3"]
REF_THRESHOLD = 0.3
REF_SIZE = 256


# =============================================================================== models

def prepare_models(work: Path) -> dict:
    """Folders of every model the variants use; builds (once, cached in `work`) what is missing."""
    work.mkdir(parents=True, exist_ok=True)
    notes = []
    vit = work / "vit-b16-5labels-random"
    if not (vit / "model.safetensors").is_file():
        _save_vit_b16(vit)
    segmenter = ROOT / "weights" / "segmenter"
    checkpoint = ROOT / "runs" / "segmenter" / "best.pt"
    if not (segmenter / "model.safetensors").is_file() and checkpoint.is_file():
        segmenter = work / "standin-segmenter-training-checkpoint"
        step = _save_checkpoint_unet(checkpoint, segmenter)
        notes.append(f"weights/segmenter missing: the segmenter training run's best checkpoint so far "
                     f"({checkpoint.relative_to(ROOT)}, step {step}) was used, at input 384")
    elif not (segmenter / "model.safetensors").is_file():
        segmenter = work / "standin-segmenter-resnet34-unet-384"
        if not (segmenter / "model.safetensors").is_file():
            _save_standin_unet(segmenter)
        notes.append("weights/segmenter missing: a random-weight stand-in (ResNet34-UNet, 2 channels, input 384) "
                     "was used; its probability maps are not real ones, so post-processing times are not "
                     "representative (see levers.find_lesions_ms_on_annotation_maps)")
    grader = ROOT / "weights" / "grader"
    if not (grader / "config.json").is_file():
        grader = work / "standin-grader-dinov2-s14-448"
        if not (grader / "model.safetensors").is_file():
            _save_standin_dinov2(grader)
        notes.append("weights/grader missing: a random-weight stand-in (Dinov2ForImageClassification, "
                     "DINOv2-S/14, 448 px, levels 0..3) was used as the grader fallback")
    return {"vit": vit, "segmenter": segmenter, "grader_fallback": grader, "notes": notes}


def _save_vit_b16(folder: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(num_labels=5, id2label=dict(enumerate(LEVELS_5)),  # defaults = ViT-B/16 at 224
                       label2id={label: i for i, label in enumerate(LEVELS_5)})
    ViTForImageClassification(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(folder)


def _save_standin_unet(folder: Path) -> None:
    import torch
    from acne.models import build_unet

    torch.manual_seed(0)
    build_unet(classes=2).eval().half().save_pretrained(str(folder))  # fp16 on disk, as train_segmenter.py
    (folder / "inference.json").write_text(json.dumps({
        "channels": ["lesion", "center"], "input_size": 384, "threshold": 0.5, "center_threshold": 0.5,
        "min_area_px": 4, "metrics": {"note": "random weights: benchmark stand-in"}}, indent=2))


def _save_checkpoint_unet(checkpoint: Path, folder: Path) -> int:
    """weights/segmenter's format from a training checkpoint (rebuilt when the checkpoint changes)."""
    info_path = folder / "inference.json"
    stamp = checkpoint.stat().st_mtime_ns
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("checkpoint_mtime_ns") == stamp:
            return info.get("trained_steps", -1)
    import torch
    from acne.models import build_unet

    # The project's own checkpoint (it holds optimizer and RNG state, hence weights_only=False).
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = build_unet(classes=2)
    model.load_state_dict(ckpt["model"])
    model.eval().half().save_pretrained(str(folder))
    best = ckpt.get("best") or {}
    info_path.write_text(json.dumps({
        "channels": ["lesion", "center"], "input_size": 384, "threshold": 0.5,
        "center_threshold": float(best.get("center_threshold", 0.5)), "min_area_px": 4,
        "trained_steps": int(ckpt.get("step", -1)), "checkpoint_mtime_ns": stamp}, indent=2))
    return int(ckpt.get("step", -1))


def _save_standin_dinov2(folder: Path) -> None:
    import torch
    from PIL import Image
    from transformers import BitImageProcessor, Dinov2Config, Dinov2ForImageClassification

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                          patch_size=14, image_size=518, num_labels=4, id2label=dict(enumerate(LEVELS_4)),
                          label2id={label: i for i, label in enumerate(LEVELS_4)})
    Dinov2ForImageClassification(config).eval().half().save_pretrained(folder)
    from acne.imaging import IMAGENET_MEAN, IMAGENET_STD

    # As scripts/train_grader.py build_processor(448): square bicubic resize, no crop, ImageNet mean/std.
    BitImageProcessor(do_resize=True, size={"height": 448, "width": 448}, resample=Image.BICUBIC,
                      do_center_crop=False, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                      image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                      do_convert_rgb=True).save_pretrained(folder)


def settings_for(variant: str, models: dict, **extra):
    """acne Settings of our two variants (shipped defaults, with stand-ins where weights are missing)."""
    import dataclasses
    from acne.config import Settings

    base = Settings.from_env()
    if variant == "ours-same":
        return dataclasses.replace(base, segmenter=str(models["segmenter"]), grader=str(models["vit"]),
                                   grader_fallback=str(models["vit"]), seg_size=REF_SIZE, **extra)
    if variant == "ours-default":
        return dataclasses.replace(base, segmenter=str(models["segmenter"]),
                                   grader_fallback=str(models["grader_fallback"]), **extra)
    raise ValueError(variant)


def model_env(variant: str, models: dict, **extra: str) -> dict:
    """Environment for a subprocess of our analyzer (CLI, cold start) with the same settings."""
    env = dict(os.environ)
    env.update({"ACNE_SEGMENTER": str(models["segmenter"]),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))})
    if variant == "ours-same":
        env.update({"ACNE_GRADER": str(models["vit"]), "ACNE_GRADER_FALLBACK": str(models["vit"]),
                    "ACNE_SEG_SIZE": str(REF_SIZE)})
    else:
        env["ACNE_GRADER_FALLBACK"] = str(models["grader_fallback"])
    env.update(extra)
    return env


# =============================================================================== the seed's pipeline

class ReferencePipeline:
    """The seed Space's pipeline, as it did it (see the module docstring)."""

    def __init__(self, unet_dir: Path, vit_dir: Path):
        import contextlib
        import io

        import albumentations as A
        import segmentation_models_pytorch as smp
        import torch
        from albumentations.pytorch import ToTensorV2
        from transformers import pipeline

        from acne import runtime

        self.torch, self.threads = torch, runtime.resolve_threads(0)
        self.transform = A.Compose([A.Resize(REF_SIZE, REF_SIZE), A.Normalize(), ToTensorV2()])
        with contextlib.redirect_stdout(io.StringIO()):
            self.unet = smp.from_pretrained(str(unet_dir), encoder_weights=None).float().eval()
        self.classifier = pipeline("image-classification", model=str(vit_dir), device="cpu")

    def run(self, path: Path) -> dict:
        import cv2
        import numpy as np
        from PIL import Image

        torch = self.torch
        # All the machine's threads, whatever our analyzers (alternated in this process) set before.
        torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        image = Image.open(path).convert("RGB")
        rgb = np.array(image)
        t1 = time.perf_counter()
        x = self.transform(image=rgb)["image"].unsqueeze(0)
        with torch.no_grad():
            prob = torch.sigmoid(self.unet(x))[0, 0].numpy()
        t2 = time.perf_counter()
        mask = (prob > REF_THRESHOLD).astype(np.uint8)
        mask = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        colored = np.zeros_like(rgb)
        colored[mask == 1] = (255, 0, 0)
        overlay = cv2.addWeighted(rgb, 0.7, colored, 0.3, 0)
        t3 = time.perf_counter()
        with torch.no_grad():
            scores = self.classifier(image)
        t4 = time.perf_counter()
        assert overlay.shape == rgb.shape and scores
        return {"decode": t1 - t0, "region": 0.0, "skin_check": 0.0, "segment": t2 - t1, "post": t3 - t2, "grade": t4 - t3,
                "total": t4 - t0}


class OursPipeline:
    def __init__(self, analyzer):
        self.analyzer = analyzer

    def run(self, path: Path) -> dict:
        t0 = time.perf_counter()
        analysis = self.analyzer.run(path)
        t1 = time.perf_counter()
        overlay = analysis.overlay()  # the app shows it: part of the work, as the seed's addWeighted
        t2 = time.perf_counter()
        assert overlay.shape == analysis.image.shape
        t = {k: v / 1e3 for k, v in analysis.report.timings_ms.items()}
        segment = t["segment"] - t["postprocess"]
        # post = lesion splitting + mask upsampling + report (quality checks) + overlay drawing. With the models
        # in parallel, segment and grade overlap: the stages then add up to more than the total.
        # Side by side, the skin check runs before the segmenter, within `models`' wall time.
        beside = t["decode"] + t["region"] + t["skin_check"] + t["models"] > t["total"] + 1e-3
        check = 0.0 if beside else t["skin_check"]
        post = t["postprocess"] + (t1 - t0) - t["decode"] - t["region"] - check - t["models"] + (t2 - t1)
        return {"decode": t["decode"], "region": t["region"], "skin_check": t["skin_check"], "segment": segment,
                "grade": t["grade"], "post": post, "total": t2 - t0}


def load_variant(variant: str, models: dict, **extra):
    if variant == "reference":
        return ReferencePipeline(models["segmenter"], models["vit"])
    from acne.analysis import load_analyzer

    return OursPipeline(load_analyzer(settings_for(variant, models, **extra)))


# =============================================================================== measurements

def machine_info() -> dict:
    import torch

    from acne import fastpath, runtime

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu_model": model, "os_cpu_count": os.cpu_count(), "usable_cpus": runtime.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_start": os.getloadavg(),
            "native_bf16": fastpath.native_bf16(), "cpu": fastpath.cpu_model()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def pick_photos(n: int, valid_dir: Path = VALID_DIR) -> list[Path]:
    """n photos spread evenly over the sorted valid set (file names start with the grade: all grades)."""
    photos = sorted(valid_dir.glob("*.jpg"))
    if not photos:
        sys.exit(f"no photos in {valid_dir} (set ACNE04_DIR)")
    if n <= 0 or n >= len(photos):
        return photos
    step = len(photos) / n
    return [photos[int(i * step)] for i in range(n)]


def summarise(values: list[float]) -> dict:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * (len(ordered) - 1))))]
    return {"p50": statistics.median(ordered), "p95": p95, "mean": statistics.fmean(ordered), "n": len(ordered)}


def timed_runs(pipelines: dict, photos: list[Path], warmup: int) -> dict:
    """Alternate the variants photo by photo (rotating which goes first) and collect stage times."""
    names = list(pipelines)
    for path in photos[:warmup]:  # first calls pay one-off costs (allocators, kernels): not counted
        for name in names:
            pipelines[name].run(path)
    samples = {name: {stage: [] for stage in STAGES} for name in names}
    for i, path in enumerate(photos):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            for stage, seconds in pipelines[name].run(path).items():
                samples[name][stage].append(seconds)
    return {name: {stage: summarise(v) for stage, v in stages.items()} for name, stages in samples.items()}


def run_child(cmd: list[str], env: dict, timeout: float = 600) -> dict:
    """A fresh process; its last stdout line is JSON. Adds the wall time from spawn to its first report."""
    start = time.time()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cold_start_s"] = result.pop("first_report_at") - start
    return result


def cold_start_and_rss(variant: str, models: dict, photos: list[Path], extra_env: dict | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--photos", *map(str, photos)]
    env = model_env(variant, models, **(extra_env or {}))
    return run_child(cmd, env)


def child_main(variant: str, photo_paths: list[str]) -> None:
    """Runs in the fresh process: imports and loads as the variant would, reports the first photo's
    time, then the rest, then the peak RSS."""
    t_import = time.time()
    models = json.loads(os.environ["BENCH_MODELS"])
    models = {k: Path(v) if isinstance(v, str) else v for k, v in models.items()}
    if variant == "reference":
        pipeline = ReferencePipeline(models["segmenter"], models["vit"])
        pipeline.run(Path(photo_paths[0]))
    else:
        import acne

        analyzer = acne.load_analyzer()  # everything from the environment, as the CLI and app do
        analyzer.analyze(photo_paths[0])
        pipeline = OursPipeline(analyzer)
    first = time.time()
    for path in photo_paths[1:]:
        pipeline.run(Path(path))
    backend = None if variant == "reference" else [analyzer.segmenter.backend, analyzer.grader.backend]
    print(json.dumps({"first_report_at": first, "in_process_s": first - t_import, "backends": backend,
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process image since exec; ru_maxrss
    would report the (bigger) parent's peak, inherited through fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cli_throughput(models: dict, photos: list[Path]) -> dict:
    """`python -m acne analyze` over the photos (ours-default settings), wall time, streaming output."""
    env = model_env("ours-default", models)
    cmd = [sys.executable, "-m", "acne", "analyze", *map(str, photos), "--json"]
    start = time.perf_counter()
    stamps, ok = [], 0
    with subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            stamps.append(time.perf_counter())
            ok += bool(json.loads(line).get("ok"))
        stderr = proc.stderr.read()
    wall = time.perf_counter() - start
    if proc.returncode != 0 or ok != len(photos):
        raise RuntimeError(f"acne analyze failed ({proc.returncode}, {ok}/{len(photos)} ok): {stderr[-2000:]}")
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    return {"photos": len(photos), "wall_s": wall, "photos_per_s": len(photos) / wall,
            "start_to_first_result_s": stamps[0] - start, "steady_s_per_photo": steady}


# =============================================================================== levers

def ab(fns: dict, reps: int, warmup: int = 1) -> dict:
    """Median seconds per call of each function, alternated call by call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for i in range(reps):
        names = list(fns)
        for name in names[i % len(names):] + names[:i % len(names)]:
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return {name: round(statistics.median(v), 4) for name, v in times.items()}


def measure_levers(models: dict, photos: list[Path], reps: int, cache_dir: str) -> dict:
    """Each lever on its own, on the ours-default models (A/B alternated, median seconds)."""
    import numpy as np
    import torch

    from acne import fastpath, runtime
    from acne.grader import load_grader
    from acne.imaging import load_image
    from acne.lesions import find_lesions
    from acne.models.classifier import light_preprocess
    from acne.segmenter import load_segmenter

    threads = runtime.resolve_threads(0)
    rgb = load_image(photos[0])
    out: dict = {"threads": threads}

    seg_torch = load_segmenter(models["segmenter"])
    seg_onnx = load_segmenter(models["segmenter"], backend="onnx", cache_dir=cache_dir,
                                               threads=threads)
    seg_bf16 = load_segmenter(models["segmenter"], backend="bf16")
    side = -(-seg_torch.input_size // 32) * 32
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, side, side), dtype=np.float32))
    contiguous = seg_torch.model  # channels_last since load; a contiguous copy for the A/B
    import copy

    plain = copy.deepcopy(contiguous).to(memory_format=torch.contiguous_format)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def unet(model, tensor, mode):
        with mode():
            model(tensor)

    out[f"unet_forward_{side}"] = ab({
        "torch_no_grad_contiguous": lambda: unet(plain, x, torch.no_grad),
        "torch_inference_mode_contiguous": lambda: unet(plain, x, torch.inference_mode),
        "torch_inference_mode_channels_last": lambda: unet(contiguous, x_cl, torch.inference_mode),
        "onnxruntime": lambda: seg_onnx.runner(x),
        "torch_bf16_encoder_and_coarse_decoder": lambda: unet(seg_bf16.runner.module, x_cl, torch.inference_mode),
    }, reps)
    del plain

    grader_torch = load_grader(models["grader_fallback"])
    grader_onnx = load_grader(models["grader_fallback"], backend="onnx", cache_dir=cache_dir,
                                      threads=threads)
    grader_bf16 = load_grader(models["grader_fallback"], backend="bf16")
    out["grader_predict"] = ab({"torch": lambda: grader_torch.predict(rgb),
                                "onnxruntime": lambda: grader_onnx.predict(rgb),
                                "torch_bf16": lambda: grader_bf16.predict(rgb)}, reps)
    # bf16 attention: the fused kernel or plain matmuls (fastpath.fastest_attention picks one per machine).
    kernels = {}
    for kernel in fastpath.ATTENTION:
        kernels[kernel] = load_grader(models["grader_fallback"], backend="bf16")
        kernels[kernel].runner.module.set_attn_implementation(kernel)
    out["grader_bf16_attention"] = ab({k: (lambda g=g: g.predict(rgb)) for k, g in kernels.items()}, reps)
    del kernels
    if grader_onnx.built.spec is not None:
        out["grader_preprocess"] = ab({"transformers_processor": lambda: grader_torch.inputs(rgb),
                                       "light_same_numbers": lambda: light_preprocess(grader_onnx.built.spec, rgb)},
                                      reps)

    # Threads: what an un-capped thread count costs when the process really has fewer CPUs.
    many = max(4, 2 * threads)
    seg_many = load_segmenter(models["segmenter"], backend="onnx", cache_dir=cache_dir,
                                               threads=many)
    torch_before = torch.get_num_threads()

    def torch_many():
        torch.set_num_threads(many)
        try:
            unet(contiguous, x_cl, torch.inference_mode)
        finally:
            torch.set_num_threads(torch_before)

    out["threads_unet"] = ab({f"onnxruntime_{threads}": lambda: seg_onnx.runner(x),
                              f"onnxruntime_{many}": lambda: seg_many.runner(x),
                              f"torch_{threads}": lambda: unet(contiguous, x_cl, torch.inference_mode),
                              f"torch_{many}": torch_many}, max(3, reps // 2))
    # Batching (what a batched CLI would gain): 4 photos in one forward vs 4 forwards, per photo.
    x4 = x_cl.repeat(4, 1, 1, 1).contiguous(memory_format=torch.channels_last)
    pv = grader_bf16.inputs(rgb)
    pv4 = pv.repeat(4, 1, 1, 1)

    def per_photo(fn, n):
        return lambda: [fn() for _ in range(n)]

    unet_batch = ab({"4_single": per_photo(lambda: unet(seg_bf16.runner.module, x_cl, torch.inference_mode), 4),
                     "1_batch_of_4": lambda: unet(seg_bf16.runner.module, x4, torch.inference_mode)}, max(3, reps // 2))
    grader_batch = ab({"4_single": per_photo(lambda: unet(grader_bf16.runner.forward, pv, torch.inference_mode), 4),
                       "1_batch_of_4": lambda: unet(grader_bf16.runner.forward, pv4, torch.inference_mode)},
                      max(3, reps // 2))
    out["batching_bf16_s_per_photo"] = {"unet": {k: round(v / 4, 4) for k, v in unet_batch.items()},
                                        "grader": {k: round(v / 4, 4) for k, v in grader_batch.items()}}
    del seg_many, grader_torch, grader_bf16, seg_torch, seg_bf16

    # ONNX Runtime's idle threads spin-wait after a run by default; what that costs the Python
    # post-processing that follows (quality checks and overlay drawing here).
    from acne.imaging import quality_warnings
    from acne.lesions import render_overlay

    spinning = runtime.OnnxModel(seg_onnx.runner.path, threads, spin=True)
    mask = np.zeros(rgb.shape[:2], bool)
    mask[::7, ::5] = True

    def run_then_post(runner):
        runner(x.numpy())
        quality_warnings(rgb)
        render_overlay(rgb, mask)

    out["ort_spinning_unet_then_post"] = ab({"spin_off (shipped)": lambda: run_then_post(seg_onnx.runner),
                                             "spin_on (onnxruntime default)": lambda: run_then_post(spinning)},
                                            reps)
    del spinning

    # The two models one after the other on all threads, or at once on half each (ACNE_PARALLEL): seconds per
    # photo, median over photos of each photo's alternated median.
    from acne.analysis import load_analyzer

    out["models_in_parallel_s_per_photo"] = {}
    for variant in ("ours-same", "ours-default"):
        by_mode = {mode: load_analyzer(settings_for(variant, models, parallel=mode)) for mode in ("off", "on")}
        per_photo = [ab({mode: lambda a=a, p=p: a.run(p) for mode, a in by_mode.items()}, max(3, reps // 2))
                     for p in photos[:6]]
        out["models_in_parallel_s_per_photo"][variant] = {
            mode: round(statistics.median(r[mode] for r in per_photo), 4) for mode in by_mode}
        del by_mode

    # Post-processing on lesion maps drawn from the valid annotations (real lesion layouts),
    # densest photos first: find_lesions' cost grows with the lesion count.
    maps = annotation_maps(seg_onnx.input_size, 8)
    out["find_lesions_ms_on_annotation_maps"] = {
        f"{n}_lesions": round(1e3 * ab({"find_lesions": lambda p=p, c=c: find_lesions(
            p, c, threshold=0.5, center_threshold=0.3)}, 5)["find_lesions"], 2) for n, p, c in maps}
    return out


def annotation_maps(size: int, count: int):
    """(lesion count, lesion map, centre map) at the UNet's resolution from valid boxes, densest first."""
    import cv2
    import numpy as np

    data = json.loads((VALID_DIR.parent.parent / "annotations" / "valid.json").read_text())
    boxes: dict = {}
    for a in data["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])
    images = sorted(data["images"], key=lambda im: -len(boxes.get(im["id"], [])))
    picks = images[:count // 2] + images[len(images) // 3:len(images) // 3 + count - count // 2]
    rng = np.random.default_rng(0)
    out = []
    for im in picks:
        s = size / max(im["width"], im["height"])
        lesion = np.zeros((size, size), np.float32)
        centre = np.zeros((size, size), np.float32)
        for x, y, w, h in boxes.get(im["id"], []):
            c = (int((x + w / 2) * s), int((y + h / 2) * s))
            cv2.ellipse(lesion, c, (max(1, int(w * s / 2)), max(1, int(h * s / 2))), 0, 0, 360, 1.0, -1)
            cv2.circle(centre, c, 2, 1.0, -1)
        lesion = cv2.GaussianBlur(lesion, (0, 0), 2)
        centre = cv2.GaussianBlur(centre, (0, 0), 1.5)
        centre /= max(float(centre.max()), 1e-6)
        noise = rng.normal(0, 0.04, lesion.shape).astype(np.float32)
        out.append((len(boxes.get(im["id"], [])), np.clip(lesion * 0.9 + noise, 0, 1),
                    np.clip(centre + noise * 0.5, 0, 1)))
    return out


# =============================================================================== accuracy guard

def guard(args) -> dict:
    """Fast paths vs plain fp32 PyTorch on real valid photos with the real weights."""
    import dataclasses

    from acne import runtime
    from acne.analysis import load_analyzer
    from acne.config import Settings

    segmenter, grader = ROOT / "weights" / "segmenter", ROOT / "weights" / "grader"
    missing = [str(p) for p in (segmenter / "model.safetensors", grader / "config.json") if not p.is_file()]
    if missing and not args.allow_stand_ins:
        sys.exit(f"--guard needs the real weights; missing: {', '.join(missing)} (or --allow-stand-ins)")
    models = prepare_models(args.work)
    base = dataclasses.replace(Settings.from_env(), segmenter=str(models["segmenter"]),
                               grader_fallback=str(models["grader_fallback"]),
                               cache_dir=args.cache_dir or Settings.from_env().cache_dir)
    analyzers = {"fp32-torch": load_analyzer(dataclasses.replace(base, backend="torch", parallel="off")),
                 "onnx": load_analyzer(dataclasses.replace(base, backend="onnx", parallel="off")),
                 "bf16": load_analyzer(dataclasses.replace(base, backend="bf16", parallel="off"))}
    photos = pick_photos(args.guard_n)
    pairs = {name: [] for name in analyzers if name != "fp32-torch"}
    started = time.perf_counter()
    for i, path in enumerate(photos):
        reference = analyzers["fp32-torch"].run(path)
        for name in pairs:
            pairs[name].append((reference, analyzers[name].run(path)))
        if (i + 1) % 25 == 0:
            print(f"  guard: {i + 1}/{len(photos)} photos, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    # Keep only what agreement() reads: analyses hold full-size arrays.
    result = {"photos": len(photos), "notes": models["notes"],
              "backends": {name: [a.segmenter.backend, a.grader.backend] for name, a in analyzers.items()},
              "fast_paths": {name: runtime.agreement(p) for name, p in pairs.items()}}
    print("\nAccuracy guard (fast path vs plain fp32 PyTorch) on", len(photos), "valid photos")
    print(f"{'fast path':<18}{'severity same':>14}{'mask Dice':>11}{'Dice min':>10}{'count +-1':>11}  passed")
    for name, g in result["fast_paths"].items():
        print(f"{name:<18}{g['severity_agreement']:>14.3f}{g['mask_dice']:>11.4f}{g['mask_dice_min']:>10.4f}"
              f"{g['count_within_1']:>11.3f}  {g['passed']}")
    print(f"thresholds: {runtime.GUARD}")
    print("ACNE_BACKEND=auto keeps, per machine, the fastest fast path that passes this guard on its probe photo "
          "(acne.fastpath.choose).")
    return result


def region_step_12mp(photos: list[Path]) -> dict:
    """Time the region step alone on 4032 x 3024 phone-style photos (valid close-ups re-framed by
    acne.reframe), as the analysis runs it: on the decoded photo, threads as configured."""
    import numpy as np
    from PIL import Image

    from acne.config import Settings
    from acne.reframe import reframe
    from acne.region import RegionFinder
    from acne.runtime import resolve_threads

    settings = Settings.from_env()
    finder = RegionFinder.from_pretrained(settings.face_detector, threads=resolve_threads(settings.torch_threads))
    rng = np.random.default_rng(0)
    framed = [reframe(np.array(Image.open(p).convert("RGB")), rng=rng, frame=(4032, 3024))[0] for p in photos]
    finder.find(framed[0])   # first call pays one-off costs
    times, found = [], {}
    for rgb in framed:
        start = time.perf_counter()
        region = finder.find(rgb)
        times.append(time.perf_counter() - start)
        found[region.found_by] = found.get(region.found_by, 0) + 1
    return {**summarise(times), "found_by": found}


# =============================================================================== main

def print_table(result: dict) -> None:
    timing = result["timing"]
    print(f"\nPer-photo seconds over {result['n_photos']} valid photos, variants alternated (p50 / p95)")
    print(f"{'variant':<14}" + "".join(f"{stage:>16}" for stage in STAGES))
    for name, stages in timing.items():
        print(f"{name:<14}" + "".join(f"{stages[s]['p50']:>8.3f}/{stages[s]['p95']:<7.3f}" for s in STAGES))
    if "reference" in timing and "ours-same" in timing:
        ratio = timing["ours-same"]["total"]["p50"] / timing["reference"]["total"]["p50"]
        print(f"ours-same / reference p50 total: {ratio:.2f} (target <= 0.5)")
    if "ours-default" in timing:
        print(f"ours-default p50 total: {timing['ours-default']['total']['p50']:.3f} s (target <= 1.0)")
    if result.get("region_12mp"):
        r = result["region_12mp"]
        print(f"\nregion step (find the face or skin) on {r['n']} photos of 4032 x 3024: p50 {r['p50'] * 1e3:.1f} ms, "
              f"p95 {r['p95'] * 1e3:.1f} ms (target <= 60 ms); found by {r['found_by']}")
    if result.get("cold"):
        print(f"\n{'fresh process':<34}{'cold start s':>13}{'peak RSS MB':>13}  backends")
        for name, c in result["cold"].items():
            print(f"{name:<34}{c['cold_start_s']:>13.2f}{c['peak_rss_mb']:>13.0f}  {c.get('backends')}")
    if result.get("throughput"):
        t = result["throughput"]
        print(f"\npython -m acne analyze, {t['photos']} photos: {t['wall_s']:.1f} s wall, {t['photos_per_s']:.2f} "
              f"photos/s, first result after {t['start_to_first_result_s']:.1f} s, steady "
              f"{t['steady_s_per_photo']:.3f} s/photo")
    if result.get("levers"):
        print("\nLevers (median seconds per call, alternated):")
        for name, value in result["levers"].items():
            print(f"  {name}: {value}")
    m = result["machine"]
    print(f"\nMachine: {m['cpu_model']}; {m['usable_cpus']} usable CPUs (os.cpu_count {m['os_cpu_count']}); "
          f"torch threads {m['torch_threads']}; native bf16 {m.get('native_bf16')}; load average {m['load_average_start']} -> {m['load_average_end']}")
    for note in result["notes"]:
        print(f"NOTE: {note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="valid photos for the per-stage timings (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="photos run first and not counted")
    ap.add_argument("--throughput-n", type=int, default=50, help="photos for `python -m acne analyze` (0: skip)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--region-n", type=int, default=20,
                    help="12-megapixel re-framed photos for the region step's timing (0: skip)")
    ap.add_argument("--no-cold", action="store_true", help="skip cold start / peak RSS subprocesses")
    ap.add_argument("--no-levers", action="store_true", help="skip the per-lever measurements")
    ap.add_argument("--lever-reps", type=int, default=8)
    ap.add_argument("--rss-photos", type=int, default=5, help="photos each cold-start process analyses")
    ap.add_argument("--work", type=Path, default=WORK_DIR, help="stand-in models are built here once")
    ap.add_argument("--cache-dir", help="ONNX export cache (default: ACNE_CACHE_DIR or ~/.cache/acne-detection-ai)")
    ap.add_argument("--out", type=Path, help="JSON result (default: WORK/benchmark.json or WORK/guard.json)")
    ap.add_argument("--guard", action="store_true", help="run the accuracy guard instead of the timings")
    ap.add_argument("--guard-n", type=int, default=0, help="valid photos for --guard (0: all 283)")
    ap.add_argument("--allow-stand-ins", action="store_true", help="--guard with random stand-ins (smoke test)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--photos", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        child_main(args.child, args.photos)
        return 0
    if args.cache_dir:
        os.environ["ACNE_CACHE_DIR"] = args.cache_dir
    if args.guard:
        result = guard(args)
        out = args.out or args.work / "guard.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
        return 0 if all(g["passed"] for g in result["fast_paths"].values()) else 1

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}")
    started = time.perf_counter()
    models = prepare_models(args.work)
    os.environ["BENCH_MODELS"] = json.dumps({k: str(v) for k, v in models.items() if k != "notes"})
    machine = machine_info()
    photos = pick_photos(args.n + args.warmup)
    warm, timed = photos[:args.warmup], photos[args.warmup:]
    result: dict = {"n_photos": len(timed), "photos": [p.name for p in timed], "notes": list(models["notes"]),
                    "models": {k: str(v) for k, v in models.items() if k != "notes"}}

    print(f"loading {', '.join(variants)} ...", file=sys.stderr)
    pipelines = {v: load_variant(v, models) for v in variants}
    result["backends"] = {v: [p.analyzer.segmenter.backend, p.analyzer.grader.backend]
                          for v, p in pipelines.items() if isinstance(p, OursPipeline)}
    result["grader_used"] = {v: p.analyzer.grader.name for v, p in pipelines.items() if isinstance(p, OursPipeline)}
    result["models_in_parallel"] = {v: p.analyzer.parallel for v, p in pipelines.items()
                                    if isinstance(p, OursPipeline)}
    # What ACNE_BACKEND / ACNE_PARALLEL chose (auto: measured on first use, then cached) and the candidates timed.
    result["fast_path_choice"] = {v: __import__("dataclasses").asdict(p.analyzer.choice) for v, p in pipelines.items()
                                  if isinstance(p, OursPipeline)}
    for v, choice in result["fast_path_choice"].items():
        print(f"{v}: fast path {choice['backend']}{' + models side by side' if choice['parallel'] else ''} "
              f"({choice['how']}; candidates: " + (", ".join(f"{k} {m['models_ms']:.0f} ms"
              + ("" if m["passed"] else " fails the guard") for k, m in choice["measured"].items()) or "none timed")
              + ")", file=sys.stderr)
    print(f"timing {len(timed)} photos (+{len(warm)} warm-up) ...", file=sys.stderr)
    result["timing"] = timed_runs(pipelines, warm + timed, args.warmup)
    del pipelines
    if args.region_n > 0:
        print(f"region step on {args.region_n} 12-megapixel phone-style photos ...", file=sys.stderr)
        result["region_12mp"] = region_step_12mp(pick_photos(args.region_n))

    if not args.no_cold:
        rss_photos = pick_photos(args.rss_photos)
        result["cold"] = {}
        for v in variants:
            print(f"cold start: {v} ...", file=sys.stderr)
            result["cold"][v] = cold_start_and_rss(v, models, rss_photos)
        if "ours-default" in variants:
            with tempfile.TemporaryDirectory(prefix="acne-onnx-cache-") as empty:
                print("cold start: ours-default on ONNX Runtime, empty cache (exports) ...", file=sys.stderr)
                result["cold"]["ours-default (onnx, empty cache)"] = cold_start_and_rss(
                    "ours-default", models, rss_photos, {"ACNE_CACHE_DIR": empty, "ACNE_BACKEND": "onnx"})
            print("cold start: ours-default on ONNX Runtime, warm cache ...", file=sys.stderr)
            result["cold"]["ours-default (onnx, warm cache)"] = cold_start_and_rss(
                "ours-default", models, rss_photos, {"ACNE_BACKEND": "onnx"})
            print("cold start: ours-default on PyTorch ...", file=sys.stderr)
            result["cold"]["ours-default (ACNE_BACKEND=torch)"] = cold_start_and_rss(
                "ours-default", models, rss_photos, {"ACNE_BACKEND": "torch"})
    if args.throughput_n > 0:
        print(f"throughput: python -m acne analyze x {args.throughput_n} ...", file=sys.stderr)
        result["throughput"] = cli_throughput(models, pick_photos(args.throughput_n))
    if not args.no_levers:
        print("levers ...", file=sys.stderr)
        result["levers"] = measure_levers(models, timed or warm, args.lever_reps, args.cache_dir)
    machine["load_average_end"] = os.getloadavg()
    result["machine"] = machine
    result["elapsed_s"] = time.perf_counter() - started
    print_table(result)
    out = args.out or args.work / "benchmark.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nwrote {out} ({result['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

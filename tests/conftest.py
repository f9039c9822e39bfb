"""Session fixtures shared by every test: tiny random models of the real architectures, saved with
save_pretrained and loaded back through the real loaders, and a real ACNE04 example photo."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import sys
from pathlib import Path

# Read once, when huggingface_hub is first imported: set before anything imports it.
# There is no Hub here; offline mode makes a Hub id fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# A cache of this run's own (ONNX exports, the fast path's measured choice, the chat's vectors), shared by
# the apps the tests start: nothing measured or exported by an earlier run or by the user's app decides here.
os.environ["ACNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="acne-tests-cache-")
atexit.register(shutil.rmtree, os.environ["ACNE_CACHE_DIR"], ignore_errors=True)


def _no_proxy_for_localhost(env) -> None:
    """Every server in these tests is on 127.0.0.1: a proxy from the environment (CI machines) must not
    receive those requests (httpx, urllib and openai's client all honour NO_PROXY)."""
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h.strip() for h in (env.get(name) or "").split(",") if h.strip()]
        env[name] = ",".join(hosts + [h for h in ("127.0.0.1", "localhost") if h not in hosts])


_no_proxy_for_localhost(os.environ)  # this process (gradio_client, urllib) and, via tiny_model_env, the apps

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = PROJECT_DIR / "images" / "examples"
TEST_SEG_SIZE = 256  # keep the UNet input small in tests: the suite must stay fast on 2 CPUs

if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

LEVELS_5 = ["level -1", "level 0", "level 1", "level 2", "level 3"]
LEVELS_4 = ["level 0", "level 1", "level 2", "level 3"]


def _save_tiny_classifier(folder: Path, labels: list[str], config_cls, model_cls, processor, **config) -> Path:
    """A random-init transformers image classifier with these labels, saved with save_pretrained."""
    import torch

    torch.manual_seed(0)
    config = config_cls(num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={l: i for i, l in enumerate(labels)}, **config)
    model_cls(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _save_tiny_vit(folder: Path, labels: list[str], image_size: int = 64) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    # Same preprocessing as skintelligent-acne (mean = std = 0.5), at the tiny model's size.
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size},
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return _save_tiny_classifier(folder, labels, ViTConfig, ViTForImageClassification, processor,
                                 hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=image_size, patch_size=16)


def _save_tiny_dinov2(folder: Path, labels: list[str], image_size: int = 56) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2ForImageClassification

    processor = BitImageProcessor(size={"shortest_edge": image_size},
                                  crop_size={"height": image_size, "width": image_size},
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return _save_tiny_classifier(folder, labels, Dinov2Config, Dinov2ForImageClassification, processor,
                                 hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                 image_size=image_size, patch_size=14)


@pytest.fixture(scope="session")
def tiny_segmenter_dir(tmp_path_factory) -> Path:
    """Random-init real ResNet34-UNet, 2 channels (lesion, centre), saved in fp16 + inference.json."""
    import torch
    from acne.models import build_unet

    folder = tmp_path_factory.mktemp("models") / "segmenter"
    torch.manual_seed(0)
    model = build_unet(classes=2).eval().half()  # fp16 on disk halves the size; loader casts back
    model.save_pretrained(str(folder))
    (folder / "inference.json").write_text(json.dumps({
        "threshold": 0.5, "center_threshold": 0.5, "input_size": TEST_SEG_SIZE, "min_area_px": 4,
        "channels": ["lesion", "center"], "metrics": {"note": "random weights, tests only"},
    }))
    return folder


@pytest.fixture(scope="session")
def tiny_grader_dir(tmp_path_factory) -> Path:
    """Tiny ViTForImageClassification with skintelligent-acne's labels 'level -1'..'level 3'."""
    return _save_tiny_vit(tmp_path_factory.mktemp("models") / "grader5", LEVELS_5)


@pytest.fixture(scope="session")
def tiny_grader4_dir(tmp_path_factory) -> Path:
    """Tiny ViTForImageClassification with our own grader's labels 'level 0'..'level 3'."""
    return _save_tiny_vit(tmp_path_factory.mktemp("models") / "grader4", LEVELS_4)


def _save_tiny_count_grader(folder: Path, image_size: int = 56) -> Path:
    """Tiny acne.count_model grader (DINOv2 + density head), labels 'level 0'..'level 3', square resize."""
    from transformers import BitImageProcessor
    import torch

    from acne.count_model import CountGraderConfig, Dinov2ForLesionCountGrading

    torch.manual_seed(0)
    config = CountGraderConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, density_channels=(8, 4),
        band_edges=(4.5, 18.0, 44.0), count_slope=4.0, density_layers=(-1, -2),
        image_size=image_size, patch_size=14, id2label=dict(enumerate(LEVELS_4)),
        label2id={l: i for i, l in enumerate(LEVELS_4)},
    )
    model = Dinov2ForLesionCountGrading(config).eval()
    with torch.no_grad():
        model.density_head.out.bias.fill_(1.0)     # a few lesions per patch: every grade within reach
    model.save_pretrained(folder)
    BitImageProcessor(size={"height": image_size, "width": image_size}, do_center_crop=False,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dinov2_grader_dir(tmp_path_factory) -> Path:
    """Tiny Dinov2ForImageClassification, labels 'level 0'..'level 3' (the shape of our own grader)."""
    return _save_tiny_dinov2(tmp_path_factory.mktemp("models") / "grader_dinov2", LEVELS_4)


@pytest.fixture(scope="session")
def tiny_count_grader_dir(tmp_path_factory) -> Path:
    """Tiny Dinov2ForLesionCountGrading (the shape of our shipped grader), saved with save_pretrained."""
    return _save_tiny_count_grader(tmp_path_factory.mktemp("models") / "grader_count")


@pytest.fixture(scope="session")
def example_photo() -> Path:
    """A real ACNE04 valid photo shipped in images/examples/."""
    photos = sorted(EXAMPLES_DIR.glob("*.jpg"))
    assert photos, f"no example photos in {EXAMPLES_DIR}"
    preferred = EXAMPLES_DIR / "acne04_valid_grade2_0.jpg"
    return preferred if preferred.exists() else photos[0]


@pytest.fixture(scope="session")
def example_photos() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.jpg"))


def save_skin_check(folder: Path, backbone: Path, *, bias: float, input_size: int = 28) -> Path:
    """A skin check head on `backbone` (a DINOv2 folder) whose weights are zero: P(skin) is sigmoid(bias)
    for every photo (bias > 0: everything is skin)."""
    import torch
    from safetensors.torch import save_file

    from acne.models.skin import backbone_key

    folder.mkdir(parents=True, exist_ok=True)
    hidden = json.loads((backbone / "config.json").read_text())["hidden_size"]
    save_file({"head.weight": torch.zeros(2, hidden, dtype=torch.float16),
               "head.bias": torch.tensor([-bias / 2, bias / 2], dtype=torch.float16)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"labels": ["not skin", "skin"], "backbone": str(backbone),
                                                    "backbone_key": backbone_key(backbone),
                                                    "input_size": input_size, "threshold": 0.5}))
    return folder


@pytest.fixture(scope="session")
def tiny_skin_check_dir(tmp_path_factory, tiny_count_grader_dir) -> Path:
    """A tiny skin check that takes every photo for skin (the tests of other parts grade any photo)."""
    return save_skin_check(tmp_path_factory.mktemp("models") / "skin_check", tiny_count_grader_dir, bias=8.0)


@pytest.fixture(scope="session")
def tiny_settings(tiny_segmenter_dir, tiny_grader_dir, tiny_skin_check_dir):
    """Settings pointing at the tiny models: segmenter, the 5-label ViT as grader and fallback, and a skin
    check that takes every photo for skin. One runner (torch, parallel off), the same as `tiny_model_env`'s:
    `auto` picks by timing, and on a loaded machine an app and a test's own reference analysis could pick
    different runners and count one lesion apart on the tiny random models. (`auto` has its own tests.)"""
    from acne.config import Settings

    return Settings(segmenter=str(tiny_segmenter_dir), grader=str(tiny_grader_dir),
                    grader_fallback=str(tiny_grader_dir), seg_size=TEST_SEG_SIZE,
                    skin_check=str(tiny_skin_check_dir), backend="torch", parallel="off")


@pytest.fixture(scope="session")
def tiny_analyzer(tiny_settings):
    """Analyzer over the two tiny models, loaded once through load_analyzer()."""
    from acne.analysis import load_analyzer

    return load_analyzer(tiny_settings)


@pytest.fixture(scope="session")
def tiny_model_env(tiny_segmenter_dir, tiny_grader_dir, tiny_skin_check_dir) -> dict[str, str]:
    """Environment for subprocesses (CLI, app) that should use the tiny models, on `tiny_settings`' runner."""
    env = dict(os.environ)
    env.update({
        "ACNE_SEGMENTER": str(tiny_segmenter_dir),
        "ACNE_GRADER": str(tiny_grader_dir),
        "ACNE_GRADER_FALLBACK": str(tiny_grader_dir),
        "ACNE_SKIN_CHECK": str(tiny_skin_check_dir),
        "ACNE_SEG_SIZE": str(TEST_SEG_SIZE),
        "ACNE_BACKEND": "torch",
        "ACNE_PARALLEL": "off",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR), env.get("PYTHONPATH")])),
    })
    env.pop("OPENAI_API_KEY", None)  # subprocesses never reach a real API from tests
    return env


# --------------------------------------------------------------------------- the web app's tests

@pytest.fixture
def temp_folder(tmp_path, monkeypatch) -> Path:
    """Gradio's temp folder for in-process handler tests (uploads and results go there)."""
    folder = tmp_path / "gradio"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def playwright():
    """Playwright with Debian's Chromium; skips when either is missing."""
    from app_process import CHROMIUM

    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'; .ci/run installs it)")
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser_context(playwright, tmp_path):
    """A fresh desktop-sized Chromium profile for one test (downloads allowed)."""
    from app_process import launch_chromium

    context = launch_chromium(playwright, tmp_path / "chromium-profile", accept_downloads=True)
    yield context
    context.close()

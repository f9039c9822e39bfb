"""The severity grader: real transformers loaders on tiny saved ViT / DINOv2 models, fallback, explain()."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from acne.errors import WeightsCorruptError, WeightsMissingError
from acne import explain
from acne.grader import load_grader
from acne.models import GraderLabelError
from acne.imaging import load_image
from app_process import HeldPort
from conftest import LEVELS_4, LEVELS_5, PROJECT_DIR, _save_tiny_vit


@pytest.fixture(scope="module")
def grader5(tiny_grader_dir):
    return load_grader(tiny_grader_dir)


@pytest.fixture(scope="module")
def photo(example_photo):
    return load_image(example_photo)


def test_loads_a_folder_with_skintelligent_labels(grader5, tiny_grader_dir):
    assert grader5.name == str(tiny_grader_dir)
    assert grader5.labels == LEVELS_5
    assert grader5.levels == [-1, 0, 1, 2, 3]
    assert type(grader5.model).__name__ == "ViTForImageClassification"
    assert next(grader5.model.parameters()).dtype == torch.float32


def test_predict_gives_level_scores_as_the_model_names_them(grader5, photo):
    result = grader5.predict(photo)
    assert result.model == grader5.name
    assert list(result.level_scores) == LEVELS_5
    assert sum(result.level_scores.values()) == pytest.approx(1.0, abs=1e-5)
    best = max(result.level_scores, key=result.level_scores.get)
    assert result.level == int(best.split()[1])
    # Same numbers as running the processor and model by hand.
    from PIL import Image

    inputs = grader5.processor(images=Image.fromarray(photo), return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(grader5.model(**inputs).logits[0], -1).tolist()
    assert list(result.level_scores.values()) == pytest.approx(probs, abs=1e-5)


def test_four_label_grader(tiny_grader4_dir, photo):
    grader = load_grader(tiny_grader4_dir)
    assert grader.levels == [0, 1, 2, 3]
    result = grader.predict(photo)
    assert list(result.level_scores) == LEVELS_4 and result.level in (0, 1, 2, 3)


def test_dinov2_grader_predicts_and_explains(tiny_dinov2_grader_dir, photo):
    grader = load_grader(tiny_dinov2_grader_dir)
    assert type(grader.model).__name__ == "Dinov2ForImageClassification"
    assert grader.levels == [0, 1, 2, 3]
    assert sum(grader.predict(photo).level_scores.values()) == pytest.approx(1.0, abs=1e-5)
    wide = np.ascontiguousarray(photo[100:400])          # 640 x 300: the processor centre-crops a square
    heat = grader.explain(wide)
    assert heat.shape == (300, 640) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0, abs=0.01)
    # Outside the centre crop the model saw nothing: no heat there.
    assert heat[:, :100].max() == 0.0 and heat[:, -100:].max() == 0.0
    assert heat[:, 200:440].max() > 0.0


def test_vit_explain_is_an_attention_rollout_at_input_resolution(grader5, photo):
    impl_before = grader5.model.config._attn_implementation
    rect = np.ascontiguousarray(photo[:480])
    heat = grader5.explain(rect)
    assert heat.shape == (480, 640) and heat.dtype == np.float32
    assert heat.min() == pytest.approx(0.0, abs=0.01) and heat.max() == pytest.approx(1.0, abs=0.01)
    assert heat.std() > 0.01                      # not a flat map
    with torch.inference_mode():                  # the attention path, not the occlusion fallback
        rollout = explain.attention_rollout(grader5.runner.forward, grader5.model, grader5.inputs(rect))
    assert rollout is not None and rollout.shape == (4, 4)  # 64 px / patch 16
    assert np.array_equal(heat, grader5.explain(rect))
    assert grader5.model.config._attn_implementation == impl_before  # restored after explaining


def test_explain_falls_back_to_occlusion_for_models_without_attention(tmp_path, photo):
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4,
                          id2label=dict(enumerate(LEVELS_4)), label2id={l: i for i, l in enumerate(LEVELS_4)})
    ResNetForImageClassification(config).save_pretrained(tmp_path / "cnn")
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "cnn")
    grader = load_grader(tmp_path / "cnn")
    heat = grader.explain(photo)
    assert heat.shape == photo.shape[:2]
    assert 0.0 <= heat.min() and heat.max() <= 1.0


def test_unparseable_labels_fail_at_load_time(tmp_path):
    folder = _save_tiny_vit(tmp_path / "bad", ["clear", "acne"])
    with pytest.raises(GraderLabelError, match="'level -1' ... 'level 3'"):
        load_grader(folder, fallback=folder)


def test_neither_model_loads(tmp_path):
    with pytest.raises(WeightsMissingError) as info:
        load_grader("nobody/no-such-grader", fallback=tmp_path / "weights" / "grader")
    message = str(info.value)
    assert "nobody/no-such-grader" in message and str(tmp_path / "weights" / "grader") in message
    assert "train_grader.py" in message and "ACNE_GRADER" in message


def test_corrupt_grader_folder(tmp_path, tiny_grader_dir):
    folder = tmp_path / "grader"
    shutil.copytree(tiny_grader_dir, folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsCorruptError, match="could not be read"):
        load_grader(folder)
    (folder / "config.json").unlink()
    with pytest.raises(WeightsMissingError, match="config.json is missing"):
        load_grader(folder)


def _log_lines_of_hub_load(env: dict, fallback, prefix: str = "LOG acne.") -> list[str]:
    """Load the Hub grader with `fallback` in a fresh interpreter; its log lines starting with `prefix`."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='LOG %(name)s: %(message)s')\n"
        "from acne.grader import load_grader\n"
        f"g = load_grader('imfarzanansari/skintelligent-acne', fallback={str(fallback)!r})\n"
        "print(g.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(fallback)
    return [line for line in done.stderr.splitlines() if line.startswith(prefix)]


def test_offline_hub_id_falls_back_with_one_log_line(tiny_grader_dir, tiny_grader4_dir, tiny_model_env):
    """HF_HUB_OFFLINE is read when huggingface_hub is imported: check in a fresh interpreter."""
    lines = _log_lines_of_hub_load(dict(tiny_model_env, HF_HUB_OFFLINE="1"), tiny_grader4_dir)
    assert len(lines) == 1, lines
    assert "imfarzanansari/skintelligent-acne" in lines[0] and "using the embedded grader" in lines[0]
    assert "offline" in lines[0] and "WARNING" not in lines[0]
    assert str(tiny_grader4_dir) in lines[0]


def test_unreachable_hub_falls_back_at_once_without_retries(tiny_grader4_dir, tiny_model_env, tmp_path):
    """No HF_HUB_OFFLINE, but no network: one clear line, not huggingface_hub's retries."""
    with HeldPort() as closed:  # a port nobody listens on, held so: connections are refused
        env = dict(tiny_model_env, HF_ENDPOINT=f"http://127.0.0.1:{closed.port}", HF_HOME=str(tmp_path / "hf"))
        env.pop("HF_HUB_OFFLINE")
        lines = _log_lines_of_hub_load(env, tiny_grader4_dir, prefix="LOG ")  # huggingface_hub's lines too
    assert len(lines) == 1, lines
    assert "the Hub model is not reachable" in lines[0] and str(tiny_grader4_dir) in lines[0]


def test_hub_probe_tells_a_listening_endpoint_from_a_closed_one(monkeypatch):
    from huggingface_hub import constants

    from acne.models.hub import hub_reachable as _hub_reachable

    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert _hub_reachable(timeout=2)
    # The same port, now closed.
    assert not _hub_reachable(timeout=2)


def test_a_local_folder_with_skintelligent_shape_is_used_as_primary(tiny_grader_dir, tiny_grader4_dir, photo):
    grader = load_grader(tiny_grader_dir, fallback=tiny_grader4_dir)
    assert grader.name == str(tiny_grader_dir) and grader.levels == [-1, 0, 1, 2, 3]
    # The folder's own preprocessing is what runs: skintelligent-acne's mean = std = 0.5 puts black at -1
    # and white at +1 (ImageNet's mean/std, the other graders', would give about -2.1 and +2.6).
    for value, expected in ((0, -1.0), (255, 1.0)):
        pixels = grader.inputs(np.full((80, 120, 3), value, np.uint8))
        assert tuple(pixels.shape) == (1, 3, 64, 64)
        assert pixels.min().item() == pytest.approx(expected, abs=1e-3)
        assert pixels.max().item() == pytest.approx(expected, abs=1e-3)
    assert grader.predict(photo).level in grader.levels

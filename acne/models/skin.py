"""The skin check's network: a frozen DINOv2 backbone (the grader's) and a linear head, "is this skin?".

A save_pretrained-style folder holds only the head (model.safetensors: head.weight 2 x hidden,
head.bias 2) and config.json: the backbone folder (relative to this one), the fingerprint of the
backbone weights the head was trained on, the input size and the two thresholds. The backbone's 22 M
weights are not stored twice; a retrained grader needs a retrained head, and loading says so.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import imaging
from ..errors import WeightsCorruptError, WeightsMissingError
from ..runtime import Lazy, fingerprint

FIX = ("The skin check ships with the project in weights/skin_check (it reads the grader's backbone in "
       "weights/grader): restore both folders (git checkout weights), rebuild it with "
       "`python scripts/train_skin_check.py` (see its model card), or point ACNE_SKIN_CHECK at a copy.")
LABELS = ("not skin", "skin")



@dataclass
class SkinCheckModel:
    """A loaded skin check: its folder name, input size, threshold on P(skin), the stricter threshold at
    which a whole photo counts as a skin close-up (None: never), the torch module (`module.get()`, fp32,
    eval: pixel values in, `.logits` over LABELS out) and the fingerprint of its weights (`weights_key.get()`,
    head and backbone)."""
    name: str
    input_size: int
    threshold: float
    closeup_threshold: float | None
    module: Lazy
    weights_key: Lazy

    def preprocess(self, rgb: np.ndarray):
        """1x3xSxS float32 pixel values of an RGB crop (HxWx3 uint8), S = input_size."""
        return preprocess(rgb, self.input_size)


def preprocess(rgb: np.ndarray, size: int):
    """The crop squeezed to size x size (area averaging, after a cheap stride for very large crops), ImageNet
    normalised: 1x3xSxS float32 tensor. Training and inference both call this."""
    import torch

    step = max(1, max(rgb.shape[:2]) // (4 * size))
    small = np.ascontiguousarray(rgb[::step, ::step]) if step > 1 else rgb
    x = cv2.resize(small, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = (x - imaging.IMAGENET_MEAN_255) / imaging.IMAGENET_STD_255
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def build_skin_net(backbone, hidden: int):
    """The network: `backbone` (a transformers Dinov2Model) and a fresh Linear(hidden, 2) head on its pooled
    (class) token. Returns a torch module whose forward(pixel_values) gives an object with `.logits`."""
    import torch
    from transformers.modeling_outputs import ImageClassifierOutput

    class SkinCheckNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.head = torch.nn.Linear(hidden, len(LABELS))

        def forward(self, pixel_values):
            pooled = self.backbone(pixel_values=pixel_values).pooler_output
            return ImageClassifierOutput(logits=self.head(pooled))

    return SkinCheckNet()


def load_backbone(folder: str | os.PathLike):
    """The DINOv2 backbone of a save_pretrained folder (our counting grader's, or a plain Dinov2Model),
    fp32, eval. Returns (module, hidden size)."""
    import torch
    from transformers import AutoConfig, Dinov2Model
    from transformers.utils import logging as hf_logging

    from .classifier import register_our_models

    register_our_models()
    hf_logging.disable_progress_bar()   # the "Loading weights" bar says nothing a user needs
    config = AutoConfig.from_pretrained(str(folder))
    if config.model_type == "dinov2":
        model = Dinov2Model.from_pretrained(str(folder), dtype=torch.float32)
    else:
        from ..count_model import Dinov2ForLesionCountGrading

        model = Dinov2ForLesionCountGrading.from_pretrained(str(folder), dtype=torch.float32).dinov2
    return model.float().eval(), int(config.hidden_size)


def backbone_key(folder: str | os.PathLike) -> str:
    """Fingerprint of the backbone folder's weights file (what a head was trained on)."""
    return fingerprint(Path(folder) / "model.safetensors")


def load_skin_check(folder: str | os.PathLike) -> SkinCheckModel:
    """Load a skin check from its folder.

    Args:
        folder: holds config.json (backbone, backbone_key, input_size, threshold, optional closeup_threshold)
            and model.safetensors (head).
    Returns:
        a SkinCheckModel.
    Raises:
        WeightsMissingError: files missing (this folder's or the backbone's).
        WeightsCorruptError: unreadable files, or a backbone whose weights are not the ones the head was
            trained on.
    """
    folder = Path(folder).expanduser()
    config_path, head_path = folder / "config.json", folder / "model.safetensors"
    for path in (config_path, head_path):
        if not path.is_file():
            raise WeightsMissingError(f"Skin check weights are missing: {path} does not exist. {FIX}")
    try:
        config = json.loads(config_path.read_text())
        backbone_dir = (folder / config["backbone"]).resolve()
        size, threshold = int(config["input_size"]), float(config["threshold"])
        closeup = config.get("closeup_threshold")
        closeup = None if closeup is None else float(closeup)
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsCorruptError(f"Skin check config {config_path} is unreadable ({type(exc).__name__}). {FIX}") from None
    if not (backbone_dir / "model.safetensors").is_file() or not (backbone_dir / "config.json").is_file():
        raise WeightsMissingError(f"Skin check backbone is missing: {backbone_dir} has no config.json and "
                                  f"model.safetensors. {FIX}")
    key = backbone_key(backbone_dir)
    if key != config.get("backbone_key"):
        raise WeightsCorruptError(
            f"The skin check in {folder} was trained on other backbone weights than those in {backbone_dir} "
            f"(fingerprint {key}, expected {config.get('backbone_key')}): retrain it with "
            "`python scripts/train_skin_check.py` after retraining the grader. " + FIX)

    def build():
        from safetensors.torch import load_file

        try:
            backbone, hidden = load_backbone(backbone_dir)
            net = build_skin_net(backbone, hidden)
            net.head.load_state_dict({k[len("head."):]: v.float() for k, v in load_file(str(head_path)).items()})
        except Exception as exc:  # noqa: BLE001 - any failure to read them is one clear message
            raise WeightsCorruptError(f"Skin check weights in {folder} could not be read ({type(exc).__name__}); "
                                      f"the files may be damaged. {FIX}") from exc
        return net.float().eval()

    try:   # a damaged head is found at start-up; the backbone is read only when a runner needs it
        from safetensors import safe_open

        with safe_open(str(head_path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        if set(shapes) != {"head.weight", "head.bias"} or shapes["head.weight"][0] != len(LABELS):
            raise ValueError(f"unexpected tensors {shapes}")
    except Exception as exc:  # noqa: BLE001 - any failure to read it is one clear message
        raise WeightsCorruptError(f"Skin check weights in {head_path} could not be read ({type(exc).__name__}); "
                                  f"the file may be damaged. {FIX}") from None
    module = Lazy(build)
    return SkinCheckModel(name=str(folder), input_size=size, threshold=threshold, closeup_threshold=closeup,
                          module=module,
                          weights_key=Lazy(lambda: fingerprint(head_path, key)))

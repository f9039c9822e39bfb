"""Where the grader looked: heat maps over the grader's input, mapped back onto the graded crop.

A counting grader (acne.count_model) shows its lesion density map: exactly what its count, and so its
grade, sums (acne.grader passes it from the same forward pass). Other graders: attention rollout
(Abnar & Zuidema 2020) for ViT-like models, or occlusion sensitivity (a grey square slid over a grid;
gradient-free, batched) for the rest; both need one more forward pass.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

__all__ = ["model_heat", "attention_rollout", "occlusion", "normalise", "to_input_frame"]


def model_heat(forward: Callable, module, pixel_values, has_density: bool = False) -> np.ndarray:
    """A heat map over the model's input grid.

    Args:
        forward: forward(pixel_values, **kwargs) -> the transformers model's output object.
        module: the torch model `forward` runs (its config says the patch size and attention kind).
        pixel_values: 1x3xHxW float32 tensor.
        has_density: the model returns a `density` map (our counting grader).
    Returns:
        float32 map (any scale; see `normalise`).
    """
    import torch

    with torch.inference_mode():
        if has_density:
            return forward(pixel_values).density[0].float().numpy()
        heat = attention_rollout(forward, module, pixel_values)
        return heat if heat is not None else occlusion(forward, pixel_values)


def attention_rollout(forward: Callable, module, pixel_values) -> np.ndarray | None:
    """Attention rollout over a ViT-like model's patch grid, or None when the model gives no attentions."""
    import torch

    config = getattr(module, "config", None)
    patch = getattr(config, "patch_size", None)
    if not isinstance(patch, int):
        return None
    impl = getattr(config, "_attn_implementation", None)
    switched = False
    try:
        if impl not in (None, "eager") and hasattr(module, "set_attn_implementation"):
            # sdpa returns no attention weights; eager does (same numbers, a little slower).
            module.set_attn_implementation("eager")
            switched = True
        attentions = forward(pixel_values, output_attentions=True).attentions
    except (TypeError, ValueError, NotImplementedError, AttributeError):
        return None
    finally:
        if switched:
            module.set_attn_implementation(impl)
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


def occlusion(forward: Callable, pixel_values, grid: int = 7, batch: int = 8) -> np.ndarray:
    """How much the top class's probability drops when each cell of a grid x grid raster is greyed out."""
    import torch

    base = torch.softmax(forward(pixel_values).logits[0].float(), dim=-1)
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
        probs = torch.softmax(forward(occluded).logits.float(), dim=-1)[:, target]
        drops.extend((base[target] - probs).tolist())
    return np.clip(np.array(drops, dtype=np.float32).reshape(grid, grid), 0, None)


def normalise(heat: np.ndarray) -> np.ndarray:
    """Shift and scale a map into 0..1 (all zeros stays zeros). Returns float32."""
    heat = np.asarray(heat, np.float32)
    heat = heat - heat.min()
    return heat / heat.max() if heat.max() > 0 else heat


def to_input_frame(heat: np.ndarray, width: int, height: int, processor=None) -> np.ndarray:
    """Resize a heat map over the model's input back onto the crop (width x height), undoing a centre
    crop when `processor` (a Lazy transformers image processor, or None for a plain resize) makes one."""
    p = processor.get() if processor is not None else None
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

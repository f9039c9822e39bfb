"""Our offline grader's architecture: DINOv2 + a small lesion-density head; the grade follows the count.

ACNE04's Hayashi grade is a lesion count per half face (<=5, 6-20, 21-50, >50), so the model predicts a
density map over its 32 x 32 patch grid, sums it to a count, and the count's band is the grade (Hayashi's
bands, with edges refitted to the model's counts; probabilities from the count's distance to each band,
see grade_logits). It is a transformers model (`save_pretrained` / `from_pretrained`) of its own
`model_type`; `register()` makes the Auto classes know it. Imported lazily: it needs transformers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, Dinov2Config, Dinov2Model
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.dinov2.modeling_dinov2 import Dinov2PreTrainedModel

from .severity import HAYASHI_BANDS

__all__ = ["CountGraderConfig", "Dinov2ForLesionCountGrading", "LesionCountOutput", "register"]


class CountGraderConfig(Dinov2Config):
    model_type = "acne-dinov2-count-grader"

    def __init__(self, density_channels=(64, 32), band_edges=None, count_slope: float = 3.0, density_layers=(-1,),
                 **kwargs):
        super().__init__(**kwargs)
        self.density_channels = list(density_channels)
        # Hidden states whose (layer-normed) patch tokens the head reads, concatenated: -1 the final tokens,
        # -2 the input of the last block, ... Earlier layers keep finer detail of small lesions.
        self.density_layers = [int(v) for v in density_layers]
        # Upper edges of grades 0..2 in predicted lesions: above edges[k], the grade is above k. Hayashi's by
        # default; our training fits them on out-of-fold counts (the head under-counts dense photos).
        self.band_edges = list(band_edges) if band_edges is not None else [upper + 0.5 for upper, _ in HAYASHI_BANDS]
        self.count_slope = float(count_slope)   # confidence per unit of log-distance to a band, fitted on train


@dataclass
class LesionCountOutput(ImageClassifierOutput):
    density: torch.Tensor | None = None     # B x H x W lesions per patch
    count: torch.Tensor | None = None       # B lesions (the density's sum)


class DensityHead(nn.Module):
    """1x1 conv -> GELU -> 3x3 conv -> GELU -> 1x1 conv -> softplus: lesions per patch, >= 0."""

    def __init__(self, hidden: int, channels: list[int]):
        super().__init__()
        a, b = channels
        self.reduce = nn.Conv2d(hidden, a, 1)
        self.context = nn.Conv2d(a, b, 3, padding=1)
        self.out = nn.Conv2d(b, 1, 1)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.reduce(grid))
        x = nn.functional.gelu(self.context(x))
        return nn.functional.softplus(self.out(x))[:, 0]


class Dinov2ForLesionCountGrading(Dinov2PreTrainedModel):
    config_class = CountGraderConfig
    # The count sums 1024 per-patch values: bf16 there would move it (acne.grading keeps these fp32).
    _keep_in_fp32_modules = ["density_head"]

    def __init__(self, config: CountGraderConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dinov2 = Dinov2Model(config)
        self.density_head = DensityHead(config.hidden_size * len(config.density_layers), config.density_channels)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs) -> LesionCountOutput:
        layers = self.config.density_layers
        wanted = bool(kwargs.pop("output_hidden_states", False))
        outputs = self.dinov2(pixel_values, output_hidden_states=wanted or layers != [-1], **kwargs)
        patches = torch.cat([outputs.last_hidden_state[:, 1:] if layer == -1 else
                             self.dinov2.layernorm(outputs.hidden_states[layer])[:, 1:] for layer in layers], dim=-1)
        h = pixel_values.shape[-2] // self.config.patch_size
        w = pixel_values.shape[-1] // self.config.patch_size
        grid = patches.reshape(patches.shape[0], h, w, -1).permute(0, 3, 1, 2)
        weight = self.density_head.reduce.weight
        with torch.autocast(grid.device.type, enabled=False):
            density = self.density_head(grid.to(weight.dtype)).float()
        count = density.sum(dim=(1, 2))
        logits = grade_logits(count, self.config.band_edges, self.config.count_slope)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return LesionCountOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states if wanted else None,
                                 attentions=outputs.attentions, density=density, count=count)


def grade_logits(count: torch.Tensor, band_edges, slope: float) -> torch.Tensor:
    """Grade log-probabilities from a lesion count: the count's Hayashi band wins, and every grade's logit
    falls with the distance, in log(1 + count), from the count to that grade's band (0 inside it):
    a count near a band edge is a near tie, one deep inside a band is sure. `slope` is fitted on train."""
    z = torch.log1p(count.clamp(min=0)).unsqueeze(-1)
    edges = torch.log1p(torch.as_tensor(band_edges, dtype=z.dtype, device=z.device))
    inf = torch.full((1,), float("inf"), dtype=z.dtype, device=z.device)
    lower, upper = torch.cat([-inf, edges]), torch.cat([edges, inf])
    distance = torch.clamp(lower - z, min=0) + torch.clamp(z - upper, min=0)
    return torch.log_softmax(-slope * distance, dim=-1)


def register() -> None:
    """Let AutoConfig / AutoModelForImageClassification load folders of this model_type (idempotent)."""
    try:
        AutoConfig.register(CountGraderConfig.model_type, CountGraderConfig)
    except ValueError:  # already registered
        pass
    try:
        AutoModelForImageClassification.register(CountGraderConfig, Dinov2ForLesionCountGrading)
    except ValueError:
        pass

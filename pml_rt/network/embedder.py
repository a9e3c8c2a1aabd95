"""The embedder: dilated backbone + spatio-temporal embedding head, as in the paper (Sec. 3.2).

Input: RGB frames as float32 in 0..255, (N, 3, H, W), and each frame's time (N,) float32.
Output: L2-normalised embeddings (N, d, ceil(H/8), ceil(W/8)) float32.

The head sees the backbone features plus the normalised cell coordinates (y, x in 0..1) and
the frame time, so position and time become part of the embedding. Its last layer starts at
zero and is added to the pretrained features (a residual), so an untrained head leaves the
ImageNet features unchanged and training can only move away from them as far as it helps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import ModelConfig
from .mobilenet import DilatedMobileNetV2, imagenet_checkpoint_path


def _l2n(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    return x / torch.sqrt((x * x).sum(dim, keepdim=True) + 1e-12)


def coordinate_channels(n: int, h: int, w: int, time: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, 3, h, w): cell-centre y and x in 0..1, and the frame time broadcast over the frame."""
    ys = (torch.arange(h, dtype=like.dtype, device=like.device) + 0.5) / h
    xs = (torch.arange(w, dtype=like.dtype, device=like.device) + 0.5) / w
    yy = ys.view(1, 1, h, 1).expand(n, 1, h, w)
    xx = xs.view(1, 1, 1, w).expand(n, 1, h, w)
    tt = time.to(like.dtype).view(n, 1, 1, 1).expand(n, 1, h, w)
    return torch.cat([yy, xx, tt], dim=1)


class EmbeddingHead(nn.Module):
    """Two 1x1 convolutions over [features, y, x, t], added to a projection of the features."""

    def __init__(self, cin: int, d: int, hidden: int = 256, spatio_temporal: bool = True, dropout: float = 0.0):
        super().__init__()
        self.spatio_temporal = spatio_temporal
        self.drop = nn.Dropout(dropout)  # on the hidden layer, training only (no parameters)
        extra = 3 if spatio_temporal else 0
        self.proj = nn.Identity() if cin == d else nn.Conv2d(cin, d, 1)
        self.conv1 = nn.Conv2d(cin + extra, hidden, 1)
        self.conv2 = nn.Conv2d(hidden, d, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, feats: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        n, _, h, w = feats.shape
        x = feats
        if self.spatio_temporal:
            x = torch.cat([feats, coordinate_channels(n, h, w, time, feats)], dim=1)
        return _l2n(self.proj(feats) + self.conv2(self.drop(F.relu(self.conv1(x)))))

    def forward_cells(self, feats: torch.Tensor, yxt: torch.Tensor) -> torch.Tensor:
        """The same map on a set of cells: feats (M, cin), yxt (M, 3) coordinates and time -> (M, d).

        Equal to :meth:`forward` at those cells (1x1 convolutions are per-cell linear maps);
        training uses it to run the head only on the cells a loss looks at.
        """
        x = torch.cat([feats, yxt.to(feats.dtype)], dim=1) if self.spatio_temporal else feats

        def lin(conv: nn.Module, v: torch.Tensor) -> torch.Tensor:
            return F.linear(v, conv.weight.flatten(1), conv.bias)

        proj = feats if isinstance(self.proj, nn.Identity) else lin(self.proj, feats)
        return _l2n(proj + lin(self.conv2, self.drop(F.relu(lin(self.conv1, x)))), dim=1)


#: "mobilenet_v2": dilated so every block after block 6 runs at stride 8 (DeepLab).
#: "mobilenet_v2_os16": the same weights and taps, undilated past stride 16: blocks 7-13 run
#: on a quarter of the cells (half the embed time at 854x480); block 13's output is upsampled
#: bilinearly to block 6's stride-8 grid, so the embeddings stay at stride 8.
BACKBONES = ("mobilenet_v2", "mobilenet_v2_os16", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def build_backbone(name: str, taps: tuple[int, ...] | None, stride: int = 8, imagenet: bool = True) -> nn.Module:
    """A dilated backbone by name (see :data:`BACKBONES`); ``forward`` gives the tapped blocks.

    ``stride`` is the embedding stride (the finest tap's); ``mobilenet_v2_os16`` runs its
    later blocks at twice that."""
    if name in ("mobilenet_v2", "mobilenet_v2_os16"):
        net = DilatedMobileNetV2(taps=taps or (6, 13), output_stride=stride * (2 if name.endswith("os16") else 1))
        if imagenet:
            net.load_imagenet(imagenet_checkpoint_path())
        return net
    if name.startswith("efficientnet_lite") and name in BACKBONES:
        from . import efficientnet  # noqa: PLC0415

        variant = int(name[-1])
        net = efficientnet.DilatedEfficientNetLite(variant, taps=taps or None, output_stride=stride)
        if imagenet:
            net.load_imagenet(efficientnet.imagenet_checkpoint_path(variant))
        return net
    raise ValueError(f"backbone {name!r} is not defined here; available: {', '.join(BACKBONES)}")


class Embedder(nn.Module):
    """Frames (N, 3, H, W) in 0..255 and times (N,) -> embeddings (N, d, H/8, W/8), unit length."""

    def __init__(self, cfg: ModelConfig, imagenet: bool = True, spatio_temporal: bool = True, hidden: int = 256):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone, cfg.taps, cfg.stride, imagenet)
        cin = sum(self.backbone.out_channels)
        self.head = EmbeddingHead(cin, cfg.d, hidden=hidden, spatio_temporal=spatio_temporal)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1) * 255.0)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, sum C_i, H/8, W/8): each tapped block L2-normalised, then joined.

        Each block gets equal weight (1/sqrt(#taps)) so the joined vector has unit length. A tap
        coarser than the first (``mobilenet_v2_os16``'s block 13) is upsampled bilinearly to it.
        """
        x = (image - self.mean) / self.std
        taps = self.backbone(x)
        size = taps[0].shape[-2:]
        taps = [t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                for t in taps]
        return torch.cat([_l2n(t) for t in taps], dim=1) / math.sqrt(len(taps))

    def forward(self, image: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image), time)

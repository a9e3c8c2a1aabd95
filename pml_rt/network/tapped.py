"""What the dilated backbones share: running blocks while keeping the tapped outputs, and
loading an ImageNet state dict whose names match the module's own."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def run_tapped(blocks: Iterable[nn.Module], taps: tuple[int, ...], x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``blocks`` in order on ``x``; return the outputs of the blocks whose index is in ``taps``."""
    outs = []
    for i, block in enumerate(blocks):
        x = block(x)
        if i in taps:
            outs.append(x)
    return outs


def load_matching(module: nn.Module, path: str, what: str) -> None:
    """Load the tensors of checkpoint ``path`` that ``module`` has (others, such as a classifier,
    are ignored); ``ValueError`` naming ``what`` was expected where names or shapes differ."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path} is not a {what} checkpoint: missing {missing[:3]}...")
    bad = [k for k in own if state[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"{path}: shapes differ from a {what} for {bad[:3]}")
    module.load_state_dict({k: state[k] for k in own})

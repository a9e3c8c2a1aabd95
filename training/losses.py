"""Metric-learning losses over embeddings with object ids (paper, Sec. 3.3 and Table 2).

All take anchors ``a`` float (A, d) with ids ``a_ids`` int (A,) and a pool ``p`` float (M, d)
with ids ``p_ids`` int (M,) drawn from *other* frames; same id = positive, other id (the
background, id 0, included) = negative. Distances are squared Euclidean. Anchors with no
positive or no negative in the pool carry no signal and are left out. Each returns a scalar
tensor: the mean over the anchors that count (the paper sums; the mean keeps the step size
independent of how many anchors a batch has), and 0 when none counts.
"""

from __future__ import annotations

import torch


def _sq_dist(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """(A, M) squared Euclidean distances, clamped at 0 against rounding."""
    d = (a * a).sum(1, keepdim=True) + (p * p).sum(1)[None, :] - 2.0 * a @ p.T
    return d.clamp_min(0.0)


def _masks(a_ids: torch.Tensor, p_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pos = a_ids[:, None] == p_ids[None, :]
    neg = ~pos
    valid = pos.any(1) & neg.any(1)
    return pos, neg, valid


def _mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    n = valid.sum()
    if int(n) == 0:
        return x.sum() * 0.0
    return (x * valid).sum() / n


def paper_triplet_loss(a: torch.Tensor, a_ids: torch.Tensor, p: torch.Tensor, p_ids: torch.Tensor,
                       alpha: float = 0.3) -> torch.Tensor:
    """The paper's modified triplet loss: per anchor, its closest positive and closest negative only.

    ``max(0, min_pos ||a - p||^2 - min_neg ||a - n||^2 + alpha)``, averaged over anchors.
    """
    pos, neg, valid = _masks(a_ids, p_ids)
    with torch.no_grad():  # pick the pairs without a graph; the gradient of a min flows to its argmin only
        d = _sq_dist(a, p)
        inf = torch.finfo(d.dtype).max
        ip = torch.where(pos, d, torch.full_like(d, inf)).argmin(1)
        ineg = torch.where(neg, d, torch.full_like(d, inf)).argmin(1)
    d_pos = ((a - p[ip]) ** 2).sum(1)
    d_neg = ((a - p[ineg]) ** 2).sum(1)
    hinge = torch.where(valid, (d_pos - d_neg + alpha).clamp_min(0.0), torch.zeros_like(d_pos))
    return _mean(hinge, valid)


def triplet_loss(a: torch.Tensor, a_ids: torch.Tensor, p: torch.Tensor, p_ids: torch.Tensor, alpha: float = 0.3,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain triplet loss: per anchor one positive and one negative drawn at random from the pool.

    ``max(0, ||a - p||^2 - ||a - n||^2 + alpha)``, averaged over anchors.
    """
    pos, neg, valid = _masks(a_ids, p_ids)
    # A uniform draw among the allowed pool entries: argmax of random keys where allowed.
    keys = torch.rand(pos.shape, generator=generator)
    ip = torch.where(pos, keys, torch.full_like(keys, -1.0)).argmax(1)
    ineg = torch.where(neg, keys, torch.full_like(keys, -1.0)).argmax(1)
    hinge = (((a - p[ip]) ** 2).sum(1) - ((a - p[ineg]) ** 2).sum(1) + alpha).clamp_min(0.0)
    return _mean(torch.where(valid, hinge, torch.zeros_like(hinge)), valid)


def contrastive_loss(a: torch.Tensor, a_ids: torch.Tensor, p: torch.Tensor, p_ids: torch.Tensor,
                     margin: float = 1.0) -> torch.Tensor:
    """Plain contrastive loss over every anchor-pool pair (Hadsell et al. 2006).

    Positive pairs cost ``||a - p||^2``, negative pairs ``max(0, margin - ||a - n||)^2``; the
    two kinds are averaged separately and added, so the many background pairs do not drown
    the object pairs. Anchors without both kinds are left out, as in the other losses.
    """
    d = _sq_dist(a, p)
    pos, neg, valid = _masks(a_ids, p_ids)
    pos = pos & valid[:, None]
    neg = neg & valid[:, None]
    if int(valid.sum()) == 0:
        return d.sum() * 0.0
    pos_term = (d * pos).sum() / pos.sum()
    neg_term = ((margin - torch.sqrt(d + 1e-12)).clamp_min(0.0) ** 2 * neg).sum() / neg.sum()
    return pos_term + neg_term


LOSSES = {"paper": paper_triplet_loss, "triplet": triplet_loss, "contrastive": contrastive_loss}

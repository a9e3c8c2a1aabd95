"""The training loop: a spatio-temporal head on cached, frozen backbone features.

Seeded and repeatable: every step draws its examples from ``np.random.default_rng([seed,
step])`` and seeds torch the same way, so a run that was interrupted and resumed from its
checkpoint takes exactly the steps an uninterrupted run takes. Checkpoints are written
atomically every ``ckpt_every`` steps, at the time limit and at the end; rerunning the same
command resumes. With held-out sequences (inside the train split) the head is scored every
``eval_every`` steps by a cheap kNN proxy and the best step is kept as ``best.pt`` (early
stopping); ``final.pt`` is the last step.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .losses import LOSSES
from .sampling import SamplingConfig, sample_example


@dataclass(frozen=True)
class TrainConfig:
    cache: str  # feature cache folder (``<cache>/<variant>/<seq>.npy``)
    sequences: tuple[str, ...]  # train sequences
    holdout: tuple[str, ...] = ()  # train-split sequences kept out for early stopping
    variants: tuple[str, ...] = ("orig", "s075", "color")
    backbone: str = "mobilenet_v2"  # whose features the cache holds (for export)
    loss: str = "paper"  # "paper", "triplet" or "contrastive"
    alpha: float = 0.3  # triplet margin (paper: 0.3)
    margin: float = 1.0  # contrastive margin (on the distance)
    d: int = 128
    hidden: int = 256
    spatio_temporal: bool = True
    steps: int = 100  # the shipped recipe (docs/TRAINING.md: best on a held-out train fold)
    batch: int = 4  # examples (three-frame triples) per step
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.0  # on the head's hidden layer
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval_every: int = 100
    ckpt_every: int = 100
    time_limit: float = 3600.0  # seconds of training, summed over resumed runs
    threads: int = 1  # the machine is shared; one thread was faster than two under load

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @staticmethod
    def from_json(d: dict) -> "TrainConfig":
        d = dict(d)
        d["sampling"] = SamplingConfig(**d.get("sampling", {}))
        for k in ("sequences", "holdout", "variants"):
            d[k] = tuple(d[k])
        return TrainConfig(**d)


def make_head(cin: int, cfg: TrainConfig) -> torch.nn.Module:
    from pml_rt.network.embedder import EmbeddingHead  # noqa: PLC0415

    return EmbeddingHead(cin, cfg.d, hidden=cfg.hidden, spatio_temporal=cfg.spatio_temporal, dropout=cfg.dropout)


def load_videos(cfg: TrainConfig, sequences: tuple[str, ...], variants: tuple[str, ...]) -> list[list]:
    from .features import load_sequence  # noqa: PLC0415

    return [[load_sequence(cfg.cache, v, s) for v in variants] for s in sequences]


def example_loss(head: torch.nn.Module, examples: list, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Mean loss of a list of :class:`~training.sampling.Example` under ``cfg.loss``."""
    fn = LOSSES[cfg.loss]
    kw: dict[str, Any] = {"alpha": cfg.alpha} if cfg.loss in ("paper", "triplet") else {"margin": cfg.margin}
    if cfg.loss == "triplet":
        kw["generator"] = gen
    total = []
    for ex in examples:
        a = head.forward_cells(torch.from_numpy(ex.a_feats), torch.from_numpy(ex.a_yxt))
        p = head.forward_cells(torch.from_numpy(ex.p_feats), torch.from_numpy(ex.p_yxt))
        total.append(fn(a, torch.from_numpy(ex.a_ids), p, torch.from_numpy(ex.p_ids), **kw))
    return torch.stack(total).mean()


@torch.no_grad()
def knn_proxy(head: torch.nn.Module | None, videos: list[list], cfg: TrainConfig, every: int = 5, k: int = 5) -> float:
    """Cheap score of an embedding on held-out sequences: mean object IoU at cell level of each
    ``every``-th frame labelled by majority of its k nearest cells of frame 0 (no propagation).
    ``head`` None scores the untrained features."""
    ious = []
    for variants in videos:
        v = variants[0]
        n = v.labels.shape[0]
        frames = list(range(0, n, every if n > 2 * every else 1))
        feats = torch.from_numpy(np.asarray(v.feats[frames], dtype=np.float32)).permute(0, 3, 1, 2)
        times = torch.tensor(frames, dtype=torch.float32) * cfg.sampling.time_scale
        emb = feats if head is None else head(feats, times)
        emb = emb.permute(0, 2, 3, 1).reshape(len(frames), -1, emb.shape[1])
        labels = torch.from_numpy(np.asarray(v.labels[frames], dtype=np.int64)).reshape(len(frames), -1)
        ids = torch.unique(labels[0])
        col = torch.searchsorted(ids, labels[0])
        for i in range(1, len(frames)):
            sims = emb[i] @ emb[0].T
            nn_idx = sims.topk(k, dim=1).indices
            votes = torch.nn.functional.one_hot(col[nn_idx], len(ids)).sum(1)
            pred = ids[votes.argmax(1)]
            for obj in ids[ids > 0]:
                p, g = pred == obj, labels[i] == obj
                union = (p | g).sum()
                if union > 0:
                    ious.append(float((p & g).sum() / union))
    return float(np.mean(ious)) if ious else float("nan")


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def plot_curve(history: dict, path: Path, title: str = "") -> None:
    """Loss per step (and its running mean) and the held-out proxy, as a PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.asarray(history["step"])
    loss = np.asarray(history["loss"])
    if len(loss):
        ax.plot(steps, loss, lw=0.5, alpha=0.4, color="C0", label="loss")
        n = max(1, min(50, len(loss) // 10))
        ax.plot(steps[n - 1 :], np.convolve(loss, np.ones(n) / n, mode="valid"), color="C0", label=f"loss ({n}-step mean)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if history.get("eval_step"):
        ax2 = ax.twinx()
        ax2.plot(history["eval_step"], history["eval_score"], "o-", color="C1", label="held-out kNN IoU")
        ax2.axhline(history.get("baseline", np.nan), color="C1", ls="--", lw=0.8, label="untrained features")
        ax2.set_ylabel("held-out kNN IoU (cells)")
        ax2.legend(loc="upper right")
    ax.legend(loc="lower left")
    ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def train(cfg: TrainConfig, out: str | os.PathLike, progress: bool = True, stop_after: int | None = None) -> dict:
    """Train (or resume) into folder ``out``; return the summary written to ``out/summary.json``.

    ``stop_after``: stop after this many steps of *this* call (to test resuming).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    ckpt_path = out / "checkpoint.pt"
    videos = load_videos(cfg, cfg.sequences, cfg.variants)
    held = load_videos(cfg, cfg.holdout, ("orig",)) if cfg.holdout else []
    cin = videos[0][0].feats.shape[-1]
    torch.manual_seed(cfg.seed)  # the head's initial weights
    head = make_head(cin, cfg)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, cfg.steps) / cfg.steps)))
    history: dict[str, Any] = {"step": [], "loss": [], "eval_step": [], "eval_score": []}
    step, elapsed, best = 0, 0.0, {"score": -1.0, "step": 0}
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state["config"] != cfg.to_json():
            diff = {k: (v, cfg.to_json().get(k)) for k, v in state["config"].items() if cfg.to_json().get(k) != v}
            raise ValueError(f"{ckpt_path} was written with other settings {diff}; use another --out or delete it")
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, elapsed, history, best = state["step"], state["elapsed"], state["history"], state["best"]
        print(f"resuming {out} at step {step}", flush=True)
    (out / "config.json").write_text(json.dumps(cfg.to_json(), indent=1))
    if held and "baseline" not in history:
        history["baseline"] = knn_proxy(None, held, cfg)

    def checkpoint() -> None:
        _save({"config": cfg.to_json(), "head": head.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
               "step": step, "elapsed": elapsed, "history": history, "best": best, "cin": cin}, ckpt_path)

    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", mininterval=5)
    t_start = time.perf_counter()
    base_elapsed = elapsed
    run_steps = 0
    stopped = "steps"
    while step < cfg.steps:
        if elapsed >= cfg.time_limit:
            stopped = "time_limit"
            break
        if stop_after is not None and run_steps >= stop_after:
            stopped = "stop_after"
            break
        head.train()
        rng = np.random.default_rng([cfg.seed, step])
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        examples = [sample_example(videos, rng, cfg.sampling) for _ in range(cfg.batch)]
        loss = example_loss(head, examples, cfg, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        run_steps += 1
        elapsed = base_elapsed + time.perf_counter() - t_start
        history["step"].append(step)
        history["loss"].append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
        if held and (step % cfg.eval_every == 0 or step == cfg.steps):
            head.eval()
            score = knn_proxy(head, held, cfg)
            history["eval_step"].append(step)
            history["eval_score"].append(score)
            if not score <= best["score"]:  # nan (no objects held out) counts as better: keep the latest
                best = {"score": score, "step": step}
                _save({"config": cfg.to_json(), "head": head.state_dict(), "step": step, "cin": cin}, out / "best.pt")
            print(f"step {step}: held-out kNN IoU {score:.4f} (untrained {history['baseline']:.4f}; best {best['score']:.4f} @ {best['step']})", flush=True)
        if step % cfg.ckpt_every == 0:
            checkpoint()
    if bar is not None:
        bar.close()
    checkpoint()
    done = step >= cfg.steps or stopped == "time_limit"
    if done:
        _save({"config": cfg.to_json(), "head": head.state_dict(), "step": step, "cin": cin}, out / "final.pt")
    plot_curve(history, out / "loss.png", title=f"{out.name}: {cfg.loss} loss")
    summary = {"out": str(out), "step": step, "elapsed_s": round(elapsed, 1), "stopped": stopped, "done": done,
               "best": best, "baseline": history.get("baseline"),
               "final_loss_mean50": float(np.mean(history["loss"][-50:])) if history["loss"] else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_head(path: str | os.PathLike) -> tuple[torch.nn.Module, TrainConfig]:
    """A trained head (eval mode) and its config from ``best.pt``/``final.pt``/``checkpoint.pt``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig.from_json(state["config"])
    head = make_head(state["cin"], cfg)
    head.load_state_dict(state["head"])
    return head.eval(), cfg


__all__ = ["TrainConfig", "train", "load_head", "knn_proxy", "example_loss", "plot_curve"]

"""The training package (issue 3): losses on literal cases, sampling, steps, resume, export.

Tiny generated fixtures only (a fake feature cache of a few 12x16-cell frames); the whole
file runs in a few seconds. Skips with the reason where torch is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (pip install -e .[train])")

from training.losses import contrastive_loss, paper_triplet_loss, triplet_loss  # noqa: E402
from training.sampling import SamplingConfig, choose_anchors, sample_example  # noqa: E402


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


# One anchor at the origin of the plane; pool: positives at distance^2 1 and 4, negatives at 2 and 9.
A = t([[0.0, 0.0]])
A_IDS = t([1], torch.int64)
P = t([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
P_IDS = t([1, 1, 0, 0], torch.int64)


@pytest.mark.parametrize("alpha, expected", [(0.3, 0.0), (1.5, 0.5), (3.0, 2.0)])
def test_paper_loss_uses_closest_positive_and_negative(alpha, expected):
    # min_pos d^2 = 1, min_neg d^2 = 2: max(0, 1 - 2 + alpha)
    assert paper_triplet_loss(A, A_IDS, P, P_IDS, alpha).item() == pytest.approx(expected)


def test_paper_loss_averages_anchors_and_drops_those_without_negatives():
    a = t([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    ids = t([1, 0, 7], torch.int64)  # anchor 2: id 7 has no positive in the pool -> left out
    # anchor 0: 1 - 2 + 1.5 = 0.5; anchor 1 (background): pos min 2, neg min 1: 2 - 1 + 1.5 = 2.5
    assert paper_triplet_loss(a, ids, P, P_IDS, 1.5).item() == pytest.approx(1.5)
    assert paper_triplet_loss(a[2:], ids[2:], P, P_IDS).item() == 0.0


def test_paper_loss_gradient_flows_to_the_chosen_pair_only():
    p = P.clone().requires_grad_(True)
    paper_triplet_loss(A, A_IDS, p, P_IDS, 1.5).backward()
    g = p.grad.abs().sum(1)
    assert g[0] > 0 and g[2] > 0 and g[1] == 0 and g[3] == 0


def test_plain_triplet_with_one_positive_and_one_negative():
    p, ids = P[[1, 3]], P_IDS[[1, 3]]  # d^2 4 and 9
    assert triplet_loss(A, A_IDS, p, ids, alpha=6.0).item() == pytest.approx(1.0)
    assert triplet_loss(A, A_IDS, p, ids, alpha=0.3).item() == 0.0


def test_contrastive_literal():
    # positives: d^2 1 and 4 -> mean 2.5; negatives (margin 2): d = sqrt2, 3 -> (2 - 1.4142)^2, 0 -> mean 0.17157
    expected = 2.5 + (2 - np.sqrt(2)) ** 2 / 2
    assert contrastive_loss(A, A_IDS, P, P_IDS, margin=2.0).item() == pytest.approx(expected, rel=1e-5)


class _Seq:
    def __init__(self, feats, labels):
        self.feats, self.labels = feats, labels


def make_videos(n_videos=2, frames=5, h=12, w=16, c=16, seed=0, objects=2):
    """Fake cached features: objects are blobs whose features cluster by id, plus noise;
    channel 0 holds the frame index (so tests can see which frame a cell came from)."""
    rng = np.random.default_rng(seed)
    vids = []
    for v in range(n_videos):
        centres = rng.normal(size=(objects + 1, c)).astype(np.float32)
        labels = np.zeros((frames, h, w), np.uint8)
        for t_ in range(frames):
            for k in range(1, objects + 1):
                y, x = 1 + 3 * (k - 1) + t_ % 2, 2 + 5 * (k - 1) + t_
                labels[t_, y : y + 3, x : x + 4] = k
        feats = centres[labels] + 0.8 * rng.normal(size=(frames, h, w, c)).astype(np.float32)
        feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
        feats[..., 0] = np.arange(frames)[:, None, None]
        vids.append([_Seq(feats.astype(np.float16), labels)])
    return vids


def test_sampling_never_draws_pools_from_the_anchor_frame():
    vids = make_videos()
    cfg = SamplingConfig(anchors=32, p_static=0.0, p_paste=0.5, jitter=2)
    rng = np.random.default_rng(1)
    for _ in range(50):
        ex = sample_example(vids, rng, cfg)
        anchor_frame = ex.frames[0]
        assert len(set(ex.frames)) == 3
        assert np.all(ex.a_feats[:, 0] == anchor_frame) or np.any(ex.a_ids == 200)  # pasted cells come from a donor
        own_pool = ex.p_ids != 200
        assert not np.any(ex.p_feats[own_pool, 0] == anchor_frame)
        assert set(np.unique(ex.p_feats[own_pool, 0])) <= {ex.frames[1], ex.frames[2]}
        # the time input of the pool is that of frames 1 and 2
        assert set(np.round(ex.p_yxt[:, 2] * 100).astype(int)) <= {ex.frames[1], ex.frames[2]}


def test_anchors_balanced_over_objects_and_background():
    labels = np.zeros((10, 10), np.int64)
    labels[:2, :2] = 1
    labels[5:9, 5:9] = 3
    idx = choose_anchors(labels, 40, np.random.default_rng(0))
    ids = labels.reshape(-1)[idx]
    assert (ids == 0).sum() == 20 and (ids == 1).sum() == 10 and (ids == 3).sum() == 10


def _write_cache(root, vids, names):
    for name, v in zip(names, vids):
        d = root / "orig"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / f"{name}.npy", v[0].feats)
        np.save(d / f"{name}.labels.npy", v[0].labels)


def _cfg(cache, **kw):
    from training.train import TrainConfig

    base = dict(cache=str(cache), sequences=("a", "b"), holdout=("c",), variants=("orig",), d=16, hidden=32,
                steps=8, batch=2, lr=1e-2, eval_every=4, ckpt_every=2, sampling=SamplingConfig(anchors=32, jitter=2))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture()
def tiny_cache(tmp_path):
    vids = make_videos(3, seed=3)
    for v in vids:  # the frame-index channel is for the sampling test only
        v[0].feats[..., 0] = 0
    _write_cache(tmp_path / "cache", vids, ["a", "b", "c"])
    return tmp_path / "cache"


def test_training_steps_reduce_the_loss(tiny_cache, tmp_path):
    from training.train import train

    cfg = _cfg(tiny_cache, steps=30, lr=3e-2, loss="paper", alpha=1.0, eval_every=15, ckpt_every=15)
    summary = train(cfg, tmp_path / "run", progress=False)
    import json

    loss = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert loss["step"] == 30 and summary["done"]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    hist = state["history"]["loss"]
    assert np.mean(hist[-10:]) < np.mean(hist[:10])
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "final.pt").exists()


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_cache, tmp_path):
    from training.train import train

    cfg = _cfg(tiny_cache, dropout=0.1)
    train(cfg, tmp_path / "full", progress=False)
    part = train(cfg, tmp_path / "part", progress=False, stop_after=3)  # "killed" after 3 steps
    assert part["step"] == 3 and not part["done"]
    train(cfg, tmp_path / "part", progress=False)
    a = torch.load(tmp_path / "full" / "final.pt", weights_only=False)["head"]
    b = torch.load(tmp_path / "part" / "final.pt", weights_only=False)["head"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="other settings"):
        train(_cfg(tiny_cache, lr=0.5), tmp_path / "full", progress=False)


@pytest.mark.parametrize("loss", ["triplet", "contrastive"])
def test_other_losses_train(tiny_cache, tmp_path, loss):
    from training.train import train

    s = train(_cfg(tiny_cache, loss=loss, steps=4, holdout=()), tmp_path / loss, progress=False)
    assert s["done"] and np.isfinite(s["final_loss_mean50"])


def test_export_of_a_tiny_model_runs_in_onnxruntime(tiny_cache, tmp_path):
    pytest.importorskip("onnx", reason="export needs onnx")
    pytest.importorskip("onnxruntime")
    from training.export import export_checkpoint
    from training.train import TrainConfig, make_head

    # A head over the real backbone's 128 channels (backbone weights random: no download needed).
    cfg = TrainConfig(cache=str(tiny_cache), sequences=("a",), d=64, hidden=32, spatio_temporal=True)
    head = make_head(128, cfg)
    torch.nn.init.normal_(head.conv2.weight, std=0.1)
    ckpt = tmp_path / "final.pt"
    torch.save({"config": cfg.to_json(), "head": head.state_dict(), "step": 1, "cin": 128}, ckpt)
    info = export_checkpoint(ckpt, tmp_path / "tiny.onnx", imagenet=False, card=tmp_path / "CARD.md")
    assert info["max_abs_diff_vs_torch"] < 1e-3 and info["d"] == 64
    assert "How it was trained" in (tmp_path / "CARD.md").read_text()


def test_training_is_not_imported_by_pml_rt():
    import subprocess
    import sys

    code = "import sys, pml_rt; print(any(m == 'training' or m.startswith('training.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_is_dilated_to_stride_8(variant):
    from pml_rt.network.efficientnet import DilatedEfficientNetLite

    net = DilatedEfficientNetLite(variant).eval()
    with torch.no_grad():
        outs = net(torch.rand(1, 3, 60, 90))
    assert [o.shape[-2:] for o in outs] == [torch.Size([8, 12])] * 2  # ceil(60/8), ceil(90/8)
    assert [o.shape[1] for o in outs] == net.out_channels


def test_efficientnet_lite_matches_the_package_module_names():
    pkg = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch==0.1.0")
    from pml_rt.network.efficientnet import DilatedEfficientNetLite

    theirs = pkg.EfficientNet.from_name("efficientnet-lite0").state_dict()
    ours = DilatedEfficientNetLite(0).state_dict()
    assert all(k in theirs and theirs[k].shape == v.shape for k, v in ours.items())


@pytest.mark.parametrize("hw", [(60, 90), (57, 83)])
def test_mobilenet_v2_os16_taps_and_embeddings_stay_on_the_stride_8_grid(hw):
    from pml_rt.network.embedder import Embedder, build_backbone
    from pml_rt.registry import get_model_config

    net = build_backbone("mobilenet_v2_os16", (6, 13), stride=8, imagenet=False).eval()
    same = build_backbone("mobilenet_v2", (6, 13), stride=8, imagenet=False).eval()
    same.load_state_dict(net.state_dict())  # the same weights: only strides and dilations differ
    x = torch.rand(1, 3, *hw)
    with torch.no_grad():
        fine, coarse = net(x)
        fine8, coarse8 = same(x)
    cells = (-(-hw[0] // 8), -(-hw[1] // 8))
    assert fine.shape[-2:] == coarse8.shape[-2:] == cells
    assert coarse.shape[-2:] == (-(-cells[0] // 2), -(-cells[1] // 2))  # block 13 at stride 16
    torch.testing.assert_close(fine, fine8)  # up to block 6 the two networks are one
    model = Embedder(get_model_config("mnv2-os16-d64"), imagenet=False).eval()
    with torch.no_grad():
        emb = model(x * 255, torch.zeros(1))
    assert emb.shape == (1, 64, *cells)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(1, *cells))


def test_unknown_backbone_lists_the_defined_ones():
    from pml_rt.network.embedder import build_backbone

    with pytest.raises(ValueError, match="mobilenet_v2_os16"):
        build_backbone("resnet101", None)

"""The interactive Session: verbs, undo, object removal, input checks, and the incremental
search against a brute-force kNN of the active references."""

from __future__ import annotations

import numpy as np
import pytest

from pml_rt.errors import InputError, StateError
from pml_rt.robots import synthetic_video
from pml_rt.session import Session, Update, bilinear_onehot_labels
from pml_rt.upsample import METHODS, upsample_labels
from pml_rt.xp import to_host


@pytest.fixture
def clip():
    """4 frames, 48x64, two squares (ids 1, 2) with hand-made embeddings (cells 6 x 8)."""
    return synthetic_video(4, (48, 64), 2, seed=1)


def centre(gt: np.ndarray, t: int, obj: int) -> tuple[int, int]:
    ys, xs = np.nonzero(gt[t] == obj)
    return int(xs.mean()), int(ys.mean())


def cell_positions(s: Session) -> np.ndarray:
    """float64 (T*h*w, 3): each cell's (x, y) centre over the frame's longer side and t * time_scale / 100."""
    t, h, w = s.shape
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    side = max(s.frame_size)
    return np.stack([(xx.ravel() + 0.5) * 8 / side, (yy.ravel() + 0.5) * 8 / side,
                     tt.ravel() * s.time_scale / 100], axis=1)


def brute_force_labels(s: Session) -> np.ndarray:
    """uint8 (T, h, w): each cell's k-NN vote among the active references, computed directly."""
    emb = to_host(s.emb).astype(np.float64)
    active = np.flatnonzero(s.ref_active)
    refs = emb[s.ref_cell[active]]
    sims = emb @ refs.T  # (N, M)
    if s.position_weight:  # less a^2 |p - p'|^2 / 2
        p = cell_positions(s)
        d2 = ((p[:, None, :] - p[s.ref_cell[active]][None, :, :]) ** 2).sum(axis=2)
        sims = sims - s.position_weight ** 2 / 2 * d2
    ids = s.ref_obj[active]
    cols = np.array([s.object_columns.index(int(i)) for i in ids])
    if s.temporal is not None:
        raw = np.asarray(s.object_columns, np.uint8)[spread_columns(s, sims, cols)]
    else:
        if s.background_floor is not None:  # one more background reference in every cell, this similar
            sims = np.concatenate([sims, np.full((len(sims), 1), s.background_floor)], axis=1)
            cols = np.append(cols, 0)
        order = np.argsort(-sims, axis=1, kind="stable")[:, : s.k]
        votes = np.zeros((len(emb), len(s.object_columns)))
        np.add.at(votes, (np.arange(len(emb))[:, None], cols[order]), 1)
        raw = np.asarray(s.object_columns, np.uint8)[votes.argmax(axis=1)]
    if s.smoothing is None:
        return raw.reshape(s.shape)
    shown = box_majority(raw.reshape(s.shape), s.smoothing)
    shown[s.ref_cell[active]] = raw[s.ref_cell[active]]  # annotated cells keep their own label
    return shown.reshape(s.shape)


def spread_columns(s: Session, sims: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Column of every cell after temporal spreading, written out: each column's best
    similarity, a softmax over columns, then the forward and backward passes frame by frame
    along the session's matches (dense), annotated cells held at their own column."""
    from pml_rt.session import TEMPORAL_EVIDENCE_TEMPERATURE

    t, h, w = s.shape
    c = len(s.object_columns)
    best = np.stack([sims[:, cols == j].max(axis=1) if (cols == j).any() else np.full(len(sims), -np.inf)
                     for j in range(c)], axis=1)
    if s.background_floor is not None:
        best[:, 0] = np.maximum(best[:, 0], s.background_floor)
    keep = np.full((t * h * w, 1), 1 - s.temporal)  # each cell's share of its own evidence
    if s.trust_span is not None:
        keep *= np.clip((best.max(axis=1, keepdims=True) - (s.background_floor or 0)) / s.trust_span, 0, 1)
    keep = keep.reshape(t, h * w, 1)
    z = best / TEMPORAL_EVIDENCE_TEMPERATURE
    ev = np.exp(z - z.max(axis=1, keepdims=True))
    ev = (ev / ev.sum(axis=1, keepdims=True)).reshape(t, h * w, c)
    active = np.flatnonzero(s.ref_active)
    seed = np.full((t, h * w), -1)
    seed.reshape(-1)[s.ref_cell[active]] = cols

    def step(own, prev, link, i):
        x = own.copy() if link is None else keep[i] * own + (1 - keep[i]) * (to_host(link.toarray()) @ prev)
        x[seed[i] >= 0] = np.eye(c)[seed[i][seed[i] >= 0]]
        return x

    fwd, bwd = [None] * t, [None] * t
    for i in range(t):
        fwd[i] = step(ev[i], fwd[i - 1] if i else None, s._links.back[i], i)
    for i in range(t - 1, -1, -1):
        bwd[i] = step(ev[i], bwd[i + 1] if i < t - 1 else None, s._links.ahead[i], i)
    total = np.stack(fwd) + np.stack(bwd) - keep * ev  # (the session rescales each cell: same argmax)
    return total.reshape(t * h * w, c).argmax(axis=1)


def box_majority(raw: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """Each cell's id holding at least two thirds of the box around it (edges repeated), else
    its own, cell by cell."""
    r = [n // 2 for n in box]
    padded = np.pad(raw, [(q, q) for q in r], mode="edge")
    out = raw.copy()
    for t, y, x in np.ndindex(*raw.shape):
        window = padded[t:t + box[0], y:y + box[1], x:x + box[2]].ravel()
        counts = np.bincount(window, minlength=256)
        if 3 * counts.max() >= 2 * window.size:
            out[t, y, x] = counts.argmax()
    return out.reshape(-1)


def test_clicks_on_two_objects_label_them(clip, xp):
    video, gt = clip
    s = video.session(xp=xp)
    (x1, y1), (x2, y2) = centre(gt, 0, 1), centre(gt, 0, 2)
    up = s.add_clicks(0, [[x1, y1], [x2, y2], [1, 1]], [3, 7, 0])  # user ids need not be 1..K
    assert isinstance(up, Update) and up.frames == (0, 1, 2, 3)
    masks = s.masks()
    assert masks.dtype == np.uint8 and masks.shape == gt.shape
    for t in range(4):
        for obj, want in ((1, 3), (2, 7)):
            x, y = centre(gt, t, obj)
            assert masks[t, y, x] == want
    assert (masks[gt == 0] == 0).mean() > 0.95
    assert np.array_equal(s.mask(2), masks[2])
    assert s.object_ids == [3, 7] and s.object_columns == [0, 3, 7]
    assert s.cell_labels().shape == (4, 6, 8)


def test_background_click_alone_gives_background(clip):
    video, _ = clip
    s = video.session()
    s.add_clicks(1, [[2, 2]], [0])
    assert not s.masks().any()


def test_masks_before_any_annotation_is_a_state_error(clip):
    s = clip[0].session()
    with pytest.raises(StateError, match="no annotation yet"):
        s.masks()
    with pytest.raises(RuntimeError):
        s.mask(0)
    with pytest.raises(StateError, match="nothing to undo"):
        s.undo()


def test_undo_restores_the_previous_masks_exactly(clip):
    video, gt = clip
    s = video.session()
    s.add_clicks(0, [centre(gt, 0, 1), [1, 1]], [1, 0])
    before = s.masks()
    s.add_clicks(3, [centre(gt, 3, 2)], [2])
    s.add_scribble(2, [[0, 0], [63, 47]], 0)
    assert not np.array_equal(s.masks(), before)
    s.undo()
    s.undo()
    assert np.array_equal(s.masks(), before)
    assert s.object_ids == [1]
    s.undo()
    with pytest.raises(StateError):
        s.masks()


def test_remove_object_removes_its_id_everywhere_and_undo_brings_it_back(clip, xp):
    video, gt = clip
    s = video.session(xp=xp)
    s.add_clicks(0, [centre(gt, 0, 1), centre(gt, 0, 2), [1, 1]], [1, 2, 0])
    s.add_clicks(2, [centre(gt, 2, 2)], [2])
    full = s.masks()
    assert (full == 2).any()
    up = s.remove_object(2)
    assert up.cells > 0
    masks = s.masks()
    assert not (masks == 2).any() and (masks == 1).any()
    assert s.object_ids == [1]
    with pytest.raises(InputError, match="not annotated"):
        s.remove_object(2)
    s.undo()
    assert s.object_ids == [1, 2]
    assert np.array_equal(s.masks(), full)


def test_add_mask_on_a_middle_frame():
    video, gt = synthetic_video(4, (48, 64), 2, seed=1, square=24)
    s = video.session(background_stride=1)
    s.add_mask(2, gt[2])
    # with every cell a reference, the annotated frame keeps each cell's majority id
    from pml_rt.annotations import ObjectMap, cell_labels

    om = ObjectMap([1, 2])
    want = om.lut()[cell_labels(om.columns_of(gt[2]), om.num_labels)]
    assert np.array_equal(s.cell_labels()[2], want)
    for t in (0, 1, 3):  # the other frames follow at cell level (pixels are coarse at 8 px a cell)
        want = om.lut()[cell_labels(om.columns_of(gt[t]), om.num_labels)]
        assert (s.cell_labels()[t] == want).mean() > 0.8  # boundary cells mix labels
    masks = s.masks()
    assert set(np.unique(masks)) == {0, 1, 2}
    assert s.annotations[0].kind == "mask" and s.annotations[0].frame == 2
    # a later mask on the same frame replaces the frame's references
    s.add_mask(2, np.zeros_like(gt[2]))
    assert not s.masks().any()
    s.undo()
    assert np.array_equal(s.masks(), masks)


def test_mask_with_a_wrong_size_is_rejected(clip):
    s = clip[0].session()
    with pytest.raises(InputError):
        s.add_mask(0, np.zeros((10, 10), np.uint8))


@pytest.mark.parametrize("points, match", [
    ([[64, 3]], r"frame 1: point 0 \(x=64, y=3\) is outside the frame of size 64x48"),
    ([[3, 3], [-1, 5]], r"frame 1: point 1 \(x=-1, y=5\)"),
    ([[3, 48]], r"y=48"),
    ([[np.nan, 3]], r"point 0"),
    ([[1, 2, 3]], r"expected an \(N, 2\) array"),
])
def test_points_outside_the_frame_name_frame_point_and_size(clip, points, match):
    s = clip[0].session()
    with pytest.raises(InputError, match=match):
        s.add_clicks(1, points, [1] * len(points))


def test_bad_labels_and_frames(clip):
    s = clip[0].session()
    with pytest.raises(InputError, match="outside 0..255"):
        s.add_clicks(0, [[1, 1]], [256])
    with pytest.raises(InputError, match="one per point"):
        s.add_clicks(0, [[1, 1], [2, 2]], [1, 2, 3])
    with pytest.raises(InputError, match="integers"):
        s.add_clicks(0, [[1, 1]], [1.5])
    with pytest.raises(InputError, match="out of range"):
        s.add_clicks(4, [[1, 1]], [1])
    with pytest.raises(InputError, match="scribble point 1"):
        s.add_scribble(0, [[1, 1], [100, 1]], 1)
    with pytest.raises(InputError, match="k must be"):
        Session(clip[0], k=0)
    assert not s.history  # nothing half-added


def test_a_new_label_on_an_annotated_cell_replaces_the_old_one(clip):
    video, gt = clip
    s = video.session()
    x, y = centre(gt, 0, 1)
    s.add_clicks(0, [[x, y], [1, 1]], [1, 0])
    assert s.mask(0)[y, x] == 1
    s.add_clicks(0, [[x + 1, y]], [0])  # same cell
    assert s.mask(0)[y, x] == 0 and s.num_references == 2
    s.undo()
    assert s.mask(0)[y, x] == 1 and s.num_references == 2


@pytest.mark.parametrize("options", [{}, {"smoothing": None}, {"k": 3}, {"k": 3, "smoothing": None},
                                     {"position_weight": 2.0, "time_scale": 10.0, "smoothing": (1, 3, 5)},
                                     {"k": 2, "position_weight": 1.0}, {"temporal": None},
                                     {"temporal": None, "smoothing": None}, {"temporal": None, "k": 3},
                                     {"temporal": 0.5, "smoothing": None, "upsample": "bilateral-solver"},
                                     {"background_floor": None}, {"background_floor": 0.85, "smoothing": None},
                                     {"background_floor": 0.85, "temporal": None, "k": 3, "smoothing": None},
                                     {"background_floor": 0.85, "temporal": None, "smoothing": None},
                                     {"trust_span": None}, {"trust_span": 3.0, "smoothing": None},
                                     {"trust_span": 2.0, "background_floor": None, "smoothing": None}])
def test_incremental_search_equals_a_from_scratch_recompute(options, xp):
    video, gt = synthetic_video(5, (40, 56), 3, seed=4, noise=0.4)
    s = video.session(xp=xp, **options)
    rng = np.random.default_rng(0)
    for step in range(30):
        op = rng.choice(["click", "click", "click", "scribble", "undo", "remove"])
        t = int(rng.integers(5))
        if op == "click":
            pts = rng.integers(0, [56, 40], size=(int(rng.integers(1, 4)), 2))
            s.add_clicks(t, pts, gt[t, pts[:, 1], pts[:, 0]])
        elif op == "scribble":
            s.add_scribble(t, rng.integers(0, [56, 40], size=(3, 2)), int(rng.integers(4)))
        elif op == "undo" and s.history:
            s.undo()
        elif op == "remove" and s.object_ids:
            s.remove_object(int(rng.choice(s.object_ids)))
        if s.num_references:
            assert np.array_equal(s.cell_labels(), brute_force_labels(s)), (step, op)
    if s.num_references:
        incremental = s.masks()
        s.recompute()
        assert np.array_equal(s.masks(), incremental)


@pytest.mark.parametrize("options", [{"smoothing": None}, {}, {"k": 3, "smoothing": None}, {"k": 3},
                                     {"k": 2, "position_weight": 1.0, "time_scale": 10.0, "smoothing": (3, 1, 1)},
                                     {"temporal": None, "smoothing": None}, {"temporal": None},
                                     {"temporal": None, "k": 3, "smoothing": None},
                                     {"background_floor": 0.85, "k": 3}, {"background_floor": None},
                                     {"trust_span": None}, {"trust_span": 3.0, "smoothing": None}])
def test_deferred_annotations_update_their_frame_first_and_settle_to_the_same_state(options, xp, monkeypatch):
    """defer=True: the annotated frame at once (exact without temporal spreading; with it,
    provisional: the frames beyond TEMPORAL_DEFER_FRAMES keep their old evidence), the rest
    after settle(); the state ends up the same as one plain call's."""
    import pml_rt.session as session_module

    monkeypatch.setattr(session_module, "TEMPORAL_DEFER_FRAMES", 1)  # 5 frames: leave some for settle()
    video, gt = synthetic_video(5, (40, 56), 3, seed=4, noise=0.4)
    plain, lazy = video.session(xp=xp, **options), video.session(xp=xp, **options)
    temporal = plain.temporal is not None
    rng = np.random.default_rng(1)
    for step in range(30):
        op = rng.choice(["click", "click", "click", "scribble", "mask", "undo", "remove"])
        t = int(rng.integers(5))
        if op in ("click", "scribble", "mask"):
            if op == "click":
                pts = rng.integers(0, [56, 40], size=(int(rng.integers(1, 4)), 2))
                args = ("add_clicks", t, pts, gt[t, pts[:, 1], pts[:, 0]])
            elif op == "scribble":
                args = ("add_scribble", t, rng.integers(0, [56, 40], size=(3, 2)), int(rng.integers(4)))
            else:
                args = ("add_mask", t, gt[t])
            want = getattr(plain, args[0])(*args[1:])
            first = getattr(lazy, args[0])(*args[1:], defer=True)
            r = 0 if lazy.smoothing is None else lazy.smoothing[0] // 2
            if temporal:
                r = max(r, 1)
            assert lazy.pending == (t - r > 0 or t + r < 4), (step, op)  # unless the span is the clip
            if not temporal:  # labels are spread over every frame with it
                assert set(first.frames) <= set(range(t - 2 * r, t + 2 * r + 1)), (step, op)
                assert np.array_equal(lazy.mask(t), plain.mask(t)), (step, op)  # no settle for its own frame
            pending = lazy.pending
            lazy.mask(t)  # its own frame: no settle
            assert lazy.pending == pending
            rest = lazy.settle()
            assert not lazy.pending and lazy.settle() == Update((), 0)
            if lazy.smoothing is None and not temporal:  # else cells may change and change back
                assert sorted({*first.frames, *rest.frames}) == list(want.frames), (step, op)
                assert first.cells + rest.cells == want.cells, (step, op)
            else:
                assert set(want.frames) <= {*first.frames, *rest.frames}, (step, op)
        elif op == "undo" and plain.history:
            plain.undo()
            lazy.undo()
        elif op == "remove" and plain.object_ids:
            obj = int(rng.choice(plain.object_ids))
            plain.remove_object(obj)
            lazy.remove_object(obj)
        # Same similarities (up to float32 rounding: one frame's product or the whole video's).
        np.testing.assert_allclose(to_host(lazy._best), to_host(plain._best), rtol=0, atol=1e-5)
        if plain.num_references:
            assert np.array_equal(lazy.cell_labels(), plain.cell_labels()), (step, op)
            assert np.array_equal(lazy.cell_labels(), brute_force_labels(lazy)), (step, op)


def test_reading_another_frame_settles_a_deferred_annotation(clip):
    video, gt = clip
    s = video.session(temporal=None)
    s.add_clicks(0, [centre(gt, 0, 1), (1, 1)], [1, 0], defer=True)
    assert s.pending
    s.mask(0)
    assert s.pending  # its own frame is up to date already
    m3 = s.mask(3)
    assert not s.pending and m3[centre(gt, 3, 1)[::-1]] == 1
    s.add_clicks(2, [centre(gt, 2, 2)], [2], defer=True)
    s.undo()  # settles, then takes the click back
    assert not s.pending and 2 not in s.object_ids and s.mask(2).max() == 1


@pytest.mark.parametrize("size, n", [((480, 854), 2), ((480, 854), 4), ((50, 61), 3), ((17, 9), 2),
                                     ((7, 5), 2), ((64, 48), 14)])
def test_fast_bilinear_labels_equal_the_upsample_dispatcher(size, n, xp):
    rng = np.random.default_rng(n)
    h, w = -(-size[0] // 8), -(-size[1] // 8)
    cols = rng.integers(0, n, size=(h, w))
    columns = [0, *rng.choice(np.arange(1, 256), size=n - 1, replace=False).tolist()]
    ids = np.asarray(columns, np.uint8)[cols]
    onehot = (cols[None] == np.arange(n)[:, None, None]).astype(np.float32)
    want = np.asarray(columns, np.uint8)[to_host(upsample_labels(xp.asarray(onehot), size, "bilinear"))]
    got = to_host(bilinear_onehot_labels(xp.asarray(ids), columns, size))
    assert np.array_equal(got, want)


@pytest.mark.parametrize("method", METHODS)
def test_full_resolution_masks_show_what_the_cells_show(method):
    """Every upsampling refines the shown cell labels: the squares (2 x 2 cells, which the
    smoothing keeps though they hold less than half of their boxes) stay in the masks, and
    cells whose neighbours all show their label keep it at every pixel. Edge-aware methods
    read each frame from the source once (all of them, in order, when the session starts),
    however many times the frames are redrawn."""
    import dataclasses

    from pml_rt.io import ArraySource

    class Counting(ArraySource):
        def _read(self, i: int) -> np.ndarray:
            reads.append(i)
            return super()._read(i)

        def _iter_frames(self):
            for i, frame in enumerate(super()._iter_frames()):
                reads.append(i)
                yield frame

    reads: list[int] = []
    video, gt = synthetic_video(4, (48, 64), 2, seed=1)
    video = dataclasses.replace(video, source=Counting(np.stack(list(video.source))))
    s = video.session(upsample=method)
    assert reads == ([] if method == "bilinear" else [0, 1, 2, 3])
    (x1, y1), (x2, y2) = centre(gt, 0, 1), centre(gt, 0, 2)
    s.add_clicks(0, [[x1, y1], [x2, y2], [1, 1]], [3, 7, 0])
    s.mask(2)
    s.add_clicks(3, [[60, 44]], [0])
    masks = s.masks()
    for t in range(4):
        for obj, want in ((1, 3), (2, 7)):
            x, y = centre(gt, t, obj)
            assert masks[t, y, x] == want, (t, obj)
    if method != "bilateral-solver":  # the solver's band reaches further than one cell
        cells = s.cell_labels()
        pad = np.pad(cells, ((0, 0), (1, 1), (1, 1)), mode="edge")
        for t, cy, cx in zip(*np.nonzero(cells >= 0)):
            if (pad[t, cy:cy + 3, cx:cx + 3] == cells[t, cy, cx]).all():
                assert (masks[t, cy * 8:cy * 8 + 8, cx * 8:cx * 8 + 8] == cells[t, cy, cx]).all()
    assert reads == ([] if method == "bilinear" else [0, 1, 2, 3])


def test_masks_drawn_on_threads_equal_one_thread(clip, monkeypatch):
    import pml_rt.session as session_module

    video, gt = clip
    got = {}
    for threads, chunk in ((1, 16), (2, 3)):  # 4 frames: one chunk, then two on two threads
        monkeypatch.setattr(session_module, "MASK_THREADS", threads)
        monkeypatch.setattr(session_module, "MASK_CHUNK", chunk)
        s = video.session(upsample="joint-bilateral")
        s.add_clicks(0, [list(centre(gt, 0, 1)), list(centre(gt, 0, 2)), [1, 1]], [1, 2, 0])
        got[threads] = s.masks()
    assert np.array_equal(got[1], got[2]) and (got[1] > 0).any()


@pytest.mark.parametrize("method", ["bilinear", "joint-bilateral"])
def test_upsample_option_and_k5_vote_shares(clip, method):
    video, gt = clip
    s = video.session(k=5, upsample=method)
    s.add_mask(0, gt[0])
    masks = s.masks()
    assert masks.shape == gt.shape and set(np.unique(masks)) <= {0, 1, 2}
    sc = s.scores(1)
    assert sc.shape == (3, 6, 8) and np.allclose(sc.sum(axis=0), 1)
    assert np.array_equal(s.mask(1), masks[1])


def test_position_prior_defaults_follow_the_model():
    import dataclasses

    from pml_rt.registry import get_model_config
    from pml_rt.session import UNTRAINED_POSITION_WEIGHT, _position_defaults

    cfg = get_model_config("mnv2-os8-untrained")
    assert not cfg.trained and _position_defaults(cfg, None, None) == (UNTRAINED_POSITION_WEIGHT, 0.0)
    assert _position_defaults(dataclasses.replace(cfg, trained=True), None, None) == (0.0, 0.0)
    assert _position_defaults(dataclasses.replace(cfg, extra={"position_weight": 1.5}), None, 2) == (1.5, 2.0)
    video, gt = synthetic_video(2, (32, 48), 1)
    assert video.session().position_weight == 0.0  # the synthetic clip's config turns it off
    s = video.session(position_weight=2.0)
    assert s.position_weight == 2.0 and s.emb.shape == (2 * 4 * 6, 16)
    with pytest.raises(InputError, match="position_weight"):
        video.session(position_weight=-1)


def test_position_prior_keeps_a_click_local():
    """Identical embeddings everywhere: only the distance decides, so each cell takes its
    nearest click's label (a Voronoi split of the frame)."""
    from pml_rt.io import ArraySource
    from pml_rt.registry import get_model_config
    from pml_rt.segmenter import EmbeddedVideo

    emb = np.zeros((2, 6, 8, 4), np.float16)
    emb[..., 0] = 1
    video = EmbeddedVideo(ArraySource(np.zeros((2, 48, 64, 3), np.uint8)), emb, get_model_config())
    s = video.session(position_weight=1.0)
    s.add_clicks(0, [[4, 4], [60, 44]], [1, 0])
    cells = s.cell_labels()
    assert cells[1, 0, 0] == 1 and cells[1, 5, 7] == 0 and cells[0, 1, 1] == 1 and cells[0, 4, 6] == 0


def test_real_embedder_on_a_tiny_clip(segmenter, tiny_clip):
    frames, gt = tiny_clip
    video = segmenter.embed(frames, progress=False)
    s = video.session()
    s.add_clicks(0, [centre(gt, 0, 1), centre(gt, 0, 2), [1, 46], [62, 1]], [1, 2, 0, 0])
    masks = s.masks()
    for t in range(len(gt)):
        for obj in (1, 2):
            x, y = centre(gt, t, obj)
            assert masks[t, y, x] == obj


def test_smoothing_option_is_checked(clip):
    video, _ = clip
    assert video.session(smoothing=(1, 1, 1)).smoothing is None
    assert video.session(smoothing=[1, 3, 5]).smoothing == (1, 3, 5)
    for bad in [(2, 3, 3), (3, 3), "3x3x3", (3, 3, 0), (3.5, 3, 3), (15, 5, 5)]:
        with pytest.raises(InputError, match="smoothing"):
            video.session(smoothing=bad)


def test_smoothing_removes_a_lone_wrong_cell_but_keeps_a_small_object(clip):
    """The 3x3x3 rule on hand-set nearest-neighbour labels: a still 2 x 2-cell object (16 px)
    keeps its cells (it holds 12 of 27 in each box, the background 15, short of two thirds); a
    lone cell and a one-frame flicker go."""
    video, gt = clip
    s = video.session()
    s.add_clicks(0, [centre(gt, 0, 1), (1, 1)], [1, 0])
    raw = np.zeros(s.shape, np.uint8)  # (4, 6, 8)
    raw[:, 1:3, 1:3] = 1  # the small object, in every frame
    raw[2, 4, 6] = 1  # a lone wrong cell
    raw[1, 4:6, 3:5] = 1  # a 2 x 2 flicker on one frame only
    s._labels[:] = raw.reshape(-1)
    s._reshow(None)
    want = np.zeros_like(raw)
    want[:, 1:3, 1:3] = 1
    assert np.array_equal(s.cell_labels(), want)
    assert np.array_equal(box_majority(raw, (3, 3, 3)).reshape(raw.shape), want)


def test_propagate_hands_the_shown_mask_of_a_frame_to_the_semi_supervised_path(clip, monkeypatch):
    video, gt = clip
    s = video.session()
    with pytest.raises(StateError):
        s.propagate(1)  # nothing annotated yet
    s.add_clicks(1, [centre(gt, 1, 1), [2, 2]], [1, 0])
    before = s.masks()
    seen = {}
    real = video.propagate

    def spy(mask, frame=0, **kw):
        seen.update(mask=mask.copy(), frame=frame, **kw)
        return real(mask, frame=frame, **kw)

    monkeypatch.setattr(video, "propagate", spy)
    out = s.propagate(1, upsample="bilinear")
    assert seen["frame"] == 1 and seen["upsample"] == "bilinear"
    np.testing.assert_array_equal(seen["mask"], before[1])  # what the user sees on that frame
    assert out.shape == gt.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1], before[1])  # the annotated frame comes back as given
    for t in range(len(gt)):  # object 1 followed to every frame
        x, y = centre(gt, t, 1)
        assert out[t, y, x] == 1
    np.testing.assert_array_equal(s.masks(), before)  # the session is left as it was
    with pytest.raises(InputError, match="out of range"):
        s.propagate(9)


def test_propagate_needs_an_object_on_the_frame(clip):
    video, _ = clip
    s = video.session()
    s.add_clicks(0, [[2, 2]], [0])
    with pytest.raises(StateError, match="shows no object"):
        s.propagate(0)


def test_propagate_without_a_frame_starts_from_every_annotated_frame(clip, monkeypatch):
    video, gt = clip
    s = video.session()
    with pytest.raises(StateError):
        s.propagate()
    s.add_clicks(0, [centre(gt, 0, 1), [2, 2]], [1, 0])
    s.add_clicks(2, [centre(gt, 2, 2)], [2])
    s.add_clicks(3, [[1, 1]], [0])
    shown = s.masks()
    seen = {}
    real = video.propagate_keyframes

    def spy(masks, **kw):
        seen.update(masks={f: m.copy() for f, m in masks.items()}, **kw)
        return real(masks, **kw)

    monkeypatch.setattr(video, "propagate_keyframes", spy)
    out = s.propagate(upsample="bilinear")
    annotated_with_objects = [f for f in (0, 2, 3) if shown[f].any()]
    assert sorted(seen["masks"]) == annotated_with_objects and seen["upsample"] == "bilinear"
    for f in annotated_with_objects:
        np.testing.assert_array_equal(seen["masks"][f], shown[f])
        np.testing.assert_array_equal(out[f], shown[f])
    np.testing.assert_array_equal(s.masks(), shown)  # the session is left as it was


def test_temporal_scores_are_the_shares_behind_the_labels(clip, xp):
    video, gt = clip
    s = video.session(smoothing=None, xp=xp)
    s.add_clicks(0, [centre(gt, 0, 1), centre(gt, 0, 2), (1, 1)], [1, 2, 0])
    labels = s.cell_labels()
    cols = np.asarray(s.object_columns)
    for t in range(gt.shape[0]):
        sc = s.scores(t)
        assert sc.shape == (3, *labels.shape[1:]) and (sc >= -1e-6).all()
        np.testing.assert_allclose(sc.sum(axis=0), 1, atol=1e-5)
        assert np.array_equal(cols[sc.argmax(axis=0)], labels[t])


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.9", float("nan")])
def test_temporal_share_must_be_in_0_1(clip, bad):
    with pytest.raises(InputError, match="temporal must be None or a share"):
        clip[0].session(temporal=bad)
    assert clip[0].session(temporal=0).temporal is None  # 0 carries nothing: off


def test_progress_reports_every_matched_frame_and_bad_values_are_rejected(clip, capsys):
    video, gt = clip
    done: list[int] = []
    s = video.session(progress=done.append)
    assert done == list(range(1, gt.shape[0] + 1))
    quiet = video.session()
    for sess in (s, quiet):
        sess.add_clicks(0, [centre(gt, 0, 1), (1, 1)], [1, 0])
    np.testing.assert_array_equal(s.masks(), quiet.masks())  # reporting changes nothing
    video.session(progress=True)
    assert "match frames" in capsys.readouterr().err  # the tqdm bar
    with pytest.raises(InputError, match="progress must be True, False or a callable"):
        video.session(progress="yes")
    reported = len(done)
    video.session(temporal=None, progress=done.append)  # nothing to match: no report
    assert len(done) == reported


def test_background_floor_makes_cells_unlike_every_object_reference_background(clip):
    video, gt = clip
    one_click = [centre(gt, 0, 1)]
    bare = video.session(background_floor=None, smoothing=None, temporal=None)
    bare.add_clicks(0, one_click, [1])
    assert (bare.cell_labels() == 1).all()  # the only reference: every cell's nearest
    floored = video.session(background_floor=0.5, smoothing=None, temporal=None)
    floored.add_clicks(0, one_click, [1])
    labels = floored.cell_labels()
    assert (labels == 1).any() and (labels == 0).any()
    e = to_host(floored.emb)
    ref = floored.ref_cell[np.flatnonzero(floored.ref_active)][0]
    sims = (e @ e[ref]).reshape(labels.shape) - position_penalty(floored, ref)
    np.testing.assert_array_equal(labels == 1, sims > 0.5)  # object exactly where more similar than the floor


def position_penalty(s: Session, ref: int) -> np.ndarray:
    """The position penalty a^2 |p - p'|^2 / 2 of every cell to cell ``ref`` (T, h, w)."""
    p = cell_positions(s)
    return (s.position_weight ** 2 / 2 * ((p - p[ref]) ** 2).sum(axis=1)).reshape(s.shape)


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), "0.5", True])
def test_trust_span_must_be_a_positive_similarity(clip, bad):
    with pytest.raises(InputError, match="trust_span must be None or a similarity > 0"):
        clip[0].session(trust_span=bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.1", True])
def test_background_floor_must_be_a_finite_number(clip, bad):
    with pytest.raises(InputError, match="background_floor must be None or a finite similarity"):
        clip[0].session(background_floor=bad)

"""Properties every assigner must keep, on random scenes (hypothesis)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fss_train.assigners.pairs as sparse
import fss_train.assigners.segments as segments
from fss_core.nn import make_points
from fss_train.assigners import ASSIGNERS, FSSAssigner, SimOTAAssigner
from fss_train.assigners.base import prepare_inputs

C = 3


def random_scene(seed: int, B: int = 2, M: int = 6, size: int = 96, max_side: float = 60.0):
    g = torch.Generator().manual_seed(seed)
    pts, strides = make_points(size, size, (8, 16, 32))
    A = len(pts)
    wh = torch.rand(B, M, 2, generator=g) * max_side + 2
    xy = torch.rand(B, M, 2, generator=g) * (size - wh)
    gt_boxes = torch.cat((xy, xy + wh), -1)
    gt_mask = torch.rand(B, M, generator=g) < 0.8
    gt_labels = torch.randint(0, C, (B, M), generator=g)
    gt_boxes[~gt_mask] = 0          # padding rows carry no meaning
    centre = pts[None] + torch.randn(B, A, 2, generator=g) * strides[None, :, None]
    half = torch.rand(B, A, 2, generator=g) * strides[None, :, None] * 3 + 1
    pred_boxes = torch.cat((centre - half, centre + half), -1)
    return (torch.rand(B, A, C, generator=g), torch.rand(B, A, generator=g), pred_boxes, pts, strides,
            gt_labels, gt_boxes, gt_mask)


seeds = st.integers(0, 2**31 - 1)


@pytest.mark.parametrize("name", sorted(ASSIGNERS))
@settings(max_examples=25, deadline=None)
@given(seed=seeds)
def test_result_is_consistent(name, seed):
    args = random_scene(seed)
    res = ASSIGNERS[name]()(*args)
    gt_labels, gt_boxes, gt_mask = args[5], args[6], args[7]
    fg = res.fg_mask
    assert torch.equal(fg, res.gt_index >= 0)                     # one GT per point, -1 = background
    b, a = torch.nonzero(fg, as_tuple=True)
    g = res.gt_index[b, a]
    assert gt_mask[b, g].all()                                    # only real GTs
    assert torch.equal(res.target_labels[b, a], gt_labels[b, g])
    assert torch.equal(res.target_boxes[b, a], gt_boxes[b, g])
    assert (res.target_labels[~fg] == -1).all() and (res.weights[~fg] == 0).all()
    assert (res.target_scores[~fg] == 0).all()
    assert res.num_fg == int(fg.sum())
    assert torch.isfinite(res.weights).all() and torch.isfinite(res.target_scores).all()
    assert (res.weights[fg] > 0).all()


@pytest.mark.parametrize("name", sorted(ASSIGNERS))
@settings(max_examples=15, deadline=None)
@given(seed=seeds)
def test_batched_equals_per_image_and_is_deterministic(name, seed):
    args = random_scene(seed, B=3)
    assigner = ASSIGNERS[name]()
    batched = assigner(*args)
    again = assigner(*args)
    for field in ("fg_mask", "gt_index", "target_scores", "weights", "ignore_mask"):
        assert torch.equal(getattr(batched, field), getattr(again, field))
    for b in range(3):
        one = [x[b:b + 1] if i not in (3, 4) else x for i, x in enumerate(args)]
        single = assigner(*one)
        expected = batched.image(b)
        for field in ("fg_mask", "gt_index", "target_labels", "target_boxes", "target_scores", "weights"):
            assert torch.allclose(getattr(single, field).float(), getattr(expected, field).float(), atol=1e-6), field


@pytest.mark.parametrize("name", sorted(ASSIGNERS))
def test_zero_gts_gives_all_background(name):
    args = list(random_scene(0))
    args[7] = torch.zeros_like(args[7])
    res = ASSIGNERS[name]()(*args)
    assert res.num_fg == 0 and not res.fg_mask.any() and (res.gt_index == -1).all()
    assert torch.isfinite(res.target_scores).all() and torch.isfinite(res.weights).all()
    empty = list(random_scene(0, M=0))
    assert ASSIGNERS[name]()(*empty).num_fg == 0


@pytest.mark.parametrize("name", ["fss", "tal", "atss"])
@settings(max_examples=25, deadline=None)
@given(seed=seeds)
def test_every_gt_with_a_candidate_gets_a_positive(name, seed):
    """Unless every candidate point is the only positive of another GT (then none can be spared).
    (SimOTA and TAL as their references do not promise this; TAL's ``rescue`` option does.)"""
    args = random_scene(seed, M=8)
    assigner = ASSIGNERS[name](rescue=True)
    res = assigner(*args)
    pairs = assigner.candidates(prepare_inputs(*args))
    B, A = res.fg_mask.shape
    owner = res.gt_index
    counts = {}
    for b, g in zip(*torch.nonzero(res.fg_mask, as_tuple=True)):
        key = (int(b), int(owner[b, g]))
        counts[key] = counts.get(key, 0) + 1
    for b, g in {(int(b), int(g)) for b, g in zip(pairs.b, pairs.g)}:
        if counts.get((b, g), 0) > 0:
            continue
        cand = pairs.a[(pairs.b == b) & (pairs.g == g)]
        for a in cand.tolist():
            o = int(owner[b, a])
            assert o >= 0 and counts[(b, o)] == 1, f"GT {g} of image {b} left without a positive"


def test_maxiou_gives_every_gt_its_best_prior():
    args = random_scene(3, M=4, max_side=30)
    res = ASSIGNERS["maxiou"]()(*args)
    for b in range(2):
        real = torch.nonzero(args[7][b]).flatten().tolist()
        # with well separated GTs no best prior is shared
        assert set(res.gt_index[b][res.fg_mask[b]].tolist()) <= set(real)


# ------------------------------------------------------------------------------------ FSS
@settings(max_examples=25, deadline=None)
@given(seed=seeds, prob=st.sampled_from(["sum", "softmax"]))
def test_fss_rows_of_P_sum_to_one(seed, prob):
    args = random_scene(seed)
    fss = FSSAssigner(prob=prob)
    inp = prepare_inputs(*args)
    pairs = fss.candidates(inp)
    P = fss.steps(inp, pairs)["P"]
    sums = segments.seg_sum(P, pairs.seg, pairs.num_seg)
    has = segments.seg_count(pairs.seg, pairs.num_seg) > 0
    assert torch.allclose(sums[has], torch.ones_like(sums[has]), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, gamma=st.sampled_from([0.5, 1.0, 2.0]))
def test_fss_weights_monotone_mean_one_and_ratio(seed, gamma):
    args = random_scene(seed, M=3)
    fss = FSSAssigner(gamma=gamma, w_max=float("inf"))
    inp = prepare_inputs(*args)
    pairs = fss.candidates(inp)
    st_ = fss.steps(inp, pairs)
    P, w, pos = st_["P"], st_["w"], st_["pos"]
    for s in pairs.seg[pos].unique():
        sel = pos & (pairs.seg == s)
        p, ws = P[sel].double(), w[sel].double()
        assert ws.mean().item() == pytest.approx(1.0, abs=1e-5)              # mean 1 before clamping
        order = torch.argsort(p)
        assert (ws[order].diff() >= -1e-6).all()                             # monotone in P
        ratio = ws[:, None] / ws[None, :]
        expected = (p[:, None] / p[None, :]) ** gamma
        assert torch.allclose(ratio, expected, rtol=1e-4)                    # (P_i / P_j)^gamma


def test_fss_clamp_and_gamma_zero():
    args = random_scene(7, M=5)
    res = FSSAssigner(gamma=0.0)(*args)
    assert torch.equal(res.weights[res.fg_mask], torch.ones(res.num_fg))   # SubOptSel only
    clamped = FSSAssigner(gamma=8.0, w_max=1.5)(*args)
    assert clamped.weights.max() <= 1.5


@settings(max_examples=20, deadline=None)
@given(seed=seeds)
def test_fss_dynamic_k_iou_reproduces_simota_k(seed):
    args = random_scene(seed)
    inp = prepare_inputs(*args)
    fss = FSSAssigner(dynamic_k="iou")
    pairs = fss.candidates(inp)
    steps = fss.steps(inp, pairs)
    for seg in pairs.seg.unique().tolist():       # SimOTA's k over the GT's own candidates
        u = steps["u"][pairs.seg == seg]
        k = max(1, int(u.topk(min(10, u.numel())).values.sum()))
        assert int(steps["k"][seg]) == min(k, u.numel())


@settings(max_examples=20, deadline=None)
@given(seed=seeds, conflict=st.sampled_from(["score", "iou"]))
def test_fss_conflicts_keep_the_best_claim(seed, conflict):
    args = random_scene(seed, M=8, max_side=90)
    fss = FSSAssigner(conflict=conflict, rescue=False)
    inp = prepare_inputs(*args)
    pairs = fss.candidates(inp)
    st_ = fss.steps(inp, pairs)
    prio = st_["r"] if conflict == "score" else st_["u"]
    key = pairs.key
    for k in key[st_["selected"]].unique():
        claims = st_["selected"] & (key == k)
        winner = st_["pos"] & (key == k)
        assert winner.sum() == 1
        assert prio[winner].item() == prio[claims].max().item()


@settings(max_examples=20, deadline=None)
@given(seed=seeds)
def test_fss_prior_level_star_selects_on_the_level_of_i_star_only(seed):
    """prior_level="star" (#35 item 3 b): every selected sample of a GT lies on the pyramid level of its i*, and
    k never exceeds that level's candidates; the default mixes levels on large boxes."""
    args = random_scene(seed, max_side=90)
    inp = prepare_inputs(*args)
    fss = FSSAssigner(prior_level="star")
    pairs = fss.candidates(inp)
    steps = fss.steps(inp, pairs)
    strides = inp.strides[pairs.a]
    for seg in pairs.seg.unique().tolist():
        own = pairs.seg == seg
        star = strides[own][(inp.points[pairs.a][own] == steps["mu"][seg]).all(dim=1)].unique()
        assert star.numel() == 1                              # μ is i*'s point: one stride
        assert (strides[own & steps["selected"]] == star).all()
        assert int(steps["k"][seg]) <= int((strides[own] == star).sum())


def test_fss_prior_level_changes_assignments_only_when_levels_mix():
    args = random_scene(3, B=2, M=8, max_side=90)
    mixed = [FSSAssigner(prior_level=v)(*args) for v in ("all", "star")]
    assert not torch.equal(mixed[0].fg_mask, mixed[1].fg_mask)     # large boxes: candidates on several levels
    one_level = make_points(96, 96, (8,))
    small = list(random_scene(3, B=2, M=8, max_side=20))
    small[3], small[4] = one_level
    A = len(one_level[0])
    small[0], small[1], small[2] = small[0][:, :A], small[1][:, :A], small[2][:, :A]
    same = [FSSAssigner(prior_level=v)(*small) for v in ("all", "star")]
    assert torch.equal(same[0].fg_mask, same[1].fg_mask) and torch.equal(same[0].weights, same[1].weights)


@pytest.mark.parametrize("option", [{"prob": "softmax"}, {"prob": "minmax"}, {"prior_centre": "centroid"},
                                    {"dynamic_k": "iou"}, {"conflict": "iou"}, {"alpha": 0.5, "beta": 2.0},
                                    {"prior_level": "star"}])
def test_fss_options_run(option):
    res = FSSAssigner(**option)(*random_scene(11))
    assert res.num_fg > 0 and torch.isfinite(res.weights).all()


def test_fss_bad_option_is_a_clear_error():
    with pytest.raises(ValueError, match="prob must be one of"):
        FSSAssigner(prob="max")


@pytest.mark.parametrize("name", sorted(ASSIGNERS))
def test_grid_windows_dense_and_chunked_enumeration_agree(name, monkeypatch):
    args = random_scene(5, B=2, M=12)
    assigner = ASSIGNERS[name]()
    if name == "simota":          # dense over (GT chunk × candidate points), no pair enumeration
        one = SimOTAAssigner(chunk_elems=1)(*args)
        full = assigner(*args)
        for field in ("fg_mask", "gt_index", "target_scores"):
            assert torch.equal(getattr(one, field), getattr(full, field)), field
        return
    inp = prepare_inputs(*args)
    assert sparse.grid_levels(inp.points, inp.strides) is not None
    grid_pairs = assigner.candidates(inp)
    grid = assigner(*args)
    monkeypatch.setattr(sparse, "grid_levels", lambda points, strides: None)    # force the dense path
    dense_pairs = assigner.candidates(inp)
    for f in ("b", "g", "a"):
        assert torch.equal(getattr(grid_pairs, f), getattr(dense_pairs, f)), f
    dense = assigner(*args)
    monkeypatch.setattr(sparse, "ENUM_CHUNK_ELEMS", 1)                         # one GT at a time
    chunked = assigner(*args)
    for field in ("fg_mask", "gt_index", "target_scores", "weights", "ignore_mask"):
        assert torch.equal(getattr(grid, field), getattr(dense, field)), field
        assert torch.equal(getattr(grid, field), getattr(chunked, field)), field


@settings(max_examples=30, deadline=None)
@given(seed=seeds, size=st.sampled_from([64, 96, 160]), radius=st.floats(0.5, 5.0))
def test_grid_enumeration_equals_dense_on_random_scenes(seed, size, radius):
    args = random_scene(seed, size=size, max_side=size * 0.8)
    inp = prepare_inputs(*args)
    for cond in (sparse.InBox(), sparse.InBoxOrCentre(radius), sparse.CentreWindow(radius),
                 sparse.PriorOverlaps(radius * 3)):
        real_b, real_g = torch.nonzero(inp.gt_mask, as_tuple=True)
        boxes = inp.gt_boxes[real_b, real_g]
        levels = sparse.grid_levels(inp.points, inp.strides)
        gr, ga = sparse._grid_pairs(boxes, cond, levels, inp.points, inp.strides)
        dr, da = sparse._dense_pairs(boxes, cond, inp.points, inp.strides)
        assert torch.equal(gr, dr) and torch.equal(ga, da), type(cond).__name__


def test_grid_levels_rejects_non_grids():
    pts = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 5.0]])
    assert sparse.grid_levels(pts, torch.full((3,), 8.0)) is None


def test_tiny_gt_gets_its_nearest_point():
    args = list(random_scene(1, B=1, M=1))
    args[6] = torch.tensor([[[40.1, 40.1, 40.3, 40.3]]])   # smaller than any stride, between points
    args[7] = torch.ones(1, 1, dtype=torch.bool)
    for name in ("fss", "simota"):
        res = ASSIGNERS[name]()(*args)
        assert res.num_fg >= 1


def test_build_assigner_rejects_unknown():
    from fss_train.assigners import build_assigner
    with pytest.raises(ValueError, match="unknown assigner"):
        build_assigner("ota")
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['gama'\]"):
        build_assigner("fss", gama=1.0)
    assert build_assigner("fss", gamma=0.0).gamma == 0.0


def test_the_worked_case_of_the_conflict_and_rescue_docstrings():
    """The numbers decide.py's docstrings walk through are what the functions give."""
    from fss_train.assigners.decide import rescue_orphans, resolve_conflicts
    from fss_train.assigners.pairs import Pairs

    pairs = Pairs(torch.zeros(5, dtype=torch.long), torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 2, 2, 3]),
                  1, 2, 4)
    keep = resolve_conflicts(pairs, torch.tensor([True, True, True, True, False]),
                             torch.tensor([0.50, 0.62, 0.71, 0.64, 0.20]))
    assert keep.tolist() == [True, True, True, False, False]
    rank = torch.tensor([0.40, 0.55, 0.71, 0.64, 0.30])
    assert rescue_orphans(pairs, keep, rank).tolist() == [True, True, False, True, False]
    alone = torch.tensor([False, False, True, False, False])        # GT 0 owns point 2 alone: it is not free
    assert rescue_orphans(pairs, alone, rank).tolist() == [False, False, True, False, True]


def test_the_worked_case_of_the_fss_docstring():
    """fss.py's docstring walks one car through steps 1–7 with numbers: they are what FSS().steps gives."""
    from fss_train.assigners import build_assigner
    from fss_train.assigners.base import prepare_inputs

    xs = torch.tensor([100.0, 108.0, 116.0, 124.0, 132.0])
    points = torch.stack([xs, torch.full_like(xs, 112.0)], 1)
    gt = torch.tensor([[[100.0, 100.0, 124.0, 124.0]]])
    pred_boxes = gt[0, 0].repeat(5, 1) + torch.tensor([6.0, 2.0, 0.0, -4.0, -10.0])[:, None]
    scores = torch.tensor([0.30, 0.55, 0.70, 0.60, 0.20])[None, :, None]
    inp = prepare_inputs(scores, torch.ones(1, 5), pred_boxes[None], points, torch.full((5,), 8.0),
                         torch.zeros(1, 1, dtype=torch.long), gt, torch.ones(1, 1, dtype=torch.bool))
    fss = build_assigner("fss")
    pairs = fss.candidates(inp)
    st = fss.steps(inp, pairs)
    assert pairs.a.tolist() == [0, 1, 2, 3]
    for name, want in (("u", [0.391, 0.725, 1.0, 0.532]), ("P", [0.002, 0.111, 0.868, 0.018]),
                       ("G", [0.411, 0.801, 1.0, 0.801]), ("w", [0.0, 0.228, 1.772, 0.0])):
        assert [round(v, 3) for v in st[name].tolist()] == want, name
    assert st["sigma"][0].tolist() == [12.0, 12.0] and st["k"].tolist() == [2]
    assert st["pos"].tolist() == [False, True, True, False]


def test_the_worked_case_of_the_segment_ranking_docstring():
    from fss_train.assigners.segments import seg_rank, seg_topk_sum

    x = torch.tensor([0.9, 0.2, 0.9, 0.5, 0.7, 0.1])
    seg = torch.tensor([0, 0, 0, 0, 1, 1])
    assert seg_rank(x, seg, 3).tolist() == [0, 3, 1, 2, 0, 1]
    assert [round(v, 4) for v in seg_topk_sum(x, seg, 3, 2).tolist()] == [1.8, 0.8, 0.0]

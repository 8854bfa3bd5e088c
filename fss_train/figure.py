"""`fss assign`: the paper's Fig. 3 for real — probability matrix, Gaussian prior, dynamic k,
selected points and weights for a few ground truths, FSS beside a baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fss_core.checkpoint import load_model
from fss_core.fileio import save_figure
from fss_core.imageio import read_image
from fss_core.nn import build_model, decode, load_card
from fss_core.preprocess import letterbox, to_tensor
from fss_train.assigners import ASSIGNERS, FSSAssigner
from fss_train.assigners.base import prepare_inputs
from fss_train.data.formats import read_labels_for_image


def predictions_for(image_path: str | Path, model_source: str, labels: str | Path, imgsz: int | None, seed: int = 0):
    """Run the model on one letterboxed image; GTs mapped into the letterboxed frame."""
    image = read_image(image_path)
    h, w = image.shape[:2]
    boxes, names, problems = read_labels_for_image(labels, image_path, (w, h))
    if len(names) == 0:
        raise ValueError(f"{labels}: no usable objects for {Path(image_path).name}")
    if str(model_source).endswith((".pt", ".pth")):
        model, ckpt = load_model(model_source)
        if model.card.task == "obb":
            raise ValueError(f"{model_source}: an oriented (task obb) model; `fss assign` draws the assignment of "
                             "horizontal models only")
        classes = ckpt["class_names"]
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise ValueError(f"{labels}: classes {unknown} are not among the checkpoint's {classes}")
        size = imgsz or ckpt["input_size"][0]
        assigner_cfg = ckpt.get("assigner") or {}
    else:
        classes = sorted(set(names))
        torch.manual_seed(seed)
        model = build_model(load_card(model_source).with_classes(len(classes))).eval()
        size = imgsz or 640
        assigner_cfg = {}
    canvas, scale, _ = letterbox(image, (size, size))
    with torch.no_grad():
        raw = model.eval()(to_tensor([canvas]))
    points, strides = model.points(size, size)
    pred_boxes, obj, cls = decode(raw, points, strides)
    gt_boxes = torch.from_numpy(boxes * scale)[None]
    gt_labels = torch.tensor([[classes.index(n) for n in names]])
    args = (cls, obj, pred_boxes, points, strides, gt_labels, gt_boxes, torch.ones_like(gt_labels, dtype=torch.bool))
    return canvas, args, classes, assigner_cfg, problems


def choose_gts(gt_boxes: torch.Tensor, count: int) -> list[int]:
    """GTs spread over the size range (small, medium, large…), so the size-dependent prior shows."""
    area = ((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])).numpy()
    order = np.argsort(area)
    picks = np.linspace(0, len(order) - 1, num=min(count, len(order))).round().astype(int)
    return [int(order[i]) for i in dict.fromkeys(picks)]


def assignment_figure(image_path, model_source: str, labels, out_png, assigner: str = "fss", vs: str = "simota",
                      imgsz: int | None = None, num_gts: int = 3, seed: int = 0) -> dict:
    """One row per chosen GT, four panels: P, the Gaussian prior G, FSS's positives with their weights, and the
    ``vs`` assigner's positives on the same predictions. Returns per GT its k, candidates and positives."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if assigner != "fss":
        raise ValueError("the figure explains FSS: use --assigner fss and pick the baseline with --vs")
    if vs not in ASSIGNERS:
        raise ValueError(f"--vs must be one of {sorted(ASSIGNERS)}, got {vs!r}")
    canvas, args, classes, assigner_cfg, _ = predictions_for(image_path, model_source, labels, imgsz, seed)
    params = assigner_cfg.get("params", {}) if assigner_cfg.get("name") == "fss" else {}
    fss = FSSAssigner(**params)
    inp = prepare_inputs(*args)
    pairs = fss.candidates(inp)
    st = fss.steps(inp, pairs)
    base = ASSIGNERS[vs]()(*args)
    rgb = canvas[..., ::-1]
    chosen = choose_gts(inp.gt_boxes[0], num_gts)
    fig, axes = plt.subplots(len(chosen), 4, figsize=(16, 4.2 * len(chosen)), squeeze=False)
    summary: dict = {"gts": []}
    for row, g in enumerate(chosen):
        view = _GtView(inp, pairs, st, base, g, rgb.shape)
        for col in range(4):
            _draw_panel(axes[row][col], fig, rgb, view, col, vs, classes)
        summary["gts"].append({"gt": g, "k": view.k, "candidates": int(view.sel.sum()),
                               "fss_positives": int(view.pos.sum()), f"{vs}_positives": len(view.base_pts),
                               "weights": [round(float(x), 3) for x in view.w[view.pos]]})
    fig.suptitle(f"FSS vs {vs} on {Path(image_path).name} (model: {Path(str(model_source)).name})", fontsize=12)
    fig.tight_layout()
    out_png = save_figure(fig, out_png)
    summary["png"] = str(out_png)
    return summary


class _GtView:
    """What one row of the figure shows of GT ``g``: its candidates, P, G, positives and weights, the level of its
    most probable point, and the crop around box and candidates."""

    def __init__(self, inp, pairs, st: dict, base, g: int, shape: tuple[int, ...]):
        self.g, self.sel = g, pairs.g == g
        self.a_idx = pairs.a[self.sel]
        self.P, self.G, self.pos, self.w = st["P"][self.sel], st["G"][self.sel], st["pos"][self.sel], st["w"][self.sel]
        self.best = int(torch.argmax(self.P))
        self.points, self.best_point = inp.points, inp.points[self.a_idx[self.best]]
        self.stride = float(inp.strides[self.a_idx[self.best]])
        self.box = inp.gt_boxes[0, g].tolist()
        self.label = int(inp.gt_labels[0, g])
        self.cand_pts = inp.points[self.a_idx]
        self.on_level = inp.strides[self.a_idx] == self.stride
        self.k = int(st["k"][g])
        self.mu = st["mu"][pairs.seg[self.sel][0]].tolist()
        self.sigma = st["sigma"][self.sel][self.best].tolist()
        self.base_pts = torch.nonzero(base.fg_mask[0] & (base.gt_index[0] == g)).flatten()
        pad, box, c = 2 * self.stride, self.box, self.cand_pts
        self.crop = (max(0.0, min(box[0], float(c[:, 0].min())) - pad),
                     max(0.0, min(box[1], float(c[:, 1].min())) - pad),
                     min(shape[1], max(box[2], float(c[:, 0].max())) + pad),
                     min(shape[0], max(box[3], float(c[:, 1].max())) + pad))


def _draw_panel(ax, fig, rgb, v: _GtView, col: int, vs: str, classes: list[str]) -> None:
    """Panel ``col`` of a row: 0 P, 1 the prior G (its 1-σ ellipse), 2 FSS's positives and weights, 3 ``vs``'s."""
    from matplotlib.patches import Ellipse, Rectangle

    box = v.box
    ax.imshow(rgb, extent=(0, rgb.shape[1], rgb.shape[0], 0))
    ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, ec="lime", lw=2))
    if col in (0, 1):
        xy = v.cand_pts[v.on_level].numpy()
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=(v.P if col == 0 else v.G)[v.on_level].numpy(), cmap="inferno",
                        s=(v.stride * 2.2) ** 2 / 4, marker="s", alpha=0.8, vmin=0)
        fig.colorbar(sc, ax=ax, fraction=0.046)
        ax.plot(*v.best_point.tolist(), marker="*", color="cyan", ms=14)
        if col == 1:
            ax.add_patch(Ellipse(v.mu, 2 * v.sigma[0], 2 * v.sigma[1], fill=False, ec="cyan", ls="--", lw=1.5))
    elif col == 2:
        _draw_weights(ax, v.cand_pts[v.pos].numpy(), v.w[v.pos].numpy())
    else:
        xy = v.points[v.base_pts].numpy()
        ax.scatter(xy[:, 0], xy[:, 1], s=60, c="deepskyblue", edgecolors="white")
    x0, y0, x1, y1 = v.crop
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.set_xticks([])
    ax.set_yticks([])
    size = f"{box[2] - box[0]:.0f}×{box[3] - box[1]:.0f} px"
    titles = [f"P: probability of being optimal\nGT {v.g} ({classes[v.label]}, {size})",
              f"Gaussian prior G\nstride {v.stride:.0f}, dynamic k = {v.k} of {int(v.sel.sum())} candidates",
              f"FSS positives, weights\n{int(v.pos.sum())} positives", f"{vs} positives\n{len(v.base_pts)} positives"]
    ax.set_title(titles[col], fontsize=10)


def _draw_weights(ax, xy, weights) -> None:
    """FSS's positives sized by weight, each labelled; neighbouring positives sit one stride apart, so labels take
    turns around their points, on a dark box, and adjacent weights do not print over each other."""
    ax.scatter(xy[:, 0], xy[:, 1], s=60 * weights, c="red", edgecolors="white")
    offsets = ((5, 5), (5, -12), (-27, 5), (-27, -12))
    for i, ((px, py), wv) in enumerate(zip(xy, weights)):
        ax.annotate(f"{wv:.2f}", (px, py), color="yellow", fontsize=7, xytext=offsets[i % 4],
                    textcoords="offset points",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "black", "alpha": 0.6, "lw": 0})

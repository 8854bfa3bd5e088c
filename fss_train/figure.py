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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse, Rectangle

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
    points, strides = inp.points, inp.strides
    rgb = canvas[..., ::-1]
    chosen = choose_gts(inp.gt_boxes[0], num_gts)
    fig, axes = plt.subplots(len(chosen), 4, figsize=(16, 4.2 * len(chosen)), squeeze=False)
    summary = {"gts": []}
    for row, g in enumerate(chosen):
        sel = pairs.g == g
        a_idx = pairs.a[sel]
        P, G, pos, w = st["P"][sel], st["G"][sel], st["pos"][sel], st["w"][sel]
        best = int(torch.argmax(P))
        level_stride = float(strides[a_idx[best]])
        box = inp.gt_boxes[0, g].tolist()
        cand_pts = points[a_idx]
        pad = 2 * level_stride
        x0 = max(0.0, min(box[0], float(cand_pts[:, 0].min())) - pad)
        y0 = max(0.0, min(box[1], float(cand_pts[:, 1].min())) - pad)
        x1 = min(rgb.shape[1], max(box[2], float(cand_pts[:, 0].max())) + pad)
        y1 = min(rgb.shape[0], max(box[3], float(cand_pts[:, 1].max())) + pad)
        on_level = strides[a_idx] == level_stride
        k = int(st["k"][g])
        base_pts = torch.nonzero(base.fg_mask[0] & (base.gt_index[0] == g)).flatten()
        panels = [("P: probability of being optimal", P), ("Gaussian prior G", G), ("FSS positives, weights", None),
                  (f"{vs} positives", None)]
        for col, (title, values) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(rgb, extent=(0, rgb.shape[1], rgb.shape[0], 0))
            ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, ec="lime", lw=2))
            if values is not None:
                v = values[on_level].numpy()
                xy = cand_pts[on_level].numpy()
                sc = ax.scatter(xy[:, 0], xy[:, 1], c=v, cmap="inferno", s=(level_stride * 2.2) ** 2 / 4,
                                marker="s", alpha=0.8, vmin=0)
                fig.colorbar(sc, ax=ax, fraction=0.046)
                ax.plot(*points[a_idx[best]].tolist(), marker="*", color="cyan", ms=14)
                if col == 1:
                    mu = st["mu"][pairs.seg[sel][0]].tolist()
                    sig = st["sigma"][sel][best].tolist()
                    ax.add_patch(Ellipse(mu, 2 * sig[0], 2 * sig[1], fill=False, ec="cyan", ls="--", lw=1.5))
            elif col == 2:
                xy = cand_pts[pos].numpy()
                ww = w[pos].numpy()
                ax.scatter(xy[:, 0], xy[:, 1], s=60 * ww, c="red", edgecolors="white")
                # neighbouring positives sit one stride apart: labels take turns around their points, on a
                # dark box, so adjacent weights do not print over each other
                offsets = ((5, 5), (5, -12), (-27, 5), (-27, -12))
                for i, ((px, py), wv) in enumerate(zip(xy, ww)):
                    ax.annotate(f"{wv:.2f}", (px, py), color="yellow", fontsize=7, xytext=offsets[i % 4],
                                textcoords="offset points",
                                bbox={"boxstyle": "round,pad=0.1", "fc": "black", "alpha": 0.6, "lw": 0})
            else:
                xy = points[base_pts].numpy()
                ax.scatter(xy[:, 0], xy[:, 1], s=60, c="deepskyblue", edgecolors="white")
            ax.set_xlim(x0, x1)
            ax.set_ylim(y1, y0)
            ax.set_xticks([])
            ax.set_yticks([])
            extra = ""
            if col == 0:
                extra = f"\nGT {g} ({classes[int(inp.gt_labels[0, g])]}, {box[2]-box[0]:.0f}×{box[3]-box[1]:.0f} px)"
            elif col == 1:
                extra = f"\nstride {level_stride:.0f}, dynamic k = {k} of {int(sel.sum())} candidates"
            elif col == 2:
                extra = f"\n{int(pos.sum())} positives"
            else:
                extra = f"\n{len(base_pts)} positives"
            ax.set_title(title + extra, fontsize=10)
        summary["gts"].append({"gt": g, "k": k, "candidates": int(sel.sum()), "fss_positives": int(pos.sum()),
                               f"{vs}_positives": len(base_pts), "weights": [round(float(x), 3) for x in w[pos]]})
    fig.suptitle(f"FSS vs {vs} on {Path(image_path).name} (model: {Path(str(model_source)).name})", fontsize=12)
    fig.tight_layout()
    out_png = save_figure(fig, out_png)
    summary["png"] = str(out_png)
    return summary

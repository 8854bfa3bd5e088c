"""The evaluation's pictures, as Ultralytics' val draws them: precision-recall curves per class (IoU 0.5) and a
confusion matrix with a background row and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fss_core.defaults import CONF, IOU
from fss_core.fileio import save_figure


def pr_curve_png(path: str | Path, recall: list[float], pr: dict[str, list[float]], ap50: dict[str, float]) -> Path:
    """Precision against recall at IoU 0.5, one line per class with its AP50 in the legend, the mean in bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5))
    many = len(pr) > 20                                       # a legend of 80 classes hides the plot
    for name, precision in pr.items():
        ax.plot(recall, precision, lw=1, alpha=0.6 if many else 0.9,
                label=None if many else f"{name} {ap50.get(name, 0):.3f}")
    if pr:
        mean = np.mean(np.array(list(pr.values())), axis=0)
        valid = [v for v in ap50.values() if v >= 0]
        ax.plot(recall, mean, lw=3, color="black", label=f"all classes {np.mean(valid) if valid else 0:.3f} AP50")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title="Precision-recall (IoU 0.5)")
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def confusion_png(path: str | Path, matrix: np.ndarray, names: list[str], conf: float, iou: float) -> Path:
    """Counts normalised per true class (column), as Ultralytics; the last row/column is background."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [*names, "background"]
    norm = matrix / np.maximum(matrix.sum(0, keepdims=True), 1)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(min(20, max(5, 0.45 * n + 3)), min(19, max(4, 0.45 * n + 2))))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(xlabel="true", ylabel="predicted",
           title=f"Confusion matrix (score ≥ {conf}, IoU ≥ {iou}; columns sum to 1)")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def write_val_plots(out: str | Path, gt: dict, preds: list[dict], details: dict, conf: float = CONF,
                    iou: float = IOU) -> None:
    """PR_curve.png (from ``details`` of metrics.coco_eval_details), confusion_matrix.png and .json into ``out``
    (the eval folder, or a training run's folder after its last epoch)."""
    import json

    from fss_core.fileio import atomic_write
    from fss_train.metrics import confusion_matrix

    out = Path(out)
    if details["pr"]:
        pr_curve_png(out / "PR_curve.png", details["recall"], details["pr"],
                     {k: v["AP50"] for k, v in details["per_class"].items()})
    matrix, names = confusion_matrix(gt, preds, conf, iou)
    confusion_png(out / "confusion_matrix.png", matrix, names, conf, iou)
    atomic_write(out / "confusion_matrix.json", json.dumps({"classes": [*names, "background"], "conf": conf,
                                                             "iou": iou, "rows_predicted_columns_true":
                                                             matrix.tolist()}))

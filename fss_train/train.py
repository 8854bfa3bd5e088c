"""The training run: data, model, assigner, optimiser, EMA, epochs, checkpoints, logs, plots.

Single process, or one process per rank under torchrun (DDP: gloo on CPU, NCCL on CUDA);
only rank 0 writes. ``last.pt`` is written atomically after every epoch (and on Ctrl-C), so a
killed run resumes with ``--resume``; ``--resume --epochs MORE`` extends a finished run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from fss_core.checkpoint import (
    CheckpointError,
    init_from_checkpoint,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from fss_core.fileio import atomic_write, save_figure
from fss_core.foreign_weights import input_conventions, start_checkpoint
from fss_core.launch import local_rank, rank_and_world
from fss_core.nn import build_model, load_card
from fss_train.assigners import build_assigner
from fss_train.config import TrainConfig
from fss_train.data import read_dataset, read_val_split
from fss_train.data.check import input_scale_advice
from fss_train.data.loader import DetectionDataset, make_loader
from fss_train.data.transforms import AugmentConfig
from fss_train.engine import frozen_parts, seed_everything, train_one_epoch
from fss_train.evaluation import evaluate, recalibrate_bn
from fss_train.metrics import coco_gt_from_dataset, detection_cap_advice
from fss_train.optim import LRSchedule, ModelEMA, param_groups

CSV_FIELDS = ["epoch", "loss", "cls", "box", "obj", "pos_per_gt", "rank_consistency", "images_per_s", "lr",
              "AP", "AP50", "AP75", "APs", "APm", "APl", "mAP50_dota", "fitness", "seconds"]
# config keys that must match when resuming (the rest, e.g. epochs, may change)
RESUME_FIXED = ("data", "model", "assigner", "task", "assigner_params", "imgsz", "batch")


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def setup_distributed(device_name: str) -> tuple[torch.device, int, int]:
    """Join the process group when started by torchrun (also with one process, so ``torchrun
    --nproc_per_node 1`` exercises the NCCL/gloo path of a multi-GPU run); returns (device, rank, world)."""
    world = rank_and_world()[1]
    launched = "TORCHELASTIC_RUN_ID" in os.environ and "MASTER_ADDR" in os.environ
    if (world > 1 or launched) and not dist.is_initialized():
        backend = "nccl" if device_name.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device_name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but torch.cuda.is_available() is False")
        local = local_rank()
        index = local if world > 1 else (int(device_name.split(":")[1]) if ":" in device_name else 0)
        torch.cuda.set_device(index)
        return torch.device("cuda", index), rank, world
    return torch.device("cpu"), rank, world


class Run:
    """Everything one training run holds; ``fit()`` reads top to bottom."""

    def __init__(self, cfg: TrainConfig, out: str | Path, resume: bool = False, console=None, log=print,
                 exist_ok: bool = False):
        self.cfg, self.out, self.console, self.log = cfg, Path(out), console, log
        self._claim_output(resume, exist_ok)
        self.device, self.rank, self.world = setup_distributed(cfg.device)
        if cfg.batch % self.world:
            raise ValueError(f"batch {cfg.batch} is not divisible by {self.world} processes")
        seed_everything(cfg.seed + self.rank)
        self._build_data()
        self._build_model(resume)
        self._build_optimisation()
        self.start_epoch, self.best, self.rows = 0, float("-inf"), []
        if resume:
            self._resume()
        self._wrap_distributed()
        self._build_loaders()
        if is_main():
            for line in self.summary():
                log(line)
        self.scaler = torch.amp.GradScaler("cuda") if (cfg.amp and self.device.type == "cuda") else None

    # ------------------------------------------------------------------------------ set-up, in order
    def _claim_output(self, resume: bool, exist_ok: bool) -> None:
        """An earlier run in ``out`` is continued (resume), replaced (exist_ok) or refused."""
        if not resume and not exist_ok and (self.out / "last.pt").is_file():
            raise FileExistsError(f"{self.out} already holds a run (last.pt); pass --resume to continue it, "
                                  "--exist-ok to start over in it (its last.pt, best.pt and results are replaced), "
                                  "or choose another --out")
        if exist_ok and not resume and is_main():
            for name in ("last.pt", "best.pt", "results.csv", "results.json", "results.png", "PR_curve.png",
                         "confusion_matrix.png", "confusion_matrix.json"):
                (self.out / name).unlink(missing_ok=True)      # nothing of the earlier run survives as stale

    def _build_data(self) -> None:
        """The training and validation datasets, their problems and advice logged, and what cannot train refused."""
        cfg, log = self.cfg, self.log
        self.train_ds = read_dataset(cfg.data, "train")
        self.val_ds = self._val_dataset()
        if is_main():
            for p in (self.train_ds.problems + self.val_ds.problems)[:20]:
                log(f"warning: {p}")
            if advice := input_scale_advice(self.train_ds, cfg.imgsz, str(cfg.data)):
                log(f"warning: {advice}")
            if advice := detection_cap_advice(coco_gt_from_dataset(self.val_ds), cfg.max_det, "--set max_det={n}"):
                log(f"warning: validation: {advice}")
        if not self.train_ds.records:
            raise ValueError(f"{cfg.data}: no training images")
        self.classes = self.train_ds.classes
        if self.val_ds.records and not set(self.val_ds.classes) & set(self.classes):   # best.pt chosen on AP 0
            raise ValueError(f"{cfg.val or cfg.data}: the validation set shares no class name with the training "
                             f"data ({', '.join(self.val_ds.classes[:5])} vs {', '.join(self.classes[:5])})")
        if self.train_ds.num_objects == 0 and is_main():
            log(f"warning: {cfg.data}: the training images hold no labelled object (every image is background); "
                "check the label files")

    def _build_model(self, resume: bool) -> None:
        """The network of the card (for these classes), started from ``--weights``, channels-last, frozen parts."""
        cfg, log = self.cfg, self.log
        self.card = load_card(cfg.model).with_classes(len(self.classes)).with_task(cfg.task)
        start = start_checkpoint(cfg.weights, self.card.name) if cfg.weights and not resume else None
        if start is not None:                   # the network takes the input convention its weights were made for
            self.card = dataclasses.replace(self.card, **input_conventions(start))
        self.model = build_model(self.card)
        self.init = None
        if start is not None:
            self.init = init_from_checkpoint(self.model, cfg.weights, self.classes, cfg.weights_parts, start)
            log(f"initialised from {cfg.weights} ({cfg.weights_parts}): {self.init['loaded']} tensors loaded, "
                f"{self.init['skipped']} left as initialised; class head {self.init['class_head']}"
                + (f"; box head: {self.init['box_head']}" if "box_head" in self.init else ""))
        # channels-last: the convolutions of a training step run 1.3x faster on this CPU (oneDNN) and use the
        # tensor-core layout on CUDA; checkpoints and exports are layout-free (state_dict values)
        self.model = self.model.to(self.device, memory_format=torch.channels_last)
        self._freeze(cfg.freeze)

    def _build_optimisation(self) -> None:
        """The assigner (and its loss recipe), SGD over the parameter groups, the EMA."""
        cfg, log = self.cfg, self.log
        self.assigner = build_assigner(cfg.assigner, **cfg.assigner_params)
        log(f"assigner {cfg.assigner}: " + ", ".join(f"{k}={v}" for k, v in self.assigner.params().items()))
        self.recipe = self.assigner.loss_recipe
        self.optimizer = torch.optim.SGD(param_groups(self.model, cfg.weight_decay), lr=cfg.lr,
                                         momentum=cfg.momentum, nesterov=True)
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau)

    def _wrap_distributed(self) -> None:
        """Under torchrun: SyncBatchNorm on CUDA (if asked) and DDP; ``self.net`` is what the step calls."""
        cfg, log = self.cfg, self.log
        distributed = dist.is_initialized()
        if distributed:
            log(f"joined the process group: backend {dist.get_backend()}, rank {self.rank} of {self.world}")
        if distributed and self.device.type == "cuda" and cfg.sync_bn:
            # keeps the same Parameter objects, so the optimiser (and resumed state) stays valid
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.net = self.model
        if distributed:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _build_loaders(self) -> None:
        """The augmented training loader, the validation loader, the un-augmented BN loader, and the schedule."""
        cfg = self.cfg
        aug = AugmentConfig(cfg.mosaic, cfg.scale, cfg.translate, cfg.hsv_h, cfg.hsv_s, cfg.hsv_v, cfg.fliplr,
                            cfg.flipud, degrees=cfg.degrees, rot90=cfg.rot90)
        self.train_data = DetectionDataset(self.train_ds, cfg.imgsz, augment=True, cfg=aug, seed=cfg.seed,
                                           oriented=cfg.task == "obb", ignore_from=cfg.ignore_from)
        self.train_loader = make_loader(self.train_data, cfg.batch // self.world, shuffle=True, workers=cfg.workers,
                                        distributed=self.world > 1, seed=cfg.seed, drop_last=False)
        self.val_loader = make_loader(DetectionDataset(self.val_ds, cfg.imgsz), cfg.batch // self.world,
                                      shuffle=False, workers=cfg.workers)
        # un-augmented training images for precise BN (the statistics inference will see)
        self.bn_loader = make_loader(DetectionDataset(self.train_ds, cfg.imgsz), cfg.batch // self.world,
                                     shuffle=True, workers=0, seed=cfg.seed)
        if cfg.cache == "ram":
            self._cache_images()
        self.schedule = LRSchedule(cfg.lr, len(self.train_loader), cfg.epochs, cfg)

    def _val_dataset(self):
        cfg = self.cfg
        return read_dataset(cfg.val, "val") if cfg.val else read_val_split(cfg.data)

    # ------------------------------------------------------------------------------ checkpoints
    def _freeze(self, what: str) -> None:
        """Freeze the backbone (and neck): no gradient, and their BatchNorms keep their statistics."""
        parts = frozen_parts(self.model, what)
        for part in parts:
            for p in part.parameters():
                p.requires_grad_(False)
        self.frozen = parts
        if parts:
            n = sum(p.numel() for part in parts for p in part.parameters())
            self.log(f"frozen: {what} ({n:,} parameters)")

    def _cache_images(self) -> None:
        """cache=ram: decode the training and validation images once, before any worker forks; allowed at most
        half of the memory available now."""
        t0 = time.perf_counter()
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        train, val = self.train_data, self.val_loader.dataset
        if train.cache_images(avail // 2):
            self.bn_loader.dataset.cache_images(0, shared=train)
            val.cache_images(avail // 2 - sum(im.nbytes for im in train.cache if im is not None), shared=train)
        self.log(f"cache=ram: {sum(d.cache is not None for d in (train, val))} of 2 datasets decoded into memory in "
            f"{time.perf_counter() - t0:.1f} s")

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            raise CheckpointError(f"{path}: nothing to resume (no last.pt in {self.out})")
        ckpt = load_checkpoint(path)
        old = ckpt.get("train_config", {})
        changed = [k for k in RESUME_FIXED if k in old and old[k] != getattr(self.cfg, k)]
        if changed:
            raise ValueError(f"cannot resume {path}: {', '.join(changed)} differ from the original run "
                             f"({', '.join(f'{k}={old[k]!r}' for k in changed)})")
        self.model.load_state_dict(ckpt["weights_raw"])
        if ckpt.get("weights_ema") is not None:
            self.ema.ema.load_state_dict(ckpt["weights_ema"])
        if ckpt.get("optimizer"):
            self.optimizer.load_state_dict(ckpt["optimizer"])
        sched = ckpt.get("scheduler") or {}
        self.ema.updates = int(sched.get("ema_updates", 0))
        self.best = float(sched.get("best_fitness", float("-inf")))
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.rows = list(sched.get("rows", []))
        self.init = old.get("init")
        self.log(f"resuming {path} after epoch {self.start_epoch} of {self.cfg.epochs}")

    def checkpoint(self, epoch: int, metrics: dict) -> dict:
        return make_checkpoint(
            self.model, self.classes, ema_state=self.ema.ema.state_dict(),
            assigner={"name": self.cfg.assigner, "params": self.assigner.params()},
            train_config=self.cfg.to_dict() | ({"init": self.init} if self.init else {}),
            optimizer=self.optimizer.state_dict(),
            scheduler={"ema_updates": self.ema.updates, "best_fitness": self.best, "rows": self.rows},
            epoch=epoch, metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            input_size=(self.cfg.imgsz, self.cfg.imgsz))

    def summary(self) -> list[str]:
        """What is about to run, said once at the start: data, classes, model, device, schedule, where it goes."""
        cfg = self.cfg
        names = ", ".join(self.classes[:8]) + (f", … ({len(self.classes)})" if len(self.classes) > 8 else "")
        params = sum(p.numel() for p in self.model.parameters())
        if self.device.type == "cuda":
            where = f"{torch.cuda.get_device_name(self.device)} ({self.device})"
        else:
            where = f"CPU, {torch.get_num_threads()} threads"
        procs = f" × {self.world} processes" if self.world > 1 else ""
        return [f"data: {cfg.data} — {len(self.train_ds.records)} images, {self.train_ds.num_objects} objects; "
                f"val: {self.val_ds.source or cfg.val or cfg.data} — {len(self.val_ds.records)} images",
                f"classes ({len(self.classes)}): {names}",
                f"model: {cfg.model}, {params / 1e6:.2f} M parameters, {cfg.imgsz} px; assigner {cfg.assigner}",
                f"device: {where}{procs}; batch {cfg.batch}, {len(self.train_loader)} steps × {cfg.epochs} epochs"
                f"{f' from epoch {self.start_epoch + 1}' if self.start_epoch else ''}"
                f"{f' (stops early after {cfg.patience} epochs without a better fitness)' if cfg.patience else ''}"
                f" -> {self.out}"]

    # ------------------------------------------------------------------------------ the run
    def fit(self, progress=None) -> dict:
        cfg = self.cfg
        if is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        steps = len(self.train_loader)
        no_mosaic_from = cfg.epochs - min(cfg.no_mosaic_epochs, cfg.epochs // 4)
        metrics: dict = {}
        epoch = self.start_epoch - 1
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                self.train_data.set_epoch(epoch)
                self.train_data.mosaic_enabled = epoch < no_mosaic_from
                if hasattr(self.train_loader.sampler, "set_epoch"):
                    self.train_loader.sampler.set_epoch(epoch)
                task = progress.start_epoch(epoch, cfg.epochs, steps) if progress and is_main() else None
                on_step = (lambda i, s, t=task: progress.step(t, i, s)) if task is not None else None
                train = train_one_epoch(self.net, self.train_loader, self.assigner, self.optimizer, self.schedule,
                                        self.ema, epoch, cfg, self.device, self.recipe, self.scaler,
                                        on_step=on_step, start_step=epoch * steps)
                metrics = {}
                last = epoch == cfg.epochs - 1
                stalled_since = None              # the best epoch, when this one ends the run early (patience)
                if is_main() and ((epoch + 1) % cfg.eval_interval == 0 or last):
                    recalibrate_bn(self.ema.ema, self.bn_loader, cfg.precise_bn, self.device)
                    metrics = evaluate(self.ema.ema, self.val_loader, self.val_ds, self.device, cfg, plots_to=self.out,
                                       plot_if=lambda m, e=epoch, z=last: z or self._stalled_since(e, m) is not None)
                    stalled_since = None if last else self._stalled_since(epoch, metrics)
                if dist.is_initialized():
                    dist.barrier()
                if is_main():
                    self._log_epoch(epoch, train, metrics)
                    if progress:
                        progress.end_epoch(task, self.rows[-1])
                if not last and self._stop_early(epoch, stalled_since):
                    break
        except KeyboardInterrupt:
            if is_main():
                save_checkpoint(self.checkpoint(epoch, metrics), self.out / "last.pt")
                self.log(f"interrupted: {self.out / 'last.pt'} holds the weights; resume with --resume")
            raise
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        return self.rows[-1] if self.rows else {}

    def _stalled_since(self, epoch: int, metrics: dict) -> int | None:
        """The best epoch (the first to reach the best fitness, as best.pt) when the fitness has not improved for
        ``patience`` epochs, counting this epoch's ``metrics`` (not logged yet); else None."""
        fitness = metrics.get("fitness")
        if not self.cfg.patience or fitness is None or fitness > self.best:
            return None
        best = next((r["epoch"] for r in self.rows if r["fitness"] == self.best), epoch + 1)
        return best if epoch + 1 - best >= self.cfg.patience else None

    def _stop_early(self, epoch: int, stalled_since: int | None) -> bool:
        """Rank 0's early-stopping decision (its evaluation already made the plots from this epoch's model, as after
        a last epoch), shared with every rank."""
        stop = stalled_since is not None
        if stop:
            self.log(f"stopping early: the fitness has not improved for {epoch + 1 - stalled_since} epochs "
                     f"(patience {self.cfg.patience}; best epoch {stalled_since}); to go on: --resume --set patience=0")
        if dist.is_initialized():
            flag = torch.tensor([int(stop)], device=self.device if dist.get_backend() == "nccl" else "cpu")
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    def _log_epoch(self, epoch: int, train: dict, metrics: dict) -> None:
        row = {"epoch": epoch + 1, **train, "lr": self.optimizer.param_groups[0]["lr"], **metrics}
        self.rows.append({k: row.get(k, float("nan")) for k in CSV_FIELDS})
        fitness = metrics.get("fitness")
        improved = fitness is not None and fitness > self.best
        if improved:
            self.best = fitness
        ckpt = self.checkpoint(epoch, metrics)
        save_checkpoint(ckpt, self.out / "last.pt")
        if improved:
            save_checkpoint(ckpt, self.out / "best.pt")
        write_results(self.out, self.rows, plot=bool(metrics) or epoch + 1 == self.cfg.epochs)


def write_results(out: Path, rows: list[dict], plot: bool = True) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(out / "results.csv", buf.getvalue())
    if plot:
        plot_results(out / "results.png", rows)
    atomic_write(out / "results.json", json.dumps(rows, indent=1))


def plot_results(path: Path, rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    panels = [("losses", ["loss", "cls", "box", "obj"]), ("COCO metrics (EMA)", ["AP", "AP50", "APs"]),
              ("positives per GT", ["pos_per_gt"]), ("rank consistency cls↔IoU (Spearman)", ["rank_consistency"])]
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    for ax, (title, keys) in zip(axes, panels):
        for k in keys:
            ax.plot(epochs, [r.get(k, float("nan")) for r in rows], marker="o", ms=3, label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
